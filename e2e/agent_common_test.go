//go:build e2e

package e2e

// Shared helpers of the Vault Agent tests (agent_nginx_test.go, agent_haproxy_test.go,
// agent_envoy_test.go): a keyring with a short rotation period, one AppRole login per node, an Agent per
// node rendering the configuration from bootstrap/agent, a change script the Agent runs, and a watcher that
// records the engine's window ids (never material) while a test runs.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
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
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// The e2e keyrings rotate every agentPeriod and publish the next key one period ahead, and keep previous
// keys for agentRetain, so a window holds at most current + next + 2 previous = 4 keys (nginx's 4 slots).
const (
	agentPeriod = 10 * time.Second
	agentRetain = 20 * time.Second
)

// createKeyring creates keyring name with the e2e periods.
func createKeyring(t *testing.T, s *vaulttest.Server, name string) {
	t.Helper()
	_, err := s.Client.Logical().Write("ticketkeys/keys/"+name, map[string]any{
		"rotation_period": agentPeriod.String(),
		"publish_ahead":   agentPeriod.String(),
		"retain":          agentRetain.String(),
	})
	if err != nil {
		t.Fatalf("create keyring %s: %v", name, err)
	}
}

// engineKey is one key of a window as the engine returns it.
type engineKey struct {
	ID, State string
	Raw       []byte
}

// engineWindow is one read of a keyring.
type engineWindow struct {
	Keys    []engineKey
	HAProxy []string // tls_ticket_keys (haproxy format only)
}

// IDs joins the key ids in response order: equal strings mean the same window.
func (w engineWindow) IDs() string {
	ids := make([]string, len(w.Keys))
	for i, k := range w.Keys {
		ids[i] = k.ID
	}
	return strings.Join(ids, ",")
}

// readWindow reads keyring name in format through the root token.
func readWindow(t *testing.T, s *vaulttest.Server, name, format string) engineWindow {
	t.Helper()
	w, err := readWindowErr(s, name, format)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func readWindowErr(s *vaulttest.Server, name, format string) (engineWindow, error) {
	sec, err := s.Client.Logical().ReadWithData("ticketkeys/keys/"+name, map[string][]string{"format": {format}})
	if err != nil || sec == nil {
		return engineWindow{}, fmt.Errorf("read keyring %s format %s: %v (nil: %t)", name, format, err, sec == nil)
	}
	var w engineWindow
	keys, _ := sec.Data["keys"].([]any)
	for _, k := range keys {
		m, _ := k.(map[string]any)
		id, _ := m["id"].(string)
		state, _ := m["state"].(string)
		b64, _ := m["ticket_key"].(string)
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return w, fmt.Errorf("keyring %s format %s: key %s: ticket_key is not base64", name, format, id)
		}
		w.Keys = append(w.Keys, engineKey{ID: id, State: state, Raw: raw})
	}
	if lines, ok := sec.Data["tls_ticket_keys"].([]any); ok {
		for _, l := range lines {
			s, _ := l.(string)
			w.HAProxy = append(w.HAProxy, s)
		}
	}
	if len(w.Keys) == 0 {
		return w, fmt.Errorf("keyring %s format %s: no keys in the response", name, format)
	}
	return w, nil
}

// windowWatch polls the engine every 250 ms and records each distinct window (ids only).
type windowWatch struct {
	poller
	mu      sync.Mutex
	secrets map[string][]byte // key id -> material, for leak checks only; never logged
	windows []string
	times   []time.Time
}

func watchWindows(t *testing.T, s *vaulttest.Server, name string) *windowWatch {
	return watchWindowsFormat(t, s, name, "nginx")
}

// watchWindowsFormat is watchWindows reading the keyring in format, keeping every key's material (in
// memory only) for noKeyMaterial.
func watchWindowsFormat(t *testing.T, s *vaulttest.Server, name, format string) *windowWatch {
	w := &windowWatch{secrets: map[string][]byte{}}
	w.every(t, 250*time.Millisecond, func() {
		win, err := readWindowErr(s, name, format)
		if err != nil {
			return
		}
		ids := win.IDs()
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, k := range win.Keys {
			w.secrets[k.ID] = k.Raw
		}
		if len(w.windows) == 0 || w.windows[len(w.windows)-1] != ids {
			w.windows = append(w.windows, ids)
			w.times = append(w.times, time.Now())
		}
	})
	return w
}

