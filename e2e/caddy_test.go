//go:build e2e

package e2e

// Caddy with the tls.stek.ticketkeys key source (caddy/, issue 12) against real Vault, and the same load
// against Caddy's built-in distributed key source for comparison.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/resumption"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

const (
	caddyKeyring = "caddyweb"
	// caddyPeriod is both the keyring's rotation period and the distributed
	// source's rotation interval, so both runs see the same rotations.
	caddyPeriod = 6 * time.Second
	caddyRetain = 12 * time.Second
)

// caddyBinary returns $CADDY_BIN, or builds (or finds in the cache) Caddy with the module through
// scripts/caddy-build.sh.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CADDY_BIN"); p != "" {
		return p
	}
	start := time.Now()
	cmd := exec.Command(filepath.Join("..", "scripts", "caddy-build.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/caddy-build.sh: %v\n%s", err, stderr.String())
	}
	t.Logf("caddy binary %s (%s)", strings.TrimSpace(string(out)), time.Since(start).Round(time.Millisecond))
	return strings.TrimSpace(string(out))
}

// caddyNode is one real Caddy process serving HTTPS on loopback.
type caddyNode struct {
	name, dir, bin   string
	addr, admin      string
	configPath, log  string
	certFile, keyFil string
	tickets          map[string]any // the tls app's session_tickets
	cmd              *exec.Cmd
	done             chan struct{}
}

// config renders the node's JSON config; generation is sent back in a response header, so a test sees
// which config served a request.
func (n *caddyNode) config(generation int) []byte {
	cfg := map[string]any{
		"admin":   map[string]any{"listen": n.admin},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(n.dir, "storage")},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "INFO"}}},
		"apps": map[string]any{
			"http": map[string]any{"servers": map[string]any{"srv0": map[string]any{
				"listen":          []string{n.addr},
				"protocols":       []string{"h1", "h2"},
				"automatic_https": map[string]any{"disable": true},
				"tls_connection_policies": []any{map[string]any{
					"certificate_selection": map[string]any{"any_tag": []string{"test"}},
				}},
				"routes": []any{map[string]any{"handle": []any{map[string]any{
					"handler": "static_response", "status_code": 200, "body": "ok\n",
					"headers": map[string]any{"X-Config-Generation": []string{fmt.Sprint(generation)}},
				}}}},
			}}},
			"tls": map[string]any{
				"certificates":    map[string]any{"load_files": []any{map[string]any{"certificate": n.certFile, "key": n.keyFil, "tags": []string{"test"}}}},
				"session_tickets": n.tickets,
			},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		panic(err)
	}
	return b
}

func (n *caddyNode) env() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + n.dir, "XDG_CONFIG_HOME=" + filepath.Join(n.dir, "config"),
		"XDG_DATA_HOME=" + filepath.Join(n.dir, "data")}
}

// startCaddyNode runs `caddy run --config` for a node with the given session_tickets and waits until it
// serves TLS.
func startCaddyNode(t *testing.T, bin, name string, cert *testcert.Cert, tickets map[string]any) *caddyNode {
	t.Helper()
	dir := t.TempDir()
	n := &caddyNode{name: name, dir: dir, bin: bin, tickets: tickets,
		addr:       fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)),
		admin:      fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)),
		configPath: filepath.Join(dir, "caddy.json"), log: filepath.Join(dir, "caddy.log"),
		done: make(chan struct{})}
	n.certFile, n.keyFil, _ = cert.WritePEM(dir)
	if err := os.WriteFile(n.configPath, n.config(1), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(n.log)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, "run", "--config", n.configPath)
	n.cmd.Env = n.env()
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); logf.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			b, _ := os.ReadFile(n.log)
			t.Logf("--- caddy %s log (tail) ---\n%s", name, tailLines(string(b), 40))
		}
	})
	waitFor(t, 60*time.Second, "caddy "+name+" to serve TLS on "+n.addr, func() bool {
		select {
		case <-n.done:
			b, _ := os.ReadFile(n.log)
			t.Fatalf("caddy %s exited at start:\n%s", name, tailLines(string(b), 40))
		default:
		}
		c, err := tls.Dial("tcp", n.addr, cert.ClientConfig())
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return n
}

// stop ends the process by its PID (SIGTERM, then SIGKILL to its group after 10s) and waits for it.
func (n *caddyNode) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
}

