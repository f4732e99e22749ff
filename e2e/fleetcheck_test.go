//go:build e2e

package e2e

// End-to-end proof of issue 11 (the fleet check): one real Vault server with the engine, and three fleets
// of three nodes, each kind on its own keyring: Go servers with client.Source, nginx with the Lua module fed
// by Vault Agent, HAProxy fed by Vault Agent and the push command. A fleet check per keyring runs in
// continuous mode with a token of the shipped policy (bootstrap/policies/fleetcheck.hcl.tmpl).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/fleetcheck"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// fcInterval is the continuous mode's longest gap between rounds in these tests (it also runs at the
// schedule's instants).
const fcInterval = 2 * time.Second

// fcFleet is one kind's three nodes and how to cut node 2 off Vault and bring it back (nil: the run
// skips the cut).
type fcFleet struct {
	kind, keyring, format string
	addrs                 []string
	cutOff, restore       func(t *testing.T)
	// nodeKind is the fleetcheck.Node Kind of every node ("": the format's default); unnamed checks
	// crypto/tls tickets without a key name (Caddy); previousKeys is Config.PreviousKeys.
	nodeKind     string
	unnamed      bool
	previousKeys int
}

// fcKeyring creates a fleet's keyring on s.
type fcKeyring func(t *testing.T, s *vaulttest.Server, name string)

// fcRun says how runFleetCheck runs a fleet: TestFleetCheck's defaults, or TestFleetCheckProductionJitter's.
type fcRun struct {
	// jitterScale is the engine's TICKETKEYS_TEST_TTL_JITTER_SCALE (Config.TestJitterScale); 0: a shipped engine.
	jitterScale int
	// rotations before the cut (the cut phase adds two more activations, the purge one).
	rotations int
	// waitMatrix waits, after the node is named not ready, for the activation of the key it lacks and its
	// matrix failure before restoring it.
	waitMatrix bool
	// allRounds fails the test for any failure of a node other than the cut one in any round, and for
	// any failure of the cut node outside the cut (from the cut to the first green round after the restore).
	allRounds bool
	// period is the keyrings' rotation_period (the waits are counted in periods).
	period time.Duration
	// reports, if set, receives every report of the check when the run ends.
	reports func([]*fleetcheck.Report)
}

// fcDefault is TestFleetCheck's run: the e2e periods, three rotations before the cut.
var fcDefault = fcRun{rotations: 3, waitMatrix: true, period: agentPeriod}

// reports records every round of a continuous check and writes each report, as JSON, to a file (for the
// leak check).
type reports struct {
	mu    sync.Mutex
	all   []*fleetcheck.Report
	file  string
	t     *testing.T
	label string
}

func (r *reports) add(rep *fleetcheck.Report) {
	var b bytes.Buffer
	_ = rep.WriteJSON(&b)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, rep)
	if f, err := os.OpenFile(r.file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		_, _ = f.Write(b.Bytes())
		f.Close()
	}
	first := ""
	if len(rep.Failures) > 0 {
		first = "; first failure: " + rep.Failures[0]
	}
	cur, next := "-", "-"
	if rep.Window != nil {
		cur, next = shortIDs(rep.Window.Current), shortIDs(rep.Window.Next)
	}
	r.t.Logf("%s round %d at %s: ok=%v current=%s next=%s ready=%d matrix %d/%d retired=%d failures=%d%s", r.label, rep.Round,
		rep.Started.Format("15:04:05.000"), rep.OK, cur, next, rep.NodesReadyNext, rep.Matrix.Pairs-rep.Matrix.Failures, rep.Matrix.Pairs,
		len(rep.Retired), len(rep.Failures), first)
}

func (r *reports) snapshot() []*fleetcheck.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*fleetcheck.Report(nil), r.all...)
}

