//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// nginxConf is a node's nginx.conf: TLS on 127.0.0.1:port with the Agent's include snippet, a tiny page,
// and a large file served slowly (the long download that spans reloads).
func nginxConf(port int, certFile, keyFile, snippet, dataDir string) string {
	return fmt.Sprintf(`
worker_processes 2;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path {{DIR}}/body;
  proxy_temp_path {{DIR}}/proxy;
  keepalive_timeout 120s;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    include %s;
    location / { return 200 "ok\n"; }
    location /big { root %s; limit_rate 100k; }
  }
}
`, port, certFile, keyFile, snippet, dataDir)
}

// checkNginxFiles proves the rendered nginx files against the engine's window, retrying when the window
// moves between the two reads: slot i holds exactly the raw bytes of key i (the current key when the
// window has fewer keys), mode 0600, and the snippet lists the slots in order with their ids.
func checkNginxFiles(t *testing.T, s *vaulttest.Server, n *agentNode, keyring string) {
	t.Helper()
	slots := len(n.Files) - 1
	for attempt := 1; attempt <= 5; attempt++ {
		w := readWindow(t, s, keyring, "nginx")
		snippet, err := os.ReadFile(n.Files[slots])
		if err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		want.WriteString("# Rendered by Vault Agent from ticketkeys/keys/" + keyring + " (format nginx). Do not edit.\n")
		ok := true
		for i := 0; i < slots; i++ {
			k := w.Keys[0]
			if i < len(w.Keys) {
				k = w.Keys[i]
			}
			fmt.Fprintf(&want, "# slot %d: %s %s\nssl_session_ticket_key %s;\n", i, k.ID, k.State, n.Files[i])
			got, err := os.ReadFile(n.Files[i])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, k.Raw) {
				ok = false
			}
			if st := stamp(t, n.Files[i]); st.Mode != 0o600 || st.Size != 80 {
				t.Fatalf("%s: mode %v size %d, want 0600 and 80 bytes", filepath.Base(n.Files[i]), st.Mode, st.Size)
			}
		}
		if ok && string(snippet) == want.String() && readWindow(t, s, keyring, "nginx").IDs() == w.IDs() {
			t.Logf("%s: %d key files match window %s exactly (slot 0 = current %s); snippet lists them in order",
				n.Name, slots, shortIDs(w.IDs()), w.Keys[0].ID[:8])
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s: rendered nginx files do not match the engine's window after 5 attempts (ids only compared in logs)", n.Name)
}

// TestAgentNginxRender runs one real Vault Agent with the nginx template set against the real engine and
// proves the exact bytes, modes and order of the files, and that files are rewritten (and the reload
// command run) only when the window changes. It runs on every server side by side
// (vaulttest.ForEachServerParallel: an Agent render waits on the schedule, not the CPU): Vault Agent and
// OpenBao's `bao agent`.
func TestAgentNginxRender(t *testing.T) {
	vaulttest.ForEachServerParallel(t, func(t *testing.T, server vaulttest.Kind) {
		checkAgentRender(t, server, agent.Nginx, "nginx-render", "render", true, checkNginxFiles)
	})
}

// TestAgentNginxThreeNodes runs three nginx instances (Debian's package), each fed by its own Vault Agent
// whose command reloads it, behind a client that picks a random instance for every connection. It proves
// at least 0.999 of offered tickets resume through at least two real rotations, in TLS 1.2 and 1.3 at once,
// and records (without asserting it away) what each reload did to a long-lived keep-alive connection and to
// a slow download.
func TestAgentNginxThreeNodes(t *testing.T) {
	const keyring = "nginx-e2e"
	s := startFleetKeyring(t, keyring)
	cert := testcert.New(t, testcert.ECDSAP256)
	certDir := t.TempDir()
	certFile, keyFile, _ := cert.WritePEM(certDir)
	dataDir := t.TempDir()
	os.Chmod(dataDir, 0o755)
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16) // 3 MiB at 100 KiB/s: ~30 s
	if err := os.WriteFile(filepath.Join(dataDir, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}

	var nodes []*agentNode
	var procs []*servertest.Proc
	var addrs []string
	for i := 0; i < 3; i++ {
		n := startAgentNode(t, s, agent.Nginx, keyring, fmt.Sprintf("nginx%d", i), ":", "")
		port := servertest.FreePort(t)
		p := servertest.StartNginx(t, nginxConf(port, certFile, keyFile, n.Files[len(n.Files)-1], dataDir))
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p.WaitListening(t, addr)
		// From now on the Agent's command reloads this nginx (what `nginx -s reload` does: SIGHUP to the
		// master). One reload now covers a change rendered before the command pointed at the process.
		n.setAction(t, fmt.Sprintf("kill -HUP %d", p.MasterPID))
		p.Reload(t)
		nodes, procs, addrs = append(nodes, n), append(procs, p), append(addrs, addr)
	}
	runsBefore := make([]int, 3)
	for i, n := range nodes {
		runsBefore[i] = len(n.changeTimes())
	}
	watch := watchWindows(t, s, keyring)

	// The long-lived connection (keep-alive, a request every 500 ms) and the slow download, both on node 0,
	// and node 0's worker count over time: old workers that linger after a reload.
	var probe probeResult
	var dl struct {
		bytes int64
		dur   time.Duration
		err   error
	}
	maxWorkers := 0
	runRotationLoad(t, watch, addrs, cert.Pool, 0, func(ctx context.Context, wg *sync.WaitGroup) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			probe = keepAliveProbe(ctx, addrs[0], cert.ClientConfig(), "/", 500*time.Millisecond, 200)
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: cert.ClientConfig()}, Timeout: 38 * time.Second}
			resp, err := c.Get("https://" + addrs[0] + "/big")
			if err != nil {
				dl.err = err
				return
			}
			defer resp.Body.Close()
			dl.bytes, dl.err = io.Copy(io.Discard, resp.Body)
			dl.dur = time.Since(start)
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if k := len(procs[0].WorkerPIDs()); k > maxWorkers {
					maxWorkers = k
				}
				sleepCtx(ctx, 250*time.Millisecond)
			}
		}()
	})
	rot := watch.Rotations()
	windows, _ := watch.Windows()
	for i, n := range nodes {
		runs := len(n.changeTimes()) - runsBefore[i]
		t.Logf("%s: Agent ran the reload command %d time(s) during the run (windows seen by the engine watcher: %d)", n.Name, runs, len(windows))
		if runs < 2 {
			t.Errorf("%s: %d reloads during a run with %d rotations, want >= 2", n.Name, runs, rot)
		}
		if runs > len(windows) {
			t.Errorf("%s: %d reloads for %d windows: the command ran without a window change", n.Name, runs, len(windows))
		}
	}
	// Record what reloads did to the long-lived connection and the download (measured, not asserted).
	reloads := nodes[0].changeTimes()[runsBefore[0]:]
	var rs []string
	for _, r := range reloads {
		rs = append(rs, r.Format("15:04:05.000"))
	}
	t.Logf("nginx0 reloads at %s", strings.Join(rs, ", "))
	t.Logf("nginx0 keep-alive probe: %d requests ok, %d failed, %d reconnects; failures: %s",
		probe.Requests, len(probe.Failures), probe.Reopened, strings.Join(probe.Failures, "; "))
	t.Logf("nginx0 slow download: %d of %d bytes in %v, error %v; max worker processes seen %d (2 configured: extra ones are old workers draining after a reload)",
		dl.bytes, len(big), dl.dur.Round(time.Millisecond), dl.err, maxWorkers)
	if probe.Requests == 0 {
		t.Errorf("the keep-alive probe made no successful request")
	}
	// After the run every node's files equal the engine's window; no log holds key material.
	for i := range nodes {
		checkNginxFiles(t, s, nodes[i], keyring)
		watch.noKeyMaterial(t, append(nodes[i].AgentLogs(), procs[i].ErrorLog)...)
	}
	// Emergency rotation: every node's rendered key files drop the purged keys (and the Agent reloads
	// nginx) within max_read_ttl + Agent + render.
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	eapiMeasurePurgePropagation(t, s, keyring, "nginx", names, func(i int) []byte {
		var all []byte
		for _, f := range nodes[i].Files {
			b, _ := os.ReadFile(f)
			all = append(all, b...)
		}
		return all
	}, 30*time.Second)
}
