//go:build e2e

package e2e

// The fleet the cluster scenarios (cluster_scenarios_test.go) run under: a 3-node Vault cluster
// (vaulttest.StartCluster) behind a TCP load balancer that sends clients only to live, unsealed nodes;
// three Go TLS servers with their own client.Source and three HAProxy instances fed by Vault Agent, every
// one of them logged in with its own AppRole (bootstrap/node-approle.sh); the cross-node resumption load on
// each fleet; and observers that record, never print, key material: every node's window reads, the Go
// nodes' current keys, and the errors Vault gave the clients.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/resumption"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// vaultLBConf is HAProxy as the cluster's load balancer, the set-up docs/production.md recommends: TCP
// passthrough (clients verify Vault's own certificate), a health check on sys/health?standbyok=true over
// verified TLS so that only unsealed nodes (active or standby) receive clients, and a retry on another node
// when a connection is refused. Standbys forward every request to the active node.
func vaultLBConf(port int, caFile string, nodes []*vaulttest.Node) string {
	var servers strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&servers, "  server %s %s\n", n.Name, strings.TrimPrefix(n.Addr, "https://"))
	}
	return fmt.Sprintf(`
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
frontend vault
  bind 127.0.0.1:%d
  default_backend vault_nodes
backend vault_nodes
  balance roundrobin
  option httpchk GET /v1/sys/health?standbyok=true
  http-check expect status 200
  default-server check check-ssl verify required ca-file %s check-sni localhost inter 500ms fall 1 rise 1
%s`, port, caFile, servers.String())
}

// clusterSettings are a scenario keyring's periods.
type clusterSettings struct {
	Period, Ahead, Retain time.Duration
}

// clientError is one error a client of the fleet got from Vault.
type clientError struct {
	At     time.Time
	Client string
	Err    string
}

// clusterGoNode is a Go TLS server whose Source reads through the load balancer.
type clusterGoNode struct {
	Name  string
	Src   *client.Source
	Login *client.Login
	Addr  string
}

// clusterHAProxyNode is an HAProxy instance fed by its own Vault Agent through the load balancer.
type clusterHAProxyNode struct {
	Name     string
	Addr     string
	Agent    *vaulttest.Process
	HAProxy  *servertest.Proc
	Socket   string
	KeysFile string
	PushLog  string
}

// clusterFleet is the cluster, its load balancer and the TLS servers that use it.
type clusterFleet struct {
	C        *vaulttest.Cluster
	LBAddr   string // https://127.0.0.1:PORT
	Keyring  string
	Settings clusterSettings
	OpToken  string // ticketkeys-operator policy: keyrings, rotate, history
	TLSCert  *testcert.Cert
	Go       []*clusterGoNode
	HAProxy  []*clusterHAProxyNode

	mu        sync.Mutex
	vaultErrs []clientError
}

// newClusterFleet starts the load balancer, writes the operator policy and token, creates the keyring
// and starts three Go nodes and three Agent-fed HAProxy nodes, all reading through the load balancer.
func newClusterFleet(t *testing.T, c *vaulttest.Cluster, keyring string, s clusterSettings) *clusterFleet {
	t.Helper()
	f := &clusterFleet{C: c, Keyring: keyring, Settings: s, TLSCert: testcert.New(t, testcert.ECDSAP256)}

	lbPort := servertest.FreePort(t)
	lb := servertest.StartHAProxy(t, vaultLBConf(lbPort, c.CAFile, c.Nodes))
	f.LBAddr = fmt.Sprintf("https://127.0.0.1:%d", lbPort)
	lb.WaitListening(t, strings.TrimPrefix(f.LBAddr, "https://"))
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.Name+"="+n.Addr)
	}
	t.Logf("cluster %s behind the load balancer %s", strings.Join(addrs, " "), f.LBAddr)

	// The operator policy and a token for it, as docs/production.md does it.
	n0 := c.Nodes[0]
	c.Vault(t, n0, c.RootToken, "policy", "write", "ticketkeys-operator", c.ScriptPath("bootstrap/policies/ticketkeys-operator.hcl"))
	f.OpToken = strings.TrimSpace(c.Vault(t, n0, c.RootToken, "token", "create", "-policy=ticketkeys-operator", "-ttl=2h", "-field=token"))
	c.Vault(t, n0, f.OpToken, "write", "ticketkeys/keys/"+keyring,
		"rotation_period="+s.Period.String(), "publish_ahead="+s.Ahead.String(), "retain="+s.Retain.String())

	// Every client waits for the load balancer's first health checks.
	waitFor(t, 20*time.Second, "the load balancer to reach the cluster", func() bool {
		_, err := f.lbClient(t, "").Sys().Health()
		return err == nil
	})
	for i := 0; i < 3; i++ {
		f.Go = append(f.Go, f.startGoNode(t, fmt.Sprintf("go%d", i)))
	}
	push := pushBinary(t)
	combined := f.TLSCert.WriteCombinedPEM(t.TempDir())
	for i := 0; i < 3; i++ {
		f.HAProxy = append(f.HAProxy, f.startHAProxyNode(t, fmt.Sprintf("haproxy%d", i), push, combined))
	}
	return f
}