// waitReport waits until a report satisfies cond and returns it, or fails the test after timeout.
func (r *reports) waitReport(t *testing.T, timeout time.Duration, what string, cond func(*fleetcheck.Report) bool) *fleetcheck.Report {
	t.Helper()
	deadline := time.Now().Add(timeout)
	seen := 0
	for {
		all := r.snapshot()
		for _, rep := range all[seen:] {
			if cond(rep) {
				return rep
			}
		}
		seen = len(all)
		if time.Now().After(deadline) {
			if len(all) > 0 {
				var b bytes.Buffer
				_ = all[len(all)-1].WriteTable(&b)
				t.Logf("last report:\n%s", b.String())
			}
			t.Fatalf("%s: no round showed %s within %s", r.label, what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fcNode(rep *fleetcheck.Report, addr string) fleetcheck.NodeReport {
	for _, n := range rep.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return fleetcheck.NodeReport{}
}

// fcPolicy renders the shipped fleet-check policy for keyring.
func fcPolicy(t *testing.T, keyring string) string {
	return luaShipped(t, "bootstrap/policies/fleetcheck.hcl.tmpl", "{{mount}}", "ticketkeys", "{{keyring}}", keyring)
}

// TestFleetCheck runs the three fleets at once on one Vault server. For each: the continuous check is green
// through at least three rotations; node 2, cut off Vault right after it fetched the next key, is reported by
// address as not ready for the key published after that, before that key activates, and as a matrix failure
// after it activates; restored, the fleet turns green again; after `rotate mode=now purge_previous=true` the
// check follows each purged key until the last node stops accepting it.
//
// It runs on every server, side by side (vaulttest.ForEachServerParallel): a Vault-fed fleet and an
// OpenBao-fed fleet (OpenBao's Agent for the Agent-fed nodes). Its time is the schedule's (rotations,
// Agent periods, check intervals), not CPU time, so the OpenBao half adds little to a run.
func TestFleetCheck(t *testing.T) { vaulttest.ForEachServerParallel(t, testFleetCheck) }

func testFleetCheck(t *testing.T, server vaulttest.Kind) {
	s := vaulttest.Start(t, vaulttest.WithServer(server))
	cert := testcert.New(t, testcert.ECDSAP256)
	// Enable approle once, before the fleets create their roles concurrently.
	s.EnableAppRole(t, "fleetcheck-setup", "default")
	cmdBin := buildFleetCheckCommand(t)

	// The three fleets run at once, each t.Run from a goroutine of its own (as servertest.EachNginx does):
	// with t.Parallel, go test's -parallel limit (GOMAXPROCS, 2 here) ran two fleets, then the third, and
	// with both servers side by side six fleets two at a time (218 s where one round takes about 75 s).
	// The fleets wait on the schedule, not the CPU.
	var wg sync.WaitGroup
	for _, fl := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"go", func(t *testing.T) { runFleetCheck(t, s, cert, goFleet(t, s, cert, createKeyring), cmdBin, fcDefault) }},
		{"nginx-lua", func(t *testing.T) { runFleetCheck(t, s, cert, luaFleet(t, s, cert, createKeyring), "", fcDefault) }},
		{"haproxy", func(t *testing.T) { runFleetCheck(t, s, cert, haproxyFleet(t, s, cert, createKeyring), "", fcDefault) }},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(fl.name, fl.run)
		}()
	}
	wg.Wait()
}

func buildFleetCheckCommand(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ticketkeys-fleetcheck")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/cmd/ticketkeys-fleetcheck").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ticketkeys-fleetcheck: %v\n%s", err, out)
	}
	return bin
}

// goFleet: three Go servers, each with its own client.Source and its own token; node 2 is cut off by
// revoking its token and restored by giving its client a new one.
func goFleet(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, create fcKeyring) *fcFleet {
	const keyring = "fc-go"
	create(t, s, keyring)
	s.WritePolicy(t, "fc-go-node", fcPolicy(t, keyring))
	f := &fcFleet{kind: "go", keyring: keyring, format: "go"}
	opts := []client.Option{client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), client.WithRetryBackoff(200*time.Millisecond, time.Second)}
	var tokens []string
	vcs := make([]*api.Client, 3)
	for i := 0; i < 3; i++ {
		tok := s.NewToken(t, "fc-go-node")
		vc := vaultClient(t, s, tok)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		src, err := client.NewSource(ctx, vc, "ticketkeys", keyring, opts...)
		cancel()
		if err != nil {
			t.Fatalf("go node %d: %v", i, err)
		}
		t.Cleanup(func() { _ = src.Close() })
		f.addrs = append(f.addrs, startGoNode(t, cert, src).addr)
		tokens = append(tokens, tok)
		vcs[i] = vc
	}
	f.cutOff = func(t *testing.T) {
		if err := s.Client.Auth().Token().RevokeOrphan(tokens[2]); err != nil {
			t.Fatalf("revoke go node 2's token: %v", err)
		}
	}
	f.restore = func(t *testing.T) { vcs[2].SetToken(s.NewToken(t, "fc-go-node")) }
	return f
}