// Windows returns the distinct windows seen so far and when each was first seen.
func (w *windowWatch) Windows() ([]string, []time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.windows...), append([]time.Time(nil), w.times...)
}

// noKeyMaterial fails the test if any file in paths holds material of a key the watcher saw: the whole key
// or its secret part (bytes 16..) in base64, in hex, or raw. Key names (ids) are public and allowed.
func (w *windowWatch) noKeyMaterial(t *testing.T, paths ...string) {
	t.Helper()
	found, err := w.leaks(paths...)
	if err != nil {
		t.Errorf("leak check: %v", err)
	}
	for _, f := range found {
		t.Errorf("leak check: %s", f)
	}
	w.mu.Lock()
	n := len(w.secrets)
	w.mu.Unlock()
	t.Logf("leak check: %d file(s) hold no material of the %d keys seen", len(paths), n)
}

// leaks lists "file: key id" for each file in paths holding material of a key the watcher saw.
func (w *windowWatch) leaks(paths ...string) ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var found []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return found, err
		}
		for id, raw := range w.secrets {
			secret := raw[16:]
			for _, needle := range [][]byte{
				[]byte(base64.StdEncoding.EncodeToString(raw)),
				[]byte(base64.StdEncoding.EncodeToString(secret)),
				[]byte(hex.EncodeToString(secret)),
				secret,
			} {
				if bytes.Contains(b, needle) {
					found = append(found, fmt.Sprintf("%s contains material of key %s", filepath.Base(p), id))
					break
				}
			}
		}
	}
	return found, nil
}

// Rotations counts the distinct current keys seen, minus one.
func (w *windowWatch) Rotations() int {
	ws, _ := w.Windows()
	seen := map[string]bool{}
	for _, ids := range ws {
		seen[strings.SplitN(ids, ",", 2)[0]] = true
	}
	return len(seen) - 1
}

// appRoleFiles sets up an AppRole role for a node with the policy from bootstrap/agent and writes its
// role_id and secret_id files into dir.
func appRoleFiles(t *testing.T, s *vaulttest.Server, keyring, role, dir string) (roleIDFile, secretIDFile string) {
	t.Helper()
	return appRoleFilesFor(t, s, []string{keyring}, role, dir)
}

// appRoleFilesFor is appRoleFiles for a node that reads several keyrings (one trust domain each): the
// role carries each keyring's reader policy from bootstrap/agent, as node-approle.sh run once per keyring.
func appRoleFilesFor(t *testing.T, s *vaulttest.Server, keyrings []string, role, dir string) (roleIDFile, secretIDFile string) {
	t.Helper()
	var policies []string
	for _, keyring := range keyrings {
		pol, err := agent.Policy(agent.Params{Keyring: keyring})
		if err != nil {
			t.Fatal(err)
		}
		policyName := "ticketkeys-" + keyring
		s.WritePolicy(t, policyName, pol)
		policies = append(policies, policyName)
	}
	roleID, secretID := s.EnableAppRole(t, role, policies...)
	roleIDFile = filepath.Join(dir, "role-id")
	secretIDFile = filepath.Join(dir, "secret-id")
	for p, v := range map[string]string{roleIDFile: roleID, secretIDFile: secretID} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return roleIDFile, secretIDFile
}

// agentNode is one server node's Vault Agent and the directory it renders into.
type agentNode struct {
	Name    string
	Dir     string // rendered files, change script, change log
	Config  string // the Agent configuration (HCL)
	Agent   *vaulttest.Process
	Files   []string // the rendered files, in template order
	Changes string   // change log: one line per run of the change script
	Script  string   // the change script Agent runs after a change
	OldLogs []string // logs of Agents replaced by restartAgent
}