// lbClient is an API client for the load balancer with token; it verifies Vault's certificate.
func (f *clusterFleet) lbClient(t *testing.T, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = f.LBAddr
	cfg.Timeout = 5 * time.Second
	cfg.MaxRetries = 0
	if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: f.C.CAFile}); err != nil {
		t.Fatal(err)
	}
	cl, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl.SetToken(token)
	return cl
}

// activeReader reads through whichever node reports itself active (sys/health) at the time of the read.
// The history checks read the engine's own record there. On Vault it makes no difference: a standby
// forwards every request to the active node. OpenBao's standbys answer reads from their own Raft copy
// (docs/openbao.md), which can lag the active node: right after a write, and for a whole election when
// the active node dies before a follower learned that its last write committed. TestClusterFailover saw
// exactly that on OpenBao: a rotation committed on the killed node just before the kill, and a standby
// served the window without it until the new active node was elected. The observer (watch) still reads
// through every node, standbys included, and checks what they serve.
type activeReader struct{ nodes []*api.Client }

// activeReader makes one client with token per node of the cluster; it is safe for concurrent use.
func (f *clusterFleet) activeReader(t *testing.T, token string) *activeReader {
	t.Helper()
	r := &activeReader{}
	for _, n := range f.C.Nodes {
		r.nodes = append(r.nodes, f.C.Client(t, n, token))
	}
	return r
}

// read reads path through the node that reports itself active, or fails when none does.
func (r *activeReader) read(path string) (*api.Secret, error) {
	for _, cl := range r.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h, err := cl.Sys().HealthWithContext(ctx)
		cancel()
		if err != nil || !h.Initialized || h.Sealed || h.Standby {
			continue
		}
		return cl.Logical().Read(path)
	}
	return nil, fmt.Errorf("read %s: no node reports itself active", path)
}

// recordVaultError keeps an error a client got from Vault (no key material is ever in one).
func (f *clusterFleet) recordVaultError(who string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vaultErrs = append(f.vaultErrs, clientError{At: time.Now(), Client: who, Err: err.Error()})
}

// VaultErrors returns the errors the Go nodes got from Vault so far.
func (f *clusterFleet) VaultErrors() []clientError {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.vaultErrs)
}