// luaFleet: three nginx nodes with the Lua module (keyring "web", which the shipped template names), each
// fed by its own Agent; node 2 is cut off by stopping its Agent and restored by starting it again.
func luaFleet(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, create fcKeyring) *fcFleet {
	create(t, s, "web")
	// The Lua module switches at the instant; format nginx defaults to agent.
	f := &fcFleet{kind: "nginx-lua", keyring: "web", format: "nginx", nodeKind: fleetcheck.KindLocal}
	var nodes []*luaNode
	for i := 0; i < 3; i++ {
		n := startLuaNode(t, s, cert, servertest.DebianNginx(t), "web", fmt.Sprintf("fc-lua%d", i))
		nodes = append(nodes, n)
		f.addrs = append(f.addrs, n.inst.HTTPS)
	}
	waitNodesHoldEngine(t, s, "web", nodes, 30*time.Second)
	f.cutOff = func(t *testing.T) { nodes[2].agent.Stop() }
	f.restore = func(t *testing.T) {
		hcl, err := os.ReadFile(filepath.Join(filepath.Dir(nodes[2].agent.LogPath), "agent.hcl"))
		if err != nil {
			t.Fatal(err)
		}
		nodes[2].agent = vaulttest.StartAgent(t, s, string(hcl))
	}
	return f
}

// haproxyFleet: three HAProxy nodes, each fed by its own Agent that pushes over the admin socket; node 2 is
// cut off by stopping its Agent and restored by starting it again.
func haproxyFleet(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, create fcKeyring) *fcFleet {
	const keyring = "fc-haproxy"
	create(t, s, keyring)
	f := &fcFleet{kind: "haproxy", keyring: keyring, format: "haproxy"}
	combined := cert.WriteCombinedPEM(t.TempDir())
	push := pushBinary(t)
	var nodes []*agentNode
	for i := 0; i < 3; i++ {
		n := startAgentNode(t, s, agent.HAProxy, keyring, fmt.Sprintf("fc-haproxy%d", i), ":", "")
		socket := filepath.Join(n.Dir, "admin.sock")
		port := servertest.FreePort(t)
		p := servertest.StartHAProxy(t, haproxyConf(port, combined, n.Files[0], socket))
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p.WaitListening(t, addr)
		n.setAction(t, fmt.Sprintf("exec %s -socket %s -file %s >> %s 2>&1", push, socket, n.Files[0], filepath.Join(n.Dir, "push.log")))
		if out, err := exec.Command(push, "-socket", socket, "-file", n.Files[0]).CombinedOutput(); err != nil {
			t.Fatalf("initial push to %s: %v\n%s", n.Name, err, out)
		}
		nodes = append(nodes, n)
		f.addrs = append(f.addrs, addr)
	}
	f.cutOff = func(t *testing.T) { nodes[2].Agent.Stop() }
	f.restore = func(t *testing.T) { nodes[2].restartAgent(t, s, "") }
	return f
}

