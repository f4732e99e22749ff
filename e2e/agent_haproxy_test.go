//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/resumption"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// haproxyConf is a node's haproxy.cfg: TLS on 127.0.0.1:port with the Agent's tls-ticket-keys file and
// an admin socket for the push command.
func haproxyConf(port int, combinedPEM, keysFile, socket string) string {
	return fmt.Sprintf(`
global
  stats socket %s level admin
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout http-keep-alive 120s
  timeout server 30s
frontend fe
  bind 127.0.0.1:%d ssl crt %s tls-ticket-keys %s ssl-min-ver TLSv1.2
  http-request return status 200 content-type text/plain string "ok"
`, socket, port, combinedPEM, keysFile)
}

// checkHAProxyFile proves the rendered tls-ticket-keys file is exactly the engine's tls_ticket_keys
// lines (previous, current, next), newline-terminated, mode 0600, retrying when the window moves.
func checkHAProxyFile(t *testing.T, s *vaulttest.Server, n *agentNode, keyring string) []string {
	t.Helper()
	for attempt := 1; attempt <= 5; attempt++ {
		w := readWindow(t, s, keyring, "haproxy")
		got, err := os.ReadFile(n.Files[0])
		if err != nil {
			t.Fatal(err)
		}
		if st := stamp(t, n.Files[0]); st.Mode != 0o600 {
			t.Fatalf("%s: mode %v, want 0600", filepath.Base(n.Files[0]), st.Mode)
		}
		if len(w.HAProxy) != 3 {
			t.Fatalf("engine returned %d tls_ticket_keys lines, want 3", len(w.HAProxy))
		}
		if string(got) == strings.Join(w.HAProxy, "\n")+"\n" {
			var ids []string
			for _, l := range w.HAProxy {
				raw, _ := base64.StdEncoding.DecodeString(l)
				ids = append(ids, keyID(raw)[:8])
			}
			t.Logf("%s: file is the engine's 3 lines exactly, ids %s (previous, current, next)", n.Name, strings.Join(ids, ","))
			return w.HAProxy
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s: rendered tls-ticket-keys file does not match the engine after 5 attempts", n.Name)
	return nil
}

// TestAgentHAProxyRender runs one real Vault Agent with the HAProxy template against the real engine and
// proves the file's exact bytes and mode, and that it is rewritten (and the push command run) only when the
// window changes. It runs on every server side by side (vaulttest.ForEachServerParallel: an Agent render
// waits on the schedule, not the CPU): Vault Agent and OpenBao's `bao agent`.
func TestAgentHAProxyRender(t *testing.T) {
	vaulttest.ForEachServerParallel(t, func(t *testing.T, server vaulttest.Kind) {
		checkAgentRender(t, server, agent.HAProxy, "haproxy-render", "render", true, func(t *testing.T, s *vaulttest.Server, n *agentNode, keyring string) {
			t.Helper()
			checkHAProxyFile(t, s, n, keyring)
		})
	})
}

var ringLineRE = regexp.MustCompile(`(?m)^\d+\.\d+ (\S+)$`)

// haproxyRing reads HAProxy's ring for ref over the admin socket (base64 keys, oldest first).
func haproxyRing(t *testing.T, socket, ref string) []string {
	t.Helper()
	out, err := servertest.ExecSocket(socket, "show tls-keys "+ref)
	if err != nil {
		t.Fatal(err)
	}
	var ring []string
	for _, m := range ringLineRE.FindAllStringSubmatch(out, -1) {
		ring = append(ring, m[1])
	}
	return ring
}

// TestAgentHAProxyThreeNodes runs three HAProxy instances (Debian's package), each fed by its own Vault
// Agent whose command pushes the window over the admin socket, behind a client that picks a random
// instance per connection. It proves at least 0.999 of offered tickets resume through at least two real
// rotations in TLS 1.2 and 1.3, that no instance is reloaded (same master and worker PIDs), that a
// keep-alive connection to every instance survives every rotation, and that each ring ends equal to its
// file and to the engine's window. Key material never appears in the push command's output.
func TestAgentHAProxyThreeNodes(t *testing.T) {
	const keyring = "haproxy-e2e"
	s := startFleetKeyring(t, keyring)
	cert := testcert.New(t, testcert.ECDSAP256)
	combined := cert.WriteCombinedPEM(t.TempDir())
	push := pushBinary(t)

	var nodes []*agentNode
	var procs []*servertest.Proc
	var addrs, sockets, pushLogs []string
	for i := 0; i < 3; i++ {
		n := startAgentNode(t, s, agent.HAProxy, keyring, fmt.Sprintf("haproxy%d", i), ":", "")
		socket := filepath.Join(n.Dir, "admin.sock")
		port := servertest.FreePort(t)
		p := servertest.StartHAProxy(t, haproxyConf(port, combined, n.Files[0], socket))
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p.WaitListening(t, addr)
		pushLog := filepath.Join(n.Dir, "push.log")
		// The command bootstrap/agent renders by default, with this node's socket and file.
		n.setAction(t, fmt.Sprintf("exec %s -socket %s -file %s >> %s 2>&1", push, socket, n.Files[0], pushLog))
		// Cover a change rendered before the command pointed at this HAProxy.
		if out, err := exec.Command(push, "-socket", socket, "-file", n.Files[0]).CombinedOutput(); err != nil {
			t.Fatalf("initial push to %s: %v\n%s", n.Name, err, out)
		}
		nodes, procs = append(nodes, n), append(procs, p)
		addrs, sockets, pushLogs = append(addrs, addr), append(sockets, socket), append(pushLogs, pushLog)
	}
	type pids struct {
		master  int
		workers []int
	}
	var before []pids
	runsBefore := make([]int, 3)
	for i, p := range procs {
		before = append(before, pids{p.MasterPID, p.WorkerPIDs()})
		runsBefore[i] = len(nodes[i].changeTimes())
	}
	watch := watchWindowsFormat(t, s, keyring, "haproxy")

	probes := make([]probeResult, 3)
	runRotationLoad(t, watch, addrs, cert.Pool, 7, func(ctx context.Context, wg *sync.WaitGroup) {
		for i := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				probes[i] = keepAliveProbe(ctx, addrs[i], cert.ClientConfig(), "/", 500*time.Millisecond, 200)
			}()
		}
	})
	rot := watch.Rotations()
	windows, _ := watch.Windows()
	for i, p := range procs {
		if p.MasterPID != before[i].master || !slices.Equal(p.WorkerPIDs(), before[i].workers) {
			t.Errorf("%s was reloaded or restarted: master %d -> %d, workers %v -> %v", nodes[i].Name,
				before[i].master, p.MasterPID, before[i].workers, p.WorkerPIDs())
		}
		pr := probes[i]
		t.Logf("%s keep-alive probe: %d requests ok, %d failed, %d reconnects", nodes[i].Name, pr.Requests, len(pr.Failures), pr.Reopened)
		if len(pr.Failures) != 0 || pr.Reopened != 0 || pr.Requests < 40 {
			t.Errorf("%s: the long-lived connection did not survive: %d ok, failures %v, %d reconnects", nodes[i].Name, pr.Requests, pr.Failures, pr.Reopened)
		}
		runs := len(nodes[i].changeTimes()) - runsBefore[i]
		t.Logf("%s: Agent ran the push command %d time(s) during the run", nodes[i].Name, runs)
		if runs < 2 || runs > len(windows) {
			t.Errorf("%s: %d pushes for %d windows (%d rotations), want between 2 and the number of windows", nodes[i].Name, runs, len(windows), rot)
		}
	}

	// Each ring equals its file and the engine's window (retry while a change is in flight).
	for i, n := range nodes {
		var lines []string
		ok := false
		for attempt := 0; attempt < 5 && !ok; attempt++ {
			lines = checkHAProxyFile(t, s, n, keyring)
			ok = slices.Equal(haproxyRing(t, sockets[i], n.Files[0]), lines)
			if !ok {
				time.Sleep(time.Second)
			}
		}
		if !ok {
			t.Errorf("%s: HAProxy's ring does not equal its tls-ticket-keys file", n.Name)
		}
		log, err := os.ReadFile(pushLogs[i])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if strings.Contains(string(log), l) {
				t.Errorf("%s: the push log contains key material", n.Name)
			}
		}
		watch.noKeyMaterial(t, append(n.AgentLogs(), pushLogs[i])...)
		sent := strings.Count(string(log), " sent ")
		t.Logf("%s: push log has %d runs that sent keys, e.g. %q", n.Name, sent, firstMatching(string(log), " sent "))
	}
	// Emergency rotation: every ring and file drops the purged keys within max_read_ttl + Agent + push.
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	eapiMeasurePurgePropagation(t, s, keyring, "haproxy", names, func(i int) []byte {
		file, _ := os.ReadFile(nodes[i].Files[0])
		return append(file, strings.Join(haproxyRing(t, sockets[i], nodes[i].Files[0]), "\n")...)
	}, 30*time.Second)
}