// startGoNode logs in with the node's AppRole (KeepLogin) and serves TLS with a Source on the keyring.
func (f *clusterFleet) startGoNode(t *testing.T, name string) *clusterGoNode {
	t.Helper()
	dir := f.C.NodeAppRole(t, f.Keyring, name)
	roleID, err := os.ReadFile(filepath.Join(dir, "role-id"))
	if err != nil {
		t.Fatal(err)
	}
	vc := f.lbClient(t, "")
	auth, err := approle.NewAppRoleAuth(strings.TrimSpace(string(roleID)), &approle.SecretID{FromFile: filepath.Join(dir, "secret-id")})
	if err != nil {
		t.Fatal(err)
	}
	opts := []client.Option{
		client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		client.WithRetryBackoff(200*time.Millisecond, 2*time.Second),
		client.WithObserver(client.Observer{Refresh: func(ev client.RefreshEvent) {
			if ev.Err != nil {
				f.recordVaultError(name, ev.Err)
			}
		}}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	login, err := client.KeepLogin(ctx, vc, auth, opts...)
	if err != nil {
		t.Fatalf("%s: KeepLogin through the load balancer: %v", name, err)
	}
	t.Cleanup(func() { _ = login.Close() })
	src, err := client.NewSource(ctx, vc, vaulttest.MountPath, f.Keyring, opts...)
	if err != nil {
		t.Fatalf("%s: NewSource through the load balancer: %v", name, err)
	}
	t.Cleanup(func() { _ = src.Close() })
	n := startGoNode(t, f.TLSCert, src)
	return &clusterGoNode{Name: name, Src: src, Login: login, Addr: n.addr}
}

// startHAProxyNode renders the HAProxy Agent configuration of bootstrap/agent for the load balancer's
// address and the cluster CA, starts the Agent and an HAProxy that loads the rendered file, and lets the
// Agent push every later change over the admin socket.
func (f *clusterFleet) startHAProxyNode(t *testing.T, name, push, combinedPEM string) *clusterHAProxyNode {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	creds := f.C.NodeAppRole(t, f.Keyring, name)
	n := &clusterHAProxyNode{Name: name, Socket: filepath.Join(dir, "admin.sock"), PushLog: filepath.Join(dir, "push.log")}
	script := filepath.Join(dir, "on-change.sh")
	p := agent.Params{
		VaultAddr:    f.LBAddr,
		CACert:       f.C.CAFile,
		Keyring:      f.Keyring,
		RoleIDFile:   filepath.Join(creds, "role-id"),
		SecretIDFile: filepath.Join(creds, "secret-id"),
		Dir:          dir,
		Command:      []string{"/bin/sh", script},
	}
	files, err := agent.Files(agent.HAProxy, p)
	if err != nil {
		t.Fatal(err)
	}
	n.KeysFile = files[0]
	// Until HAProxy runs, a push fails (no socket) and is logged; HAProxy loads the file at start.
	sh := fmt.Sprintf("#!/bin/sh\nprintf '%%s ' \"$(date +%%H:%%M:%%S.%%3N)\" >> %[4]s\nexec %[1]s -socket %[2]s -file %[3]s >> %[4]s 2>&1\n", push, n.Socket, n.KeysFile, n.PushLog)
	if err := os.WriteFile(script, []byte(sh), 0o755); err != nil {
		t.Fatal(err)
	}
	// The configuration as docs/production.md renders it: the ticketkeys-agent-config command.
	out, err := exec.Command(agentConfigBinary(t), "-kind", "haproxy", "-vault", p.VaultAddr, "-ca-cert", p.CACert,
		"-keyring", p.Keyring, "-role-id-file", p.RoleIDFile, "-secret-id-file", p.SecretIDFile, "-dir", p.Dir,
		"-command", "/bin/sh "+script).Output()
	if err != nil {
		t.Fatalf("ticketkeys-agent-config for %s: %v", name, err)
	}
	if want, err := agent.Render(agent.HAProxy, p); err != nil || string(out) != want {
		t.Fatalf("ticketkeys-agent-config output differs from agent.Render (%v)", err)
	}
	n.Agent = f.C.StartAgent(t, f.C.Nodes[0], string(out))
	n.Agent.WaitFor(t, 60*time.Second, "first render of "+name, func() bool {
		_, err := os.Stat(n.KeysFile)
		return err == nil
	})
	port := servertest.FreePort(t)
	n.HAProxy = servertest.StartHAProxy(t, haproxyConf(port, combinedPEM, n.KeysFile, n.Socket))
	n.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	n.HAProxy.WaitListening(t, n.Addr)
	// Cover a change rendered between the first render and HAProxy's start.
	if out, err := runPush(push, n.Socket, n.KeysFile); err != nil {
		t.Fatalf("initial push to %s: %v\n%s", name, err, out)
	}
	return n
}

var agentConfigCommand = &testBinary{pkg: "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent/cmd/ticketkeys-agent-config"}

// agentConfigBinary returns bootstrap/agent/cmd/ticketkeys-agent-config, built once per test binary.
func agentConfigBinary(t *testing.T) string { return agentConfigCommand.get(t) }

// GoAddrs and HAProxyAddrs are the TLS addresses of each fleet.
func (f *clusterFleet) GoAddrs() []string {
	var a []string
	for _, n := range f.Go {
		a = append(a, n.Addr)
	}
	return a
}

func (f *clusterFleet) HAProxyAddrs() []string {
	var a []string
	for _, n := range f.HAProxy {
		a = append(a, n.Addr)
	}
	return a
}

// agentErrorLines returns the [ERROR] lines of every Agent's log (connection errors, 5xx from Vault).
func (f *clusterFleet) agentErrorLines() []string {
	var out []string
	for _, n := range f.HAProxy {
		b, _ := os.ReadFile(n.Agent.LogPath)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "[ERROR]") {
				out = append(out, n.Name+": "+l)
			}
		}
	}
	return out
}

// clusterLoad is the resumption load on both fleets.
type clusterLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	Go, HA *fleetLoad
	Start  time.Time
}