func runFleetCheck(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, f *fcFleet, cmdBin string, run fcRun) {
	policy := "ticketkeys-fleetcheck-" + f.keyring
	s.WritePolicy(t, policy, fcPolicy(t, f.keyring))
	token := s.NewToken(t, policy)
	watch := watchWindowsFormat(t, s, f.keyring, f.format)
	var nodes []fleetcheck.Node
	for _, a := range f.addrs {
		nodes = append(nodes, fleetcheck.Node{Addr: a, ServerName: testcert.ServerName, RootCAs: cert.Pool, Kind: f.nodeKind})
	}
	checker, err := fleetcheck.New(fleetcheck.Config{
		Keyring: f.keyring, Format: f.format, Nodes: nodes, MaxRetired: 6, UnnamedTickets: f.unnamed, PreviousKeys: f.previousKeys,
		Read:            fleetcheck.VaultReader(vaultClient(t, s, token), "ticketkeys", f.keyring, f.format),
		TestJitterScale: run.jitterScale,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(checker.Close)
	rec := &reports{t: t, label: f.kind, file: filepath.Join(t.TempDir(), "reports.json")}
	if run.reports != nil {
		defer func() { run.reports(rec.snapshot()) }()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- checker.Run(ctx, fcInterval, rec.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", f.kind, err)
		}
	})

	// 1. Green through at least run.rotations rotations.
	rec.waitReport(t, time.Duration(run.rotations+3)*run.period, fmt.Sprintf("%d rotations", run.rotations), func(*fleetcheck.Report) bool {
		seen := map[string]bool{}
		for _, rep := range rec.snapshot() {
			if rep.Window != nil {
				seen[rep.Window.Current] = true
			}
		}
		return len(seen) >= run.rotations+1
	})
	healthy := rec.snapshot()
	for _, rep := range healthy {
		if !rep.OK {
			t.Errorf("%s: round %d at %s failed on a healthy fleet: %v", f.kind, rep.Round, rep.Started.Format("15:04:05.000"), rep.Failures)
		}
	}
	t.Logf("%s: %d rounds through %d rotations, all green", f.kind, len(healthy), watch.Rotations())
	if t.Failed() {
		return
	}
	if cmdBin != "" {
		checkCommand(t, s, cert, f, token, cmdBin)
	}

	var cutAt, greenAt time.Time // the cut node may fail in between (allRounds)
	if f.cutOff != nil {
		cutAt, greenAt = cutAndRestore(t, rec, f, run)
	}

	// 4. A purge: the check follows each purged key until the last node stops accepting it.
	before := rec.snapshot()
	purgedCurrent := before[len(before)-1].Window.Current
	if _, err := s.Client.Logical().Write("ticketkeys/keys/"+f.keyring+"/rotate", map[string]any{"mode": "now", "purge_previous": true}); err != nil {
		t.Fatalf("purge: %v", err)
	}
	purgedAt := time.Now()
	done2 := rec.waitReport(t, 4*run.period, "every purged key refused by every node", func(rep *fleetcheck.Report) bool {
		if !rep.Started.After(purgedAt) {
			return false
		}
		tracked := false
		for _, rs := range rep.Retired {
			if rs.Reason != "removed" {
				continue
			}
			if rs.ID == purgedCurrent {
				tracked = true
			}
			if len(rs.AcceptedBy) > 0 || rs.RefusedEverywhereSince.IsZero() {
				return false
			}
		}
		return tracked
	})
	for _, rs := range done2.Retired {
		if rs.Reason != "removed" {
			continue
		}
		if rs.LastAcceptedAt.IsZero() {
			t.Logf("%s: purged key %s: refused by every node since %s (%s after the purge); no round saw a node accept it", f.kind,
				shortIDs(rs.ID), rs.RefusedEverywhereSince.Format("15:04:05.000"), rs.RefusedEverywhereSince.Sub(purgedAt).Round(time.Millisecond))
			continue
		}
		t.Logf("%s: purged key %s: last accepted at %s by %v; refused by every node since %s (%s after the purge)", f.kind, shortIDs(rs.ID),
			rs.LastAcceptedAt.Format("15:04:05.000"), rs.LastAcceptedBy, rs.RefusedEverywhereSince.Format("15:04:05.000"),
			rs.RefusedEverywhereSince.Sub(purgedAt).Round(time.Millisecond))
	}
	// The purge's summary names the time the last node refused every purged key.
	var purge *fleetcheck.PurgeSummary
	for i := range done2.Purges {
		if p := &done2.Purges[i]; slices.Contains(p.Keys, purgedCurrent) {
			purge = p
		}
	}
	if purge == nil || purge.RefusedEverywhereSince.Before(purgedAt) || purge.NotYetRefusedEverywhere != 0 {
		t.Errorf("%s: purge summary %+v; want every purged key refused everywhere, after the purge at %s", f.kind, purge, purgedAt.Format("15:04:05.000"))
	} else {
		t.Logf("%s: purge of %d keys: every one refused by every node since %s (%s after the purge)", f.kind, len(purge.Keys),
			purge.RefusedEverywhereSince.Format("15:04:05.000"), purge.RefusedEverywhereSince.Sub(purgedAt).Round(time.Millisecond))
	}
	if run.allRounds {
		noFalseRed(t, rec.snapshot(), f, cutAt, greenAt)
	}
	watch.Stop()
	watch.noKeyMaterial(t, rec.file)
}

// cutAndRestore cuts node 2 off Vault right after every node holds the next key, waits until the check
// names it not ready for the key published after that (before that key activates) and, with
// run.waitMatrix, for its matrix failure after the activation; then restores it and waits for a green
// round. It returns the time of the cut and the start of that green round.
func cutAndRestore(t *testing.T, rec *reports, f *fcFleet, run fcRun) (cutAt, greenAt time.Time) {
	t.Helper()
	stale := f.addrs[2]
	all := rec.snapshot()
	last := all[len(all)-1]
	// 2. Cut node 2 off right after every node holds the key just published (n+1).
	activation := last.Window.NextActivation
	heldRep := rec.waitReport(t, 2*run.period, "every node ready for the key published at the last activation", func(rep *fleetcheck.Report) bool {
		return rep.Window != nil && rep.Started.After(activation.Add(time.Second)) && rep.NodesReadyNext == 3 &&
			time.Until(rep.Window.NextActivation) > 4*time.Second
	})
	held, heldAt := heldRep.Window.Next, heldRep.Window.NextActivation
	f.cutOff(t)
	cutAt = time.Now()
	t.Logf("%s: node %s cut off Vault at %s, holding next key %s (activates %s)", f.kind, stale, cutAt.Format("15:04:05.000"), shortIDs(held), heldAt.Format("15:04:05"))

	// The key published at heldAt: node 2 is reported not ready, by address, before it activates.
	notReady := rec.waitReport(t, 3*run.period, "node 2 not ready for the key published after the cut", func(rep *fleetcheck.Report) bool {
		return rep.Window != nil && rep.Window.Next != "" && rep.Window.Next != held && fcNode(rep, stale).Next == fleetcheck.StatusFail
	})
	missed, missedAt := notReady.Window.Next, notReady.Window.NextActivation
	if !notReady.Started.Before(missedAt) {
		t.Errorf("%s: node 2 first reported not ready at %s, not before the activation at %s", f.kind, notReady.Started.Format("15:04:05.000"), missedAt.Format("15:04:05"))
	}
	named := false
	for _, fl := range notReady.Failures {
		if strings.HasPrefix(fl, stale+" ") && strings.Contains(fl, "next key "+missed) {
			named = true
		}
	}
	for _, a := range f.addrs[:2] {
		if fcNode(notReady, a).Next != fleetcheck.StatusOK {
			t.Errorf("%s: healthy node %s not ready in round %d: %v", f.kind, a, notReady.Round, notReady.Failures)
		}
	}
	if !named {
		t.Errorf("%s: the failures of round %d do not name %s and the next key: %v", f.kind, notReady.Round, stale, notReady.Failures)
	}
	t.Logf("%s: round %d at %s reports %s not ready for key %s, %s before it activates", f.kind, notReady.Round,
		notReady.Started.Format("15:04:05.000"), stale, shortIDs(missed), missedAt.Sub(notReady.Started).Round(time.Millisecond))

	// After the activation: the matrix fails on node 2's column.
	if run.waitMatrix {
		broken := rec.waitReport(t, 2*run.period, "a matrix failure at node 2 after the activation", func(rep *fleetcheck.Report) bool {
			n := fcNode(rep, stale)
			return rep.Started.After(missedAt) && n.MatrixColTotal > n.MatrixColOK
		})
		n2 := fcNode(broken, stale)
		t.Logf("%s: round %d at %s (%s after the activation): node %s resumed %d of %d tickets of the fleet; matrix failures %d",
			f.kind, broken.Round, broken.Started.Format("15:04:05.000"), broken.Started.Sub(missedAt).Round(time.Millisecond), stale,
			n2.MatrixColOK, n2.MatrixColTotal, broken.Matrix.Failures)
	}

	// 3. Restored, the fleet turns green.
	f.restore(t)
	restoredAt := time.Now()
	green := rec.waitReport(t, 4*run.period, "a green round after the restore", func(rep *fleetcheck.Report) bool {
		return rep.Started.After(restoredAt) && rep.OK
	})
	t.Logf("%s: restored at %s; green again in round %d, %s later", f.kind, restoredAt.Format("15:04:05.000"), green.Round, green.Started.Sub(restoredAt).Round(time.Millisecond))
	return cutAt, green.Started
}

// checkCommand runs the shipped command once (one round) with a token file holding the fleet-check token
// and expects exit 0 and a green JSON report.
func checkCommand(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, f *fcFleet, token, bin string) {
	t.Helper()
	dir := t.TempDir()
	_, _, caFile := cert.WritePEM(dir)
	tokenFile, report := filepath.Join(dir, "token"), filepath.Join(dir, "report.json")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-vault-addr", s.Addr, "-token-file", tokenFile, "-keyring", f.keyring, "-format", f.format,
		"-ca", caFile, "-sni", testcert.ServerName, "-json", report}
	for _, a := range f.addrs {
		args = append(args, "-node", a)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN=")
	out, err := cmd.CombinedOutput()
	b, rerr := os.ReadFile(report)
	var rep struct {
		OK    bool `json:"ok"`
		Nodes []struct {
			Addr string `json:"addr"`
		} `json:"nodes"`
	}
	if err != nil || rerr != nil || json.Unmarshal(b, &rep) != nil || !rep.OK || len(rep.Nodes) != 3 {
		t.Fatalf("%s: ticketkeys-fleetcheck: %v (report %v, ok %v, %d nodes)\n%s", f.kind, err, rerr, rep.OK, len(rep.Nodes), out)
	}
	t.Logf("%s: ticketkeys-fleetcheck (one round, token file, shipped policy) exit 0:\n%s", f.kind, out)

	// Continuous mode as a Prometheus target: /metrics and /report.json answer, SIGTERM ends it with 0.
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	cont := exec.Command(bin, append(args, "-continuous", "-interval", "1s", "-listen", listen, "-table=false")...)
	cont.Env = cmd.Env
	var logs bytes.Buffer
	cont.Stdout, cont.Stderr = &logs, &logs
	if err := cont.Start(); err != nil {
		t.Fatal(err)
	}
	exited, done := make(chan error, 1), make(chan struct{})
	go func() { exited <- cont.Wait(); close(done) }()
	defer func() { // stop it by PID if a check below failed first
		select {
		case <-done:
		default:
			_ = cont.Process.Kill()
			<-done
		}
	}()
	want := fmt.Sprintf(`ticketkeys_fleetcheck_nodes_reachable{keyring=%q} 3`, f.keyring)
	var metrics string
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(metrics, want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: /metrics never showed %s; last scrape:\n%s\nlog:\n%s", f.kind, want, metrics, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
		if resp, err := http.Get("http://" + listen + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			metrics = string(b)
		}
	}
	for _, m := range []string{"ticketkeys_fleetcheck_seconds_until_activation", "ticketkeys_fleetcheck_nodes_ready_next_key",
		"ticketkeys_fleetcheck_matrix_failures", `ticketkeys_fleetcheck_node_next_key_ready{keyring="` + f.keyring + `",node="` + f.addrs[2] + `"}`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("%s: /metrics has no %s", f.kind, m)
		}
	}
	resp, err := http.Get("http://" + listen + "/report.json")
	if err != nil {
		t.Fatal(err)
	}
	var last struct {
		Round int `json:"round"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&last); err != nil || last.Round < 1 {
		t.Errorf("%s: /report.json: %v, round %d", f.kind, err, last.Round)
	}
	resp.Body.Close()
	_ = cont.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("%s: continuous ticketkeys-fleetcheck exited with %v after SIGTERM\n%s", f.kind, err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: continuous ticketkeys-fleetcheck did not exit within 15s of SIGTERM", f.kind)
	}
	t.Logf("%s: continuous ticketkeys-fleetcheck served /metrics and /report.json (round %d) and exited 0 on SIGTERM", f.kind, last.Round)
}