// reload writes the config of generation and applies it with `caddy reload`.
func (n *caddyNode) reload(generation int) error {
	if err := os.WriteFile(n.configPath, n.config(generation), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(n.bin, "reload", "--config", n.configPath, "--address", n.admin)
	cmd.Env = n.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("caddy reload %s: %v\n%s", n.name, err, out)
	}
	return nil
}

// generation asks the node which config generation serves it.
func (n *caddyNode) generation(t *testing.T, cert *testcert.Cert) string {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cert.ClientConfig()}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + n.addr + "/")
	if err != nil {
		t.Fatalf("caddy %s: %v", n.name, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Config-Generation")
}

// logEntry is one line of Caddy's JSON log.
type logEntry struct {
	TS     float64 `json:"ts"`
	Logger string  `json:"logger"`
	Msg    string  `json:"msg"`
}

// logEntries returns the times of the node's log lines whose message starts with msg.
func (n *caddyNode) logEntries(msg string) []time.Time {
	f, err := os.Open(n.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil && strings.HasPrefix(e.Msg, msg) {
			out = append(out, time.Unix(0, int64(e.TS*1e9)))
		}
	}
	return out
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startProxyAgent starts a real Vault Agent that logs in with AppRole and proxies requests with its
// token (api_proxy use_auto_auth_token), and returns its address.
func startProxyAgent(t *testing.T, s *vaulttest.Server, roleIDFile, secretIDFile string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	hcl := fmt.Sprintf(`vault {
  address = %q
}
auto_auth {
  method "approle" {
    config = {
      role_id_file_path                   = %q
      secret_id_file_path                 = %q
      remove_secret_id_file_after_reading = false
    }
  }
}
api_proxy {
  use_auto_auth_token = true
}
listener "tcp" {
  address     = %q
  tls_disable = true
}
`, s.Addr, roleIDFile, secretIDFile, addr)
	vaulttest.StartAgent(t, s, hcl)
	return "http://" + addr
}

// nextActivation reads the keyring (root token) and returns the activation time of its next key.
func nextActivation(t *testing.T, s *vaulttest.Server, keyring string) time.Time {
	t.Helper()
	sec, err := s.Client.Logical().ReadWithData("ticketkeys/keys/"+keyring, map[string][]string{"format": {"go"}})
	if err != nil || sec == nil {
		t.Fatalf("read keyring %s: %v", keyring, err)
	}
	keys, _ := sec.Data["keys"].([]any)
	for _, k := range keys {
		m, _ := k.(map[string]any)
		if m["state"] == "next" {
			nb, _ := m["not_before"].(string)
			at, err := time.Parse(time.RFC3339, nb)
			if err != nil {
				t.Fatalf("next key not_before %q: %v", nb, err)
			}
			return at
		}
	}
	t.Fatalf("keyring %s has no next key", keyring)
	return time.Time{}
}

// rotationsBetween counts the activations the watcher saw (distinct current keys first seen) in (from, to].
func rotationsBetween(w *windowWatch, from, to time.Time) int {
	ws, times := w.Windows()
	seen := map[string]bool{}
	n := 0
	for i, ids := range ws {
		cur := strings.SplitN(ids, ",", 2)[0]
		if !seen[cur] && i > 0 && times[i].After(from) && !times[i].After(to) {
			n++
		}
		seen[cur] = true
	}
	return n
}

// caddyLoad runs the random-node load in TLS 1.2 and 1.3 at once against addrs for d.
func caddyLoad(t *testing.T, addrs []string, cert *testcert.Cert, d time.Duration, seed int64) map[string]resumption.Result {
	t.Helper()
	var wg sync.WaitGroup
	fl := startFleetLoad(context.Background(), &wg, addrs, cert.Pool, d, seed)
	wg.Wait()
	for _, err := range fl.errs {
		t.Error(err)
	}
	return fl.results
}

// checkAllResumed fails unless every offered ticket resumed, with no failed connection and a load large
// enough to mean something. A connection that tolerated says overlapped a `caddy reload` may fail in two
// ways that are Caddy's listener hand-over, not the key source's, and are logged either way:
//   - its HTTP exchange is cut after a good handshake (the ticket's resumption is still counted);
//   - its TCP connection is reset or closed before the handshake finished (a connection queued on the old
//     listener): no key was ever tried, so its ticket is left out of the offered count. A ticket the
//     servers cannot decrypt still fails the check, because it ends in a full handshake, not a reset.
func checkAllResumed(t *testing.T, phase string, results map[string]resumption.Result, minOffered int, tolerated func(resumption.Conn) bool) {
	t.Helper()
	for _, name := range []string{"TLS1.2", "TLS1.3"} {
		r := results[name]
		t.Logf("%s %s: %s", phase, name, r)
		var failed, excused []string
		unanswered := 0 // offered tickets whose handshake a reload cut before the server answered
		for _, c := range r.Conns {
			if c.Aborted || (c.HandshakeErr == "" && c.RequestErr == "") {
				continue
			}
			line := fmt.Sprintf("%s node=%d %s%s", c.Start.Format("15:04:05.000"), c.Addr, c.HandshakeErr, c.RequestErr)
			switch {
			case tolerated == nil || !tolerated(c):
				failed = append(failed, line)
			case c.HandshakeErr == "":
				excused = append(excused, line)
			case cutByListenerHandover(c.HandshakeErr):
				excused = append(excused, line)
				if c.Offered {
					unanswered++
				}
			default:
				failed = append(failed, line)
			}
		}
		if len(excused) > 0 {
			t.Logf("%s %s: %d connection(s) cut by a caddy reload (%d offered ticket(s) never reached a key): %v", phase, name, len(excused), unanswered, excused)
		}
		if len(failed) > 0 {
			t.Errorf("%s %s: %d failed connections: %v", phase, name, len(failed), failed[:min(len(failed), 5)])
		}
		if r.Offered-unanswered < minOffered {
			t.Errorf("%s %s: only %d tickets offered, want >= %d", phase, name, r.Offered-unanswered, minOffered)
		}
		if r.Resumed != r.Offered-unanswered {
			t.Errorf("%s %s: %d of %d offered tickets resumed, want all", phase, name, r.Resumed, r.Offered-unanswered)
		}
	}
}

// cutByListenerHandover reports whether a handshake error is the server dropping the TCP connection
// (reset, broken pipe, EOF) rather than a TLS failure (an alert, a bad certificate, a timeout) or a dial
// error (nothing listening).
func cutByListenerHandover(handshakeErr string) bool {
	if !strings.HasPrefix(handshakeErr, "handshake: ") {
		return false
	}
	return handshakeErr == "handshake: EOF" ||
		strings.HasSuffix(handshakeErr, ": connection reset by peer") ||
		strings.HasSuffix(handshakeErr, ": broken pipe")
}

// comparisonRow is one line of the side-by-side table.
type comparisonRow struct {
	source, version string
	rotations       int
	r               resumption.Result
}

func (c comparisonRow) String() string {
	failed := c.r.Offered - c.r.Resumed
	perRotation := "n/a"
	if c.rotations > 0 {
		perRotation = fmt.Sprintf("%.1f", float64(failed)/float64(c.rotations))
	}
	return fmt.Sprintf("caddy-compare: %-12s %-6s rotations=%-2d offered=%-5d resumed=%-5d rate=%.4f failed=%-4d failed_per_rotation=%s handshake_failures=%d",
		c.source, c.version, c.rotations, c.r.Offered, c.r.Resumed, c.r.ResumeRate(), failed, perRotation, c.r.HandshakeFailures)
}

// TestCaddyTicketkeys is the end-to-end proof of the Caddy key source (tls.stek.ticketkeys):
//
//  1. three real Caddy processes, each with its own AppRole login to a real Vault (two log in themselves,
//     the third reads through a local Vault Agent: agent_address), serve HTTPS on loopback; the random-node load (TLS 1.2 and 1.3 at once) resumes every offered ticket through at
//     least three rotations, while every node is reloaded (`caddy reload`) mid-run: the new config serves
//     and keeps the running window (no resumption lost across the reload);
//  2. Vault is stopped 3s before an activation: every node switches at the activation with Vault down
//     and every offered ticket still resumes, before and after the activation;
//  3. Vault is restarted: every node's Source recovers by itself, and every offered ticket resumes;
//  4. the same load (same period, same length) against three Caddy processes with Caddy's built-in
//     `distributed` key source (shared file storage): its resumption rate and failed resumptions per
//     rotation are logged beside the ticketkeys run ("caddy-compare:" lines; `make caddy-compare`).
//
// No Caddy log holds key material.
func TestCaddyTicketkeys(t *testing.T) {
	bin := caddyBinary(t)
	s := vaulttest.Start(t)
	if _, err := s.Client.Logical().Write("ticketkeys/keys/"+caddyKeyring, map[string]any{
		"rotation_period": caddyPeriod.String(), "publish_ahead": caddyPeriod.String(), "retain": caddyRetain.String(),
	}); err != nil {
		t.Fatalf("create keyring: %v", err)
	}
	watch := watchWindowsFormat(t, s, caddyKeyring, "go")
	cert := testcert.New(t, testcert.ECDSAP256)

	var nodes []*caddyNode
	var addrs []string
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("caddy-%d", i)
		credDir := t.TempDir()
		roleIDFile, secretIDFile := appRoleFiles(t, s, caddyKeyring, "node-"+caddyKeyring+"-"+name, credDir)
		source := map[string]any{
			"provider": "ticketkeys", "mount": "ticketkeys", "keyring": caddyKeyring,
			"retry_backoff_min": "200ms", "retry_backoff_max": "2s",
		}
		if i < 2 {
			// Nodes 0 and 1 log in themselves.
			source["address"] = s.Addr
			source["approle"] = map[string]any{"role_id_file": roleIDFile, "secret_id_file": secretIDFile}
		} else {
			// Node 2 reads through a local Vault Agent that logs in with the node's AppRole.
			source["agent_address"] = startProxyAgent(t, s, roleIDFile, secretIDFile)
		}
		n := startCaddyNode(t, bin, name, cert, map[string]any{"key_source": source})
		nodes = append(nodes, n)
		addrs = append(addrs, n.addr)
	}

	// Phase 1: at least three rotations under load; every node is reloaded a third of the way in.
	phase1 := time.Duration(3.5 * float64(caddyPeriod))
	start := time.Now()
	reloadErrs := make(chan error, len(nodes))
	var reloadFrom, reloadTo time.Time // all reloads happen in between; read after reloadErrs
	go func() {
		time.Sleep(phase1 / 3)
		reloadFrom = time.Now()
		for i, n := range nodes {
			err := n.reload(2)
			if i == len(nodes)-1 {
				reloadTo = time.Now()
			}
			reloadErrs <- err
		}
	}()
	res1 := caddyLoad(t, addrs, cert, phase1, 1)
	end := time.Now()
	for range nodes {
		if err := <-reloadErrs; err != nil {
			t.Error(err)
		}
	}
	// Caddy's reload can cut an HTTP/1.1 exchange in flight on the old server (unexpected EOF after the
	// handshake); that is Caddy's, not the key source's, and costs no ticket.
	duringReload := func(c resumption.Conn) bool {
		return c.End.After(reloadFrom.Add(-time.Second)) && c.Start.Before(reloadTo.Add(time.Second))
	}
	checkAllResumed(t, "phase 1 (rotations and reloads)", res1, 300, duringReload)
	rot1 := rotationsBetween(watch, start, end)
	t.Logf("phase 1: %d rotations during the load", rot1)
	if rot1 < 3 {
		t.Errorf("phase 1: %d rotations during the load, want >= 3", rot1)
	}
	for _, n := range nodes {
		if g := n.generation(t, cert); g != "2" {
			t.Errorf("%s: served by config generation %q after the reload, want 2", n.name, g)
		}
		if len(n.logEntries("reusing the running ticket-key source of a previous config")) != 1 {
			t.Errorf("%s: the reload did not keep the running Source", n.name)
		}
		if ch := n.logEntries("session ticket keys changed"); len(ch) < 3 {
			t.Errorf("%s: %d key changes logged in phase 1, want >= 3", n.name, len(ch))
		}
	}
	if t.Failed() {
		return
	}

	// Phase 2: Vault stopped 3s before an activation.
	var activation time.Time
	waitFor(t, 2*caddyPeriod, "a next activation at least 3s ahead", func() bool {
		activation = nextActivation(t, s, caddyKeyring)
		return time.Until(activation) >= 3*time.Second
	})
	waitFor(t, caddyPeriod, "3s before the activation", func() bool { return time.Until(activation) <= 3*time.Second })
	s.Stop()
	stoppedAt := time.Now()
	t.Logf("phase 2: vault stopped %s before the activation at %s", activation.Sub(stoppedAt).Round(time.Millisecond), activation.Format(time.RFC3339))
	res2 := caddyLoad(t, addrs, cert, time.Until(activation)+3*time.Second, 2)
	checkAllResumed(t, "phase 2 (vault down across an activation)", res2, 100, nil)
	for name, r := range res2 {
		if after := r.Between(activation, activation.Add(3*time.Second)); after.Offered < 20 || after.Resumed != after.Offered {
			t.Errorf("phase 2 %s: after the activation %d of %d offered tickets resumed, want all (and >= 20)", name, after.Resumed, after.Offered)
		}
	}
	for _, n := range nodes {
		switched := false
		for _, at := range n.logEntries("session ticket keys changed") {
			if !at.Before(activation) && at.Before(activation.Add(2*time.Second)) {
				switched = true
			}
		}
		if !switched {
			t.Errorf("%s: no key change logged within 2s after the activation at %s (vault down)", n.name, activation.Format(time.RFC3339))
		}
	}

	// Phase 3: Vault back; every Source recovers by itself.
	s.Restart(t)
	restartedAt := time.Now()
	t.Logf("phase 3: vault back after %s", restartedAt.Sub(stoppedAt).Round(time.Millisecond))
	// A good read after the restart shows as "recovered" after failed reads, or as a changed window (the
	// window changes every period). The Agent node may see no failure at all: Vault Agent retries a
	// proxied request while Vault is down, so its read waits there and succeeds after the restart.
	waitFor(t, 30*time.Second, "every node to read Vault again", func() bool {
		for _, n := range nodes {
			recovered := false
			for _, msg := range []string{"ticket-key window refresh recovered", "ticket-key window changed"} {
				for _, at := range n.logEntries(msg) {
					recovered = recovered || at.After(restartedAt)
				}
			}
			if !recovered {
				return false
			}
		}
		return true
	})
	t.Logf("phase 3: every node recovered %s after the restart", time.Since(restartedAt).Round(time.Millisecond))
	for _, n := range nodes {
		// publish_ahead covers one period after the activation; a slower restart exhausts the schedule
		// and the node encrypts with a node-local key meanwhile (as the Go client does).
		if ex := n.logEntries("ticket-key schedule exhausted"); len(ex) > 0 {
			t.Logf("phase 3: %s used a node-local key for a while (the restart outlasted the published schedule)", n.name)
		}
	}
	// Tickets issued under a node-local key resume only on their node: one short round replaces them
	// with tickets of the shared window before the measured load.
	for name, r := range caddyLoad(t, addrs, cert, 2*time.Second, 4) {
		if r.HandshakeFailures != 0 || r.RequestFailures != 0 {
			t.Errorf("phase 3 warm-up %s: failed connections: %v", name, firstFailures(r, 5))
		}
	}
	res3 := caddyLoad(t, addrs, cert, caddyPeriod+time.Second, 3)
	checkAllResumed(t, "phase 3 (recovered)", res3, 100, nil)

	// No key material in any Caddy log.
	var logs []string
	for _, n := range nodes {
		logs = append(logs, n.log)
	}
	watch.noKeyMaterial(t, logs...)
	for _, n := range nodes {
		n.stop()
	}

	// Phase 4: the same load against Caddy's built-in distributed key source.
	shared := t.TempDir()
	var dnodes []*caddyNode
	var daddrs []string
	for i := 0; i < 3; i++ {
		n := startCaddyNode(t, bin, fmt.Sprintf("caddy-distributed-%d", i), cert, map[string]any{
			"rotation_interval": caddyPeriod.String(),
			"key_source":        map[string]any{"provider": "distributed", "storage": map[string]any{"module": "file_system", "root": shared}},
		})
		dnodes = append(dnodes, n)
		daddrs = append(daddrs, n.addr)
	}
	stek := filepath.Join(shared, "stek", "stek.bin")
	var (
		rmu       sync.Mutex
		rotations []time.Time
	)
	pollCtx, stopPoll := context.WithCancel(context.Background())
	pollDone := make(chan struct{})
	go func() { // count rotations by the shared key file's modification time (its content is never read)
		defer close(pollDone)
		var last time.Time
		for pollCtx.Err() == nil {
			if fi, err := os.Stat(stek); err == nil && !fi.ModTime().Equal(last) {
				if !last.IsZero() {
					rmu.Lock()
					rotations = append(rotations, time.Now())
					rmu.Unlock()
				}
				last = fi.ModTime()
			}
			sleepCtx(pollCtx, 50*time.Millisecond)
		}
	}()
	dstart := time.Now()
	res4 := caddyLoad(t, daddrs, cert, phase1, 1)
	dend := time.Now()
	stopPoll()
	<-pollDone
	rmu.Lock()
	rot4 := 0
	for _, at := range rotations {
		if at.After(dstart) && !at.After(dend) {
			rot4++
		}
	}
	rmu.Unlock()
	for name, r := range res4 {
		t.Logf("distributed %s: %s", name, r)
		if r.Offered < 300 || r.HandshakeFailures != 0 {
			t.Errorf("distributed %s: the load did not run properly: %s", name, r)
		}
	}
	if rot4 < 2 {
		t.Errorf("distributed: %d rotations of the shared key file during the load, want >= 2", rot4)
	}

	t.Logf("caddy-compare: same load (3 Caddy nodes, random node per connection, %s, rotation every %s):", phase1.Round(time.Second), caddyPeriod)
	var rows []comparisonRow
	for _, v := range []string{"TLS1.2", "TLS1.3"} {
		rows = append(rows, comparisonRow{"ticketkeys", v, rot1, res1[v]}, comparisonRow{"distributed", v, rot4, res4[v]})
	}
	for _, r := range rows {
		t.Log(r)
	}
	if out := os.Getenv("CADDY_COMPARE_OUT"); out != "" {
		writeComparison(t, out, phase1, rows)
	}
}

// writeComparison writes the side-by-side table as markdown (make caddy-compare).
func writeComparison(t *testing.T, path string, d time.Duration, rows []comparisonRow) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "# Caddy session-ticket key sources: ticketkeys vs distributed\n\n")
	fmt.Fprintf(&b, "Same load against 3 Caddy nodes on 127.0.0.1 (a random node per connection, TLS 1.2 and 1.3 at once), %s, a rotation every %s; "+
		"the ticketkeys run also reloads every node mid-run. Written by TestCaddyTicketkeys (e2e/caddy_test.go) on %s.\n\n",
		d.Round(time.Second), caddyPeriod, time.Now().UTC().Format(time.RFC3339))
	b.WriteString("| source | TLS | rotations | offered | resumed | rate | failed | failed per rotation | failed handshakes |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		failed := r.r.Offered - r.r.Resumed
		per := "n/a"
		if r.rotations > 0 {
			per = fmt.Sprintf("%.1f", float64(failed)/float64(r.rotations))
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %.4f | %d | %s | %d |\n", r.source, r.version, r.rotations, r.r.Offered, r.r.Resumed, r.r.ResumeRate(), failed, per, r.r.HandshakeFailures)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("caddy-compare: table written to %s", path)
}

// TestCutByListenerHandover: only a dropped TCP connection during the handshake is excused as Caddy's
// listener hand-over; TLS failures and dial errors are not.
func TestCutByListenerHandover(t *testing.T) {
	for _, tc := range []struct {
		err  string
		want bool
	}{
		{"handshake: write tcp 127.0.0.1:58326->127.0.0.1:30596: write: connection reset by peer", true},
		{"handshake: read tcp 127.0.0.1:58326->127.0.0.1:30596: read: connection reset by peer", true},
		{"handshake: write tcp 127.0.0.1:58326->127.0.0.1:30596: write: broken pipe", true},
		{"handshake: EOF", true},
		{"handshake: remote error: tls: internal error", false},
		{"handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority", false},
		{"handshake: context deadline exceeded", false},
		{"dial: dial tcp 127.0.0.1:30596: connect: connection refused", false},
		{"", false},
	} {
		if got := cutByListenerHandover(tc.err); got != tc.want {
			t.Errorf("cutByListenerHandover(%q) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