// startLoad runs the cross-node resumption load (TLS 1.2 and 1.3) on each fleet for at most max; Stop
// ends it earlier.
func (f *clusterFleet) startLoad(max time.Duration) *clusterLoad {
	ctx, cancel := context.WithTimeout(context.Background(), max+5*time.Second)
	l := &clusterLoad{cancel: cancel, Start: time.Now()}
	l.Go = startFleetLoad(ctx, &l.wg, f.GoAddrs(), f.TLSCert.Pool, max, 101)
	l.HA = startFleetLoad(ctx, &l.wg, f.HAProxyAddrs(), f.TLSCert.Pool, max, 202)
	return l
}

// Stop ends the load and waits for it.
func (l *clusterLoad) Stop() {
	l.cancel()
	l.wg.Wait()
}

// check logs the load of both fleets on connections started in [from, to) (zero times: the whole run)
// and, when want100 is set, fails the test unless every offered ticket resumed, with no failed handshake
// or request and a meaningful number of offers. Call it after Stop.
func (l *clusterLoad) check(t *testing.T, phase string, from, to time.Time, want100 bool) {
	t.Helper()
	if to.IsZero() {
		to = time.Now().Add(time.Hour)
	}
	for _, fleet := range []struct {
		name string
		fl   *fleetLoad
	}{{"go", l.Go}, {"haproxy", l.HA}} {
		for _, err := range fleet.fl.errs {
			t.Errorf("%s: %s load: %v", phase, fleet.name, err)
		}
		for _, ver := range []string{"TLS1.2", "TLS1.3"} {
			r := fleet.fl.results[ver]
			s := r.Between(from, to)
			rate := 0.0
			if s.Offered > 0 {
				rate = float64(s.Resumed) / float64(s.Offered)
			}
			t.Logf("%s: %s fleet %s: offered %d resumed %d (%.4f), failed handshakes %d, failed requests %d, connections %d",
				phase, fleet.name, ver, s.Offered, s.Resumed, rate, s.HandshakeFailures, s.RequestFailures, s.Connections)
			if !want100 {
				continue
			}
			if s.Offered < 50 {
				t.Errorf("%s: %s fleet %s: only %d tickets offered; the load did not run", phase, fleet.name, ver, s.Offered)
			}
			if s.Resumed != s.Offered || s.HandshakeFailures != 0 || s.RequestFailures != 0 {
				t.Errorf("%s: %s fleet %s: %d of %d offered tickets resumed, %d handshakes and %d requests failed; want all resumed, none failed; first failures %v; first misses %v",
					phase, fleet.name, ver, s.Resumed, s.Offered, s.HandshakeFailures, s.RequestFailures, firstFailures(r, 5), firstMisses(r, from, to, 5))
			}
		}
	}
}

// firstMisses lists the first n offered tickets started in [from, to) that did not resume (time and node
// index).
func firstMisses(r resumption.Result, from, to time.Time, n int) []string {
	var out []string
	for _, c := range r.Conns {
		if c.Offered && !c.Resumed && !c.Aborted && c.HandshakeErr == "" && !c.Start.Before(from) && c.Start.Before(to) {
			out = append(out, fmt.Sprintf("%s node=%d", c.Start.Format("15:04:05.000"), c.Addr))
			if len(out) == n {
				break
			}
		}
	}
	return out
}

// histKey is one key of a keyring's history: live (State set) or destroyed (Reason set).
type histKey struct {
	ID                  string
	State               string
	NotBefore, NotAfter time.Time
	DestroyedAt         time.Time
	Reason              string
}

// keyHistory is keys/:name/history.
type keyHistory struct {
	Keys, Destroyed []histKey
}

// history reads keys/:name/history through the load balancer with the operator token, retrying for up to
// 30 s while no node can answer (a failover in progress).
//
// It reads through the active node (activeReader): the engine's own record, which the chain checks hold.
func (f *clusterFleet) history(t *testing.T) keyHistory {
	t.Helper()
	cl := f.activeReader(t, f.OpToken)
	var sec *api.Secret
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		sec, err = cl.read("ticketkeys/keys/" + f.Keyring + "/history")
		if err == nil && sec != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read the history of %s: %v", f.Keyring, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return parseHistory(sec)
}