// AgentLogs returns the log files of every Agent this node has run.
func (n *agentNode) AgentLogs() []string {
	return append(append([]string(nil), n.OldLogs...), n.Agent.LogPath)
}

// startAgentNode renders the Agent configuration for kind with package bootstrap/agent (the same code
// that produced bootstrap/agent/examples), pointing the command at a change script in the node's
// directory, and starts a real Vault Agent with it. action is the script's body after it logs the run
// (e.g. `kill -HUP 1234`); it can be replaced later with setAction. extraHCL is appended to the config.
func startAgentNode(t *testing.T, s *vaulttest.Server, kind agent.Kind, keyring, name, action, extraHCL string) *agentNode {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &agentNode{Name: name, Dir: dir, Changes: filepath.Join(dir, "changes.log"), Script: filepath.Join(dir, "on-change.sh")}
	n.setAction(t, action)
	roleIDFile, secretIDFile := appRoleFiles(t, s, keyring, "node-"+keyring+"-"+name, dir)
	p := agent.Params{
		VaultAddr:    s.Addr,
		Keyring:      keyring,
		RoleIDFile:   roleIDFile,
		SecretIDFile: secretIDFile,
		Dir:          dir,
		Command:      []string{"/bin/sh", n.Script},
	}
	if kind == agent.Envoy {
		p.Command = []string{} // Envoy watches the file; the test counts rewrites by inode instead.
		// The Envoy node also exercises the optional token file sink (the others run without one).
		p.TokenSink = filepath.Join(dir, "agent-token")
	}
	cfg, err := agent.Render(kind, p)
	if err != nil {
		t.Fatal(err)
	}
	n.Config = cfg + extraHCL
	if n.Files, err = agent.Files(kind, p); err != nil {
		t.Fatal(err)
	}
	n.Agent = vaulttest.StartAgent(t, s, n.Config)
	n.Agent.WaitFor(t, 60*time.Second, "first render of "+name, func() bool {
		for _, f := range n.Files {
			if _, err := os.Stat(f); err != nil {
				return false
			}
		}
		return true
	})
	return n
}

// restartAgent stops the node's Agent by PID and starts a new one with the same configuration plus extraHCL.
func (n *agentNode) restartAgent(t *testing.T, s *vaulttest.Server, extraHCL string) {
	t.Helper()
	n.Agent.Stop()
	n.OldLogs = append(n.OldLogs, n.Agent.LogPath)
	n.Agent = vaulttest.StartAgent(t, s, n.Config+extraHCL)
}

// setAction rewrites the change script atomically (the Agent may be running it).
func (n *agentNode) setAction(t *testing.T, action string) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\n# Run by Vault Agent after the rendered files change.\ndate +%%s.%%N >> %s\n%s\n", n.Changes, action)
	tmp := n.Script + ".tmp"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, n.Script); err != nil {
		t.Fatal(err)
	}
}

// changeTimes returns when the change script ran.
func (n *agentNode) changeTimes() []time.Time {
	b, err := os.ReadFile(n.Changes)
	if err != nil {
		return nil
	}
	var out []time.Time
	for _, l := range strings.Fields(string(b)) {
		var sec, nsec int64
		if _, err := fmt.Sscanf(strings.Replace(l, ".", " ", 1), "%d %d", &sec, &nsec); err == nil {
			out = append(out, time.Unix(sec, nsec))
		}
	}
	return out
}

// sentinelHCL is a template that renders the time on every render pass of the node's Agent (it reads
// the same secret, so it renders in the same pass as the real templates): its file changing proves the
// Agent has completed a pass.
// format must be the node's own format: consul-template keys a secret dependency by its path without the
// query, so a second format in one Agent would share (and corrupt) the node's response.
func sentinelHCL(keyring, format, path string) string {
	return fmt.Sprintf(`
template {
  destination = %q
  contents    = "{{ with secret \"ticketkeys/keys/%s?format=%s\" }}{{ timestamp \"2006-01-02T15:04:05.000000000Z07:00\" }}{{ end }}"
}
`, path, keyring, format)
}