func firstMatching(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestAgentHAProxyControlIndependentKeys is the control for TestAgentHAProxyThreeNodes: the same three
// HAProxy instances and the same load client, but each instance with its own random keys (what a fleet
// gets without a shared window). Cross-instance resumption must collapse (about 1/3 with a random
// balancer), which shows the load client's resume rate can fail the 0.999 bar.
func TestAgentHAProxyControlIndependentKeys(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	dir := t.TempDir()
	combined := cert.WriteCombinedPEM(dir)
	var addrs []string
	for i := 0; i < 3; i++ {
		keys := filepath.Join(dir, fmt.Sprintf("keys%d", i))
		var lines []string
		for j := 0; j < 3; j++ {
			b := make([]byte, 80)
			if _, err := rand.Read(b); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, base64.StdEncoding.EncodeToString(b))
		}
		if err := os.WriteFile(keys, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		port := servertest.FreePort(t)
		p := servertest.StartHAProxy(t, haproxyConf(port, combined, keys, filepath.Join(dir, fmt.Sprintf("admin%d.sock", i))))
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p.WaitListening(t, addr)
		addrs = append(addrs, addr)
	}
	for _, v := range []struct {
		name string
		ver  uint16
	}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}} {
		r, err := resumption.Run(context.Background(), resumption.Config{
			Addrs: addrs, ServerName: testcert.ServerName, RootCAs: cert.Pool,
			MinVersion: v.ver, MaxVersion: v.ver,
			Users: 16, Concurrency: 2, MaxConnections: 600, MaxDuration: 10 * time.Second,
			Interval: 10 * time.Millisecond, Seed: 42,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("control %s, independent keys: %s", v.name, r)
		if r.Offered < 100 {
			t.Fatalf("%s: only %d tickets offered", v.name, r.Offered)
		}
		if rate := r.ResumeRate(); rate > 0.6 {
			t.Errorf("%s: resume rate %.4f with independent keys per instance; want about 1/3 (the measurement cannot tell shared keys apart)", v.name, rate)
		}
	}
}