// parseHistory decodes a keys/:name/history response.
func parseHistory(sec *api.Secret) keyHistory {
	parse := func(v any) []histKey {
		var out []histKey
		list, _ := v.([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			k := histKey{}
			k.ID, _ = m["id"].(string)
			k.State, _ = m["state"].(string)
			k.Reason, _ = m["reason"].(string)
			k.NotBefore = parseTime(m["not_before"])
			k.NotAfter = parseTime(m["not_after"])
			k.DestroyedAt = parseTime(m["destroyed_at"])
			out = append(out, k)
		}
		return out
	}
	return keyHistory{Keys: parse(sec.Data["keys"]), Destroyed: parse(sec.Data["destroyed"])}
}

func parseTime(v any) time.Time {
	s, _ := v.(string)
	tm, _ := time.Parse(time.RFC3339, s)
	return tm
}

// current is the id of the history's current key.
func (h keyHistory) current() string {
	for _, k := range h.Keys {
		if k.State == "current" {
			return k.ID
		}
	}
	return ""
}

// ids lists the live key ids in the engine's order (current, next, previous), abbreviated.
func (h keyHistory) ids() string {
	var ids []string
	for _, k := range h.Keys {
		ids = append(ids, k.ID)
	}
	return shortIDs(strings.Join(ids, ","))
}

// chain returns every key that ever encrypted or was published (live and destroyed keys except those
// discarded unused), ordered by not_before, and fails the test for every problem chainProblems finds.
func (h keyHistory) chain(t *testing.T, period time.Duration) []histKey {
	t.Helper()
	all, problems := h.chainProblems(period)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("history: %d keys in one chain, none skipped or duplicated", len(all))
	return all
}

// chainProblems orders the keys as chain does and lists what is wrong: an id that appears twice (a
// duplicated key), two keys with one not_before (two keys for one slot), or consecutive keys more than one
// rotation period apart (a skipped key).
func (h keyHistory) chainProblems(period time.Duration) ([]histKey, []string) {
	var problems []string
	seen := map[string]bool{}
	var all []histKey
	for _, k := range append(slices.Clone(h.Keys), h.Destroyed...) {
		if seen[k.ID] {
			problems = append(problems, fmt.Sprintf("history: key %s appears twice (a duplicated key)", shortIDs(k.ID)))
			continue
		}
		seen[k.ID] = true
		if k.Reason == "discarded" {
			continue
		}
		all = append(all, k)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].NotBefore.Before(all[j].NotBefore) })
	for i := 1; i < len(all); i++ {
		gap := all[i].NotBefore.Sub(all[i-1].NotBefore)
		switch {
		case gap <= 0:
			problems = append(problems, fmt.Sprintf("history: keys %s and %s both start at %s (a duplicated slot)",
				shortIDs(all[i-1].ID), shortIDs(all[i].ID), all[i].NotBefore.Format(time.RFC3339)))
		case gap > period:
			problems = append(problems, fmt.Sprintf("history: %s between key %s (%s) and key %s (%s), more than the rotation period %s (a skipped key)",
				gap, shortIDs(all[i-1].ID), all[i-1].NotBefore.Format(time.RFC3339), shortIDs(all[i].ID), all[i].NotBefore.Format(time.RFC3339), period))
		}
	}
	return all, problems
}

// historyTrack reads the keyring's history every second and keeps every key any read listed. One read
// does not show a key that passed not_after before the next maintenance pass destroyed it (the history
// lists readable keys and destroyed keys only), so the chain checks run on the union of all reads: a key
// that was skipped appears in none of them.
type historyTrack struct {
	poller
	mu       sync.Mutex
	keys     map[string]histKey
	problems []string
	reads    int
}

func (f *clusterFleet) trackHistory(t *testing.T) *historyTrack {
	cl := f.activeReader(t, f.OpToken)
	h := &historyTrack{keys: map[string]histKey{}}
	h.every(t, time.Second, func() {
		if sec, err := cl.read("ticketkeys/keys/" + f.Keyring + "/history"); err == nil && sec != nil {
			h.add(parseHistory(sec))
		}
	})
	return h
}

// add merges one history read: a destroyed entry replaces what a live entry said about the same key.
func (h *historyTrack) add(kh keyHistory) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads++
	seen := map[string]bool{}
	for _, k := range append(slices.Clone(kh.Keys), kh.Destroyed...) {
		if seen[k.ID] {
			h.problems = append(h.problems, fmt.Sprintf("history: key %s appears twice in one read (a duplicated key)", shortIDs(k.ID)))
		}
		seen[k.ID] = true
		if old, ok := h.keys[k.ID]; ok && old.Reason != "" && k.Reason == "" {
			continue
		}
		h.keys[k.ID] = k
	}
}