// fileStamp is what tells a rewrite apart: the Agent writes by rename, so a rewrite changes the inode.
type fileStamp struct {
	Inode uint64
	MTime time.Time
	Mode  os.FileMode
	Size  int64
}

func stamp(t *testing.T, path string) fileStamp {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fileStamp{Inode: st.Ino, MTime: fi.ModTime(), Mode: fi.Mode().Perm(), Size: fi.Size()}
}

// waitNextChange waits until the node's change script has run more than `after` times.
func (n *agentNode) waitNextChange(t *testing.T, after int, timeout time.Duration) {
	t.Helper()
	n.Agent.WaitFor(t, timeout, fmt.Sprintf("change script run %d on %s", after+1, n.Name), func() bool {
		return len(n.changeTimes()) > after
	})
}

// testBinary is a command of this repository, built into a temp dir once per test binary.
type testBinary struct {
	pkg  string // import path
	once sync.Once
	path string
	err  error
}

// get builds the command on first use and returns its path.
func (b *testBinary) get(t *testing.T) string {
	t.Helper()
	b.once.Do(func() {
		name := filepath.Base(b.pkg)
		dir, err := os.MkdirTemp("", name+"-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", b.path, b.pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var pushCommand = &testBinary{pkg: "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/cmd/ticketkeys-haproxy-push"}

// pushBinary returns cmd/ticketkeys-haproxy-push, built once per test binary.
func pushBinary(t *testing.T) string { return pushCommand.get(t) }

// probeResult records what happened to one long-lived keep-alive connection.
type probeResult struct {
	Addr     string
	Requests int       // successful requests
	Failures []string  // one entry per failed request: time and error (no key material involved)
	Reopened int       // connections opened after the first
	Started  time.Time // first connection
}

// keepAliveProbe sends GET path on one TLS keep-alive connection to addr every interval until ctx ends,
// reconnecting after a failure, and records every failure. Bounded by ctx and by maxRequests.
func keepAliveProbe(ctx context.Context, addr string, cfg *tls.Config, path string, interval time.Duration, maxRequests int) probeResult {
	res := probeResult{Addr: addr, Started: time.Now()}
	var conn *tls.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for i := 0; i < maxRequests && ctx.Err() == nil; i++ {
		if conn == nil {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			if err != nil {
				res.Failures = append(res.Failures, fmt.Sprintf("%s dial: %v", time.Now().Format("15:04:05.000"), err))
				sleepCtx(ctx, interval)
				continue
			}
			if i > 0 {
				res.Reopened++
			}
			conn, br = c, bufio.NewReader(c)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		err := doRequest(conn, br, addr, path)
		if err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("%s request: %v", time.Now().Format("15:04:05.000"), err))
			conn.Close()
			conn = nil
		} else {
			res.Requests++
		}
		sleepCtx(ctx, interval)
	}
	return res
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// doRequest sends one HTTP/1.1 keep-alive GET and reads the whole response.
func doRequest(conn *tls.Conn, br *bufio.Reader, host, path string) error {
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return err
	}
	req, _ := http.NewRequest("GET", path, nil)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if resp.Close {
		return fmt.Errorf("server asked to close the connection (Connection: close)")
	}
	return nil
}

// keyID is the hex of a key's 16-byte name.
func keyID(raw []byte) string {
	if len(raw) < 16 {
		return "short"
	}
	return hex.EncodeToString(raw[:16])
}

// checkAgentRender runs one real Vault Agent of kind against the real engine on a new keyring, read in
// the format of the same name as the templates read it: check proves the rendered files against the
// engine's window, then checkRewriteOnlyOnChange proves they are rewritten (and the command run, when
// hasCommand) only when the window changes, then check runs again; last, the Agent's logs must hold no
// key material. It returns the node and the stopped watcher for the caller's own checks. server is
// Vault or OpenBao: the Agent is the server's own (`vault agent`, `bao agent`).
func checkAgentRender(t *testing.T, server vaulttest.Kind, kind agent.Kind, keyring, nodeName string, hasCommand bool,
	check func(t *testing.T, s *vaulttest.Server, n *agentNode, keyring string)) (*agentNode, *windowWatch) {
	t.Helper()
	s := vaulttest.Start(t, vaulttest.WithServer(server))
	createKeyring(t, s, keyring)
	watch := watchWindowsFormat(t, s, keyring, string(kind))
	n := startAgentNode(t, s, kind, keyring, nodeName, ":", "")
	check(t, s, n, keyring)
	checkRewriteOnlyOnChange(t, s, n, keyring, string(kind), hasCommand)
	check(t, s, n, keyring)
	watch.Stop()
	watch.noKeyMaterial(t, n.AgentLogs()...)
	return n, watch
}

// checkRewriteOnlyOnChange proves, with the node's real Agent, that (1) a new Agent process rendering the
// same window rewrites no file and runs no command (same inode, mtime and mode of every file; the change
// log does not grow), and (2) the next window change rewrites the files once and runs the command once.
// A re-read of an unchanged window is exactly what a restart does: the Agent fetches and renders again.
func checkRewriteOnlyOnChange(t *testing.T, s *vaulttest.Server, n *agentNode, keyring, format string, hasCommand bool) {
	t.Helper()
	sentinel := filepath.Join(n.Dir, "sentinel")
	for attempt := 1; ; attempt++ {
		// Start right after a window change, so the restart falls inside one window.
		first := stamp(t, n.Files[0]).Inode
		n.Agent.WaitFor(t, 2*agentPeriod+10*time.Second, "a window change on "+n.Name, func() bool {
			return stamp(t, n.Files[0]).Inode != first
		})
		time.Sleep(500 * time.Millisecond) // the rest of the same render pass
		before := readWindow(t, s, keyring, format).IDs()
		stamps := map[string]fileStamp{}
		for _, f := range n.Files {
			stamps[f] = stamp(t, f)
		}
		runs := len(n.changeTimes())
		os.Remove(sentinel)
		n.restartAgent(t, s, sentinelHCL(keyring, format, sentinel))
		n.Agent.WaitFor(t, 30*time.Second, "a render pass of the restarted Agent", func() bool {
			_, err := os.Stat(sentinel)
			return err == nil
		})
		time.Sleep(300 * time.Millisecond) // commands run after the pass
		after := readWindow(t, s, keyring, format).IDs()
		if after != before {
			if attempt == 3 {
				t.Fatalf("the window changed during each of 3 restart attempts; cannot test a same-window re-render")
			}
			t.Logf("window changed during the restart (attempt %d); retrying", attempt)
			continue
		}
		for _, f := range n.Files {
			if got := stamp(t, f); got != stamps[f] {
				t.Fatalf("%s was rewritten by a re-render of the same window: %+v -> %+v", filepath.Base(f), stamps[f], got)
			}
		}
		if hasCommand {
			if got := len(n.changeTimes()); got != runs {
				t.Fatalf("the command ran %d time(s) on a re-render of the same window", got-runs)
			}
		}
		t.Logf("%s: restarted Agent re-rendered window %s: no file rewritten, no command run", n.Name, shortIDs(before))

		// The next change: one rewrite, one command run, then quiet until the window after.
		ino := stamp(t, n.Files[0]).Inode
		changes := 0
		deadline := time.Now().Add(2*agentPeriod + 10*time.Second)
		var changedAt time.Time
		for time.Now().Before(deadline) {
			if cur := stamp(t, n.Files[0]).Inode; cur != ino {
				changes++
				ino = cur
				if changedAt.IsZero() {
					changedAt = time.Now()
					deadline = changedAt.Add(3 * time.Second)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if changes != 1 {
			t.Fatalf("%s: %d rewrites of %s around one window change, want 1", n.Name, changes, filepath.Base(n.Files[0]))
		}
		if hasCommand {
			if got := len(n.changeTimes()); got != runs+1 {
				t.Fatalf("%s: the command ran %d time(s) for one window change, want 1", n.Name, got-runs)
			}
		}
		t.Logf("%s: next window change rewrote %s once and ran the command %s", n.Name, filepath.Base(n.Files[0]),
			map[bool]string{true: "once", false: "(none configured)"}[hasCommand])
		return
	}
}

// shortIDs abbreviates a window's ids for logs.
func shortIDs(ids string) string {
	var out []string
	for _, id := range strings.Split(ids, ",") {
		if len(id) > 8 {
			id = id[:8]
		}
		out = append(out, id)
	}
	return strings.Join(out, ",")
}

// fleetLoad is the resumption load the server-fleet tests run: one client per
// TLS version (1.2 and 1.3) at the same time, each picking a random node for
// every connection, bounded by loadFor and by a connection count.
type fleetLoad struct {
	mu      sync.Mutex
	results map[string]resumption.Result
	errs    []error
}

// startFleetLoad starts the load on wg; read the results after wg.Wait.
func startFleetLoad(ctx context.Context, wg *sync.WaitGroup, addrs []string, pool *x509.CertPool, loadFor time.Duration, seed int64) *fleetLoad {
	fl := &fleetLoad{results: map[string]resumption.Result{}}
	for _, v := range []struct {
		name string
		ver  uint16
	}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := resumption.Run(ctx, resumption.Config{
				Addrs: addrs, ServerName: testcert.ServerName, RootCAs: pool,
				MinVersion: v.ver, MaxVersion: v.ver,
				Users: 16, Concurrency: 2, MaxConnections: 20000, MaxDuration: loadFor,
				Interval: 20 * time.Millisecond, Seed: int64(v.ver) + seed,
			})
			fl.mu.Lock()
			defer fl.mu.Unlock()
			fl.results[v.name] = r
			if err != nil {
				fl.errs = append(fl.errs, fmt.Errorf("%s: %w", v.name, err))
			}
		}()
	}
	return fl
}

// startFleetKeyring starts Vault with keyring at the e2e periods for a fleet test. Readers re-read at
// least every 5 s (max_read_ttl), which bounds the emergency rotation the fleet tests measure at the end.
func startFleetKeyring(t *testing.T, keyring string) *vaulttest.Server {
	t.Helper()
	s := vaulttest.Start(t)
	createKeyring(t, s, keyring)
	if _, err := s.Client.Logical().Write("ticketkeys/config", map[string]any{"max_read_ttl": "5s"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// runRotationLoad runs the cross-node resumption load (seed) on addrs for 32 s, through at least two
// rotations of the e2e keyrings, while alongside starts the test's own probes on the same context (which
// ends 40 s on) and wait group. Then it cancels the context, waits for everything, stops watch and checks
// that the load resumed through the rotations watch saw.
func runRotationLoad(t *testing.T, watch *windowWatch, addrs []string, pool *x509.CertPool, seed int64,
	alongside func(ctx context.Context, wg *sync.WaitGroup)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	const loadFor = 32 * time.Second
	var wg sync.WaitGroup
	load := startFleetLoad(ctx, &wg, addrs, pool, loadFor, seed)
	alongside(ctx, &wg)
	time.Sleep(loadFor + time.Second)
	cancel()
	wg.Wait()
	watch.Stop()
	load.checkResumedThroughRotations(t, watch)
}

// checkResumedThroughRotations fails the test unless the engine rotated at
// least twice during the load and every TLS version resumed at least 0.999 of
// a meaningful number of offered tickets.
func (fl *fleetLoad) checkResumedThroughRotations(t *testing.T, watch *windowWatch) {
	t.Helper()
	for _, err := range fl.errs {
		t.Error(err)
	}
	rot := watch.Rotations()
	windows, _ := watch.Windows()
	t.Logf("engine: %d rotations, %d distinct windows during the run", rot, len(windows))
	if rot < 2 {
		t.Errorf("only %d rotations during the run, want >= 2", rot)
	}
	for name, r := range fl.results {
		t.Logf("%s: %s", name, r)
		if r.Offered < 200 {
			t.Errorf("%s: only %d tickets offered; the load did not run", name, r.Offered)
		}
		if rate := r.ResumeRate(); rate < 0.999 {
			t.Errorf("%s: resume rate %.4f (%d of %d), want >= 0.999", name, rate, r.Resumed, r.Offered)
		}
	}
}