// chain is keyHistory.chain over every key the reads listed, plus the problems single reads showed.
func (h *historyTrack) chain(t *testing.T, period time.Duration) []histKey {
	t.Helper()
	h.mu.Lock()
	var union keyHistory
	for _, k := range h.keys {
		union.Keys = append(union.Keys, k)
	}
	problems, reads := slices.Clone(h.problems), h.reads
	h.mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("history: %d reads", reads)
	return union.chain(t, period)
}

// windowRead is one read of the keyring's window through one node by the observer.
type windowRead struct {
	Node       string
	Start, End time.Time
	IDs        []string
	NotAfter   []time.Time
	Err        string
}

// clusterWatch reads the window through every node directly every 200 ms, keeps every read, and keeps
// the material it saw (for leak checks only, never printed).
type clusterWatch struct {
	poller
	mu       sync.Mutex
	reads    []windowRead
	material map[string]string // id -> base64 nginx-format key
}

// watch starts the observer; it stops when the test ends or at Stop.
func (f *clusterFleet) watch(t *testing.T) *clusterWatch {
	w := &clusterWatch{material: map[string]string{}}
	for _, n := range f.C.Nodes {
		cl := f.C.Client(t, n, f.OpToken)
		cl.SetClientTimeout(2 * time.Second)
		w.every(t, 200*time.Millisecond, func() {
			r := windowRead{Node: n.Name, Start: time.Now()}
			sec, err := cl.Logical().Read("ticketkeys/keys/" + f.Keyring)
			r.End = time.Now()
			if err != nil || sec == nil {
				r.Err = fmt.Sprint(err)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if sec != nil {
				keys, _ := sec.Data["keys"].([]any)
				for _, k := range keys {
					m, _ := k.(map[string]any)
					id, _ := m["id"].(string)
					r.IDs = append(r.IDs, id)
					r.NotAfter = append(r.NotAfter, parseTime(m["not_after"]))
					if b64, _ := m["ticket_key"].(string); b64 != "" {
						w.material[id] = b64
					}
				}
			}
			w.reads = append(w.reads, r)
		})
	}
	return w
}

// Reads returns the reads so far.
func (w *clusterWatch) Reads() []windowRead {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.reads)
}

// checkNoExpiredKey fails the test for every read that returned a key at or after its not_after (the
// server's clock is this machine's: a key returned by a read that started at or after its not_after was
// past it on the server too).
func (w *clusterWatch) checkNoExpiredKey(t *testing.T) {
	t.Helper()
	reads := w.Reads()
	bad, ok := 0, 0
	for _, r := range reads {
		if r.Err != "" {
			continue
		}
		ok++
		for i, na := range r.NotAfter {
			if !r.Start.Before(na) {
				bad++
				if bad <= 5 {
					t.Errorf("read through %s at %s returned key %s past its not_after %s", r.Node, r.Start.Format("15:04:05.000"), shortIDs(r.IDs[i]), na.Format(time.RFC3339))
				}
			}
		}
	}
	t.Logf("observer: %d reads (%d answered), %d returned a key past its not_after", len(reads), ok, bad)
}

// failedReads returns the observer's failed reads, optionally only those of node.
func (w *clusterWatch) failedReads(node string) []windowRead {
	var out []windowRead
	for _, r := range w.Reads() {
		if r.Err != "" && (node == "" || r.Node == node) {
			out = append(out, r)
		}
	}
	return out
}

// noKeyMaterial fails the test if any of files holds material the observer saw (base64 of the key or of
// its secret part, or the raw secret bytes).
func (w *clusterWatch) noKeyMaterial(t *testing.T, files ...string) {
	t.Helper()
	w.mu.Lock()
	material := make(map[string]string, len(w.material))
	for id, m := range w.material {
		material[id] = m
	}
	w.mu.Unlock()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a log that was never written
		}
		for id, b64 := range material {
			raw, _ := base64.StdEncoding.DecodeString(b64)
			for _, needle := range []string{b64, base64.StdEncoding.EncodeToString(raw[16:]), string(raw[16:])} {
				if strings.Contains(string(b), needle) {
					t.Errorf("%s holds material of key %s", f, shortIDs(id))
					break
				}
			}
		}
	}
	t.Logf("leak check: %d file(s) hold no material of the %d keys seen", len(files), len(material))
}

// goTrack polls every Go node's current key every 100 ms and records each node's sequence of current
// keys (ids only).
type goTrack struct {
	poller
	mu   sync.Mutex
	seqs [][]string
}

func (f *clusterFleet) trackGo(t *testing.T) *goTrack {
	g := &goTrack{seqs: make([][]string, len(f.Go))}
	g.every(t, 100*time.Millisecond, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for i, n := range f.Go {
			id := n.Src.Status().CurrentID
			if s := g.seqs[i]; id != "" && (len(s) == 0 || s[len(s)-1] != id) {
				g.seqs[i] = append(s, id)
			}
		}
	})
	return g
}

// Sequences returns a copy of each Go node's sequence of current keys so far.
func (g *goTrack) Sequences() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([][]string, len(g.seqs))
	for i, s := range g.seqs {
		out[i] = slices.Clone(s)
	}
	return out
}

// checkSequences fails the test for every problem sequenceProblems finds.
func checkSequences(t *testing.T, chain []histKey, names []string, seqs [][]string) {
	t.Helper()
	for _, p := range sequenceProblems(chain, names, seqs) {
		t.Error(p)
	}
	for i, seq := range seqs {
		t.Logf("%s: %d current keys, each the history's next", names[i], len(seq))
	}
}

// sequenceProblems lists every place where a Go node's sequence of current keys leaves the chain: a key
// the chain does not have, or a step that skips keys of the chain (or goes back).
func sequenceProblems(chain []histKey, names []string, seqs [][]string) []string {
	var problems []string
	pos := map[string]int{}
	for i, k := range chain {
		pos[k.ID] = i
	}
	for i, seq := range seqs {
		for j, id := range seq {
			p, ok := pos[id]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s used current key %s, which the history does not list", names[i], shortIDs(id)))
				continue
			}
			if j > 0 {
				if q, ok := pos[seq[j-1]]; ok && p != q+1 {
					problems = append(problems, fmt.Sprintf("%s went from key %s to key %s: %d key(s) of the history skipped", names[i], shortIDs(seq[j-1]), shortIDs(id), p-q-1))
				}
			}
		}
	}
	return problems
}

// storedKeyring is the keyring as the engine stored it (sys/raw, test clusters only): times of every
// key, material never kept.
type storedKeyring struct {
	Keys []struct {
		NotBefore time.Time `json:"not_before"`
		NotAfter  time.Time `json:"not_after"`
	} `json:"keys"`
	UpdatedAt time.Time `json:"updated_at"`
}

// stored reads the keyring's storage entry through sys/raw (WithRawStorageEndpoint) with the root token.
func (f *clusterFleet) stored(t *testing.T) storedKeyring {
	t.Helper()
	root := f.lbClient(t, f.C.RootToken)
	var sk storedKeyring
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := func() error {
			m, err := root.Logical().Read("sys/mounts/" + vaulttest.MountPath)
			if err != nil || m == nil {
				return fmt.Errorf("read sys/mounts/%s: %v", vaulttest.MountPath, err)
			}
			uuid, _ := m.Data["uuid"].(string)
			sec, err := root.Logical().Read("sys/raw/logical/" + uuid + "/keyring/" + f.Keyring)
			if err != nil || sec == nil {
				return fmt.Errorf("read the raw keyring entry: %v", err)
			}
			v, _ := sec.Data["value"].(string)
			return json.Unmarshal([]byte(v), &sk)
		}()
		if err == nil {
			return sk
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored keyring: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// horizon is the not_before of the last key generated ahead.
func (s storedKeyring) horizon() time.Time {
	if len(s.Keys) == 0 {
		return time.Time{}
	}
	return s.Keys[len(s.Keys)-1].NotBefore
}

// expired counts stored keys (with their material) at or past not_after at now.
func (s storedKeyring) expired(now time.Time) int {
	n := 0
	for _, k := range s.Keys {
		if !now.Before(k.NotAfter) {
			n++
		}
	}
	return n
}

// nextActivation waits until every Go node knows the same next activation at least lead ahead and
// returns it.
func (f *clusterFleet) nextActivation(t *testing.T, lead time.Duration) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, 3*f.Settings.Period, "the Go nodes to agree on the next activation", func() bool {
		at = f.Go[0].Src.Status().NextActivation
		if at.IsZero() || time.Until(at) < lead {
			return false
		}
		for _, n := range f.Go[1:] {
			if !n.Src.Status().NextActivation.Equal(at) {
				return false
			}
		}
		return true
	})
	return at
}

// reportVaultErrors logs how many errors the clients got from Vault (Go nodes: refresh errors; Agents:
// [ERROR] lines), with the first few.
func (f *clusterFleet) reportVaultErrors(t *testing.T, scenario string) {
	t.Helper()
	errs := f.VaultErrors()
	t.Logf("%s: Go nodes saw %d Vault errors", scenario, len(errs))
	for i, e := range errs {
		if i == 5 {
			break
		}
		t.Logf("  %s %s: %s", e.At.Format("15:04:05.000"), e.Client, e.Err)
	}
	lines := f.agentErrorLines()
	t.Logf("%s: Agents logged %d error lines", scenario, len(lines))
	for i, l := range lines {
		if i == 5 {
			break
		}
		t.Logf("  %s", l)
	}
}

// reportPushes logs, per HAProxy node, when its Agent pushed a new window and the longest time between two
// pushes (an Agent that could not read Vault pushes nothing).
func (f *clusterFleet) reportPushes(t *testing.T, scenario string) {
	t.Helper()
	for _, n := range f.HAProxy {
		b, _ := os.ReadFile(n.PushLog)
		var times []string
		var longest time.Duration
		var prev time.Time
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			at, err := time.Parse("15:04:05.000", strings.Fields(l + " x")[0])
			if err != nil {
				continue
			}
			times = append(times, strings.Fields(l)[0])
			if !prev.IsZero() && at.Sub(prev) > longest {
				longest = at.Sub(prev)
			}
			prev = at
		}
		t.Logf("%s: %s Agent pushed %d windows, longest gap %s: %s", scenario, n.Name, len(times), longest, strings.Join(times, " "))
	}
}

// leakFiles lists every log of the cluster and the fleet that must hold no key material.
func (f *clusterFleet) leakFiles() []string {
	files := []string{f.C.AuditLogPath}
	for _, n := range f.C.Nodes {
		files = append(files, n.LogPath)
	}
	for _, n := range f.HAProxy {
		files = append(files, n.Agent.LogPath, n.PushLog)
	}
	return files
}

// runPush runs the HAProxy push command once.
func runPush(push, socket, file string) (string, error) {
	out, err := exec.Command(push, "-socket", socket, "-file", file).CombinedOutput()
	return string(out), err
}

// haproxyRingIDs are the key ids in an HAProxy node's ring (oldest first).
func haproxyRingIDs(t *testing.T, n *clusterHAProxyNode) []string {
	t.Helper()
	var ids []string
	for _, b64 := range haproxyRing(t, n.Socket, n.KeysFile) {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("%s: ring entry is not base64", n.Name)
		}
		ids = append(ids, keyID(raw))
	}
	return ids
}

// TestClusterChecksCatchDefects proves, without Vault, that the history and sequence checks the cluster
// scenarios rely on can fail: a skipped key, a duplicated key, two keys for one slot, and a node that
// skipped a key or used one the history does not list.
func TestClusterChecksCatchDefects(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1_800_000_000+int64(s), 0).UTC() }
	key := func(id string, nb int) histKey { return histKey{ID: id, NotBefore: at(nb), NotAfter: at(nb + 30)} }
	const period = 10 * time.Second
	for _, tc := range []struct {
		name string
		h    keyHistory
		want string
	}{
		{"good", keyHistory{Keys: []histKey{key("c", 20), key("d", 30)}, Destroyed: []histKey{key("a", 0), key("b", 10)}}, ""},
		{"discarded keys are not slots", keyHistory{Keys: []histKey{key("c", 20)}, Destroyed: []histKey{key("b", 10), {ID: "x", NotBefore: at(20), Reason: "discarded"}}}, ""},
		{"skipped", keyHistory{Keys: []histKey{key("a", 0), key("c", 20)}}, "skipped"},
		{"duplicated id", keyHistory{Keys: []histKey{key("a", 0)}, Destroyed: []histKey{key("a", 0)}}, "appears twice"},
		{"two keys for one slot", keyHistory{Keys: []histKey{key("a", 0), key("b", 0)}}, "duplicated slot"},
	} {
		_, problems := tc.h.chainProblems(period)
		got := strings.Join(problems, "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: problems %q, want %q", tc.name, got, tc.want)
		}
	}
	chain := []histKey{key("a", 0), key("b", 10), key("c", 20)}
	for _, tc := range []struct {
		name string
		seq  []string
		want string
	}{
		{"in order", []string{"a", "b", "c"}, ""},
		{"skipped", []string{"a", "c"}, "skipped"},
		{"unknown key", []string{"a", "z"}, "does not list"},
		{"back", []string{"b", "a"}, "skipped"},
	} {
		got := strings.Join(sequenceProblems(chain, []string{"go0"}, [][]string{tc.seq}), "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: problems %q, want %q", tc.name, got, tc.want)
		}
	}
}
