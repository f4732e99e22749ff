//go:build e2e

package e2e

// End-to-end proof of issues 6 and 10 (nginx without reload, on every supported nginx): a real Vault
// server with the engine, one real Vault Agent per node rendering the shipped template
// bootstrap/agent/nginx-lua/window.ctmpl with the shipped agent.hcl, and three nginx instances (two
// workers each) configured with the shipped snippets ticketkeys.conf and stream.conf, running
// resty.ticketkeys from nginx/lib; once per nginx build (Debian's 1.22.1 and each OpenResty line), the
// builds side by side against one Vault, each with its own keyring.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// luaRepoFile returns the absolute path of a file in this repository.
func luaRepoFile(t *testing.T, rel string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the e2e source file")
	}
	p := filepath.Join(filepath.Dir(file), "..", filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("repository file %s: %v", rel, err)
	}
	return p
}

// luaShipped reads a shipped file and replaces each old string with its new one, failing the test if an
// old string is missing (the shipped file changed and the test would no longer test it).
func luaShipped(t *testing.T, rel string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(luaRepoFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("shipped %s no longer contains %q", rel, repl[i])
		}
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
	}
	return s
}

// luaNode is one nginx node: its Agent, its window file and its nginx.
type luaNode struct {
	name   string
	dir    string
	window string
	agent  *vaulttest.Process
	inst   *luatest.Instance
	// sharedLine is the line of the stream TLS block with a shared session cache and no placeholder in
	// the node's nginx.conf.
	sharedLine int
}

// startLuaNode starts the node's Agent from the shipped agent.hcl and window.ctmpl (keyring "web"
// renamed to keyring) and waits for the first window, then starts nginx b (2 workers) with the shipped
// snippets: https and a status server in http{}; in stream{} a TLS block with the shipped placeholders
// (stream.conf included in the block), a TLS block with `ssl_session_cache shared:` and no placeholder
// (nginx 1.23.2+ gives it keys of its own, which the module must skip), and a plain TCP server.
func startLuaNode(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, b *servertest.NginxBuild, keyring, name string) *luaNode {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &luaNode{name: name, dir: dir, window: filepath.Join(dir, "web.window")}
	roleIDFile, secretIDFile := appRoleFiles(t, s, keyring, "lua-"+keyring+"-"+name, dir)
	tmpl := filepath.Join(dir, "window.ctmpl")
	if err := os.WriteFile(tmpl, []byte(luaShipped(t, "bootstrap/agent/nginx-lua/window.ctmpl",
		"ticketkeys/keys/web?", "ticketkeys/keys/"+keyring+"?")), 0o644); err != nil {
		t.Fatal(err)
	}
	hcl := luaShipped(t, "bootstrap/agent/nginx-lua/agent.hcl",
		"https://vault.example.com:8200", s.Addr,
		"/etc/vault-agent/ticketkeys/role-id", roleIDFile,
		"/etc/vault-agent/ticketkeys/secret-id", secretIDFile,
		"/etc/vault-agent/ticketkeys/window.ctmpl", tmpl,
		"/var/lib/ticketkeys/nginx/web.window", n.window)
	n.agent = vaulttest.StartAgent(t, s, hcl)
	n.agent.WaitFor(t, 60*time.Second, "first render of "+n.window, func() bool {
		_, err := os.Stat(n.window)
		return err == nil
	})

	// Placeholder key and snippets, with the shipped paths moved into the node's directory.
	if err := os.WriteFile(filepath.Join(dir, "placeholder.key"), luatest.NewKey(t, 80), 0o600); err != nil {
		t.Fatal(err)
	}
	httpSnippet := filepath.Join(dir, "ticketkeys.conf")
	streamSnippet := filepath.Join(dir, "stream.conf")
	for path, body := range map[string]string{
		httpSnippet: luaShipped(t, "bootstrap/agent/nginx-lua/ticketkeys.conf",
			"/etc/nginx/ticketkeys/", dir+"/", "/var/lib/ticketkeys/nginx/", dir+"/",
			"/usr/local/share/ticketkeys/lua", luatest.LibDir(t)),
		streamSnippet: luaShipped(t, "bootstrap/agent/nginx-lua/stream.conf", "/etc/nginx/ticketkeys/", dir+"/"),
	} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	certFile, keyFile, _ := cert.WritePEM(dir)
	httpsPort, streamPort, statusPort := servertest.FreePort(t), servertest.FreePort(t), servertest.FreePort(t)
	sharedPort, plainPort := servertest.FreePort(t), servertest.FreePort(t)
	conf := fmt.Sprintf(`%[8]sworker_processes 2;
error_log {{DIR}}/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path {{DIR}}/body;
    proxy_temp_path {{DIR}}/proxy;
    fastcgi_temp_path {{DIR}}/fastcgi;
    uwsgi_temp_path {{DIR}}/uwsgi;
    scgi_temp_path {{DIR}}/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000;
    ssl_certificate %[1]s;
    ssl_certificate_key %[2]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    include %[3]s;
    server {
        listen 127.0.0.1:%[4]d ssl;
        location / { return 200 "ok\n"; }
        location = /pid { return 200 "$pid\n"; }
    }
    server {
        listen 127.0.0.1:%[5]d reuseport;
        location = /ticketkeys/status { content_by_lua_block { require("resty.ticketkeys").status() } }
    }
}
stream {
    server {
        listen 127.0.0.1:%[7]d ssl;
        ssl_certificate %[1]s;
        ssl_certificate_key %[2]s;
        ssl_protocols TLSv1.2 TLSv1.3;
        include %[6]s;
        return "hello\n";
    }
    server {
        listen 127.0.0.1:%[9]d ssl;
        ssl_certificate %[1]s;
        ssl_certificate_key %[2]s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:streamcache:1m;
        return "shared\n";
    }
    server {
        listen 127.0.0.1:%[10]d;
        return "plain\n";
    }
}
`, certFile, keyFile, httpSnippet, httpsPort, statusPort, streamSnippet, streamPort, b.LoadModules(true), sharedPort, plainPort)
	n.inst = &luatest.Instance{
		HTTPS:        fmt.Sprintf("127.0.0.1:%d", httpsPort),
		Stream:       fmt.Sprintf("127.0.0.1:%d", streamPort),
		StreamShared: fmt.Sprintf("127.0.0.1:%d", sharedPort),
		StreamPlain:  fmt.Sprintf("127.0.0.1:%d", plainPort),
		StatusURL:    fmt.Sprintf("http://127.0.0.1:%d/ticketkeys/status", statusPort),
	}
	lines := strings.Split(conf, "\n")
	for i, l := range lines {
		if strings.Contains(l, "ssl_session_cache shared:streamcache") {
			for j := i; j >= 0; j-- {
				if strings.TrimSpace(lines[j]) == "server {" {
					n.sharedLine = j + 1
					break
				}
			}
		}
	}
	n.inst.Proc = servertest.StartNginxWith(t, b, conf)
	n.inst.Proc.WaitListening(t, n.inst.HTTPS, n.inst.Stream, n.inst.StreamShared, n.inst.StreamPlain, fmt.Sprintf("127.0.0.1:%d", statusPort))
	n.inst.Proc.WaitWorkers(t, 2)
	return n
}

// checkSkippedSharedBlock checks a node's workers: each left exactly the shared-cache stream block
// alone (named by nginx.conf and line) and logged one warning naming it; the block still completes TLS
// handshakes, and the plain stream server answers.
func checkSkippedSharedBlock(t *testing.T, cert *testcert.Cert, n *luaNode) {
	t.Helper()
	where := fmt.Sprintf("%s:%d", n.inst.Proc.ConfPath, n.sharedLine)
	for pid, st := range n.inst.StatusAll(t) {
		if len(st.Skipped) != 1 || st.Skipped[0].Kind != "stream" || st.Skipped[0].Where != where {
			t.Errorf("%s worker %d: skipped blocks %+v, want only the stream block at %s", n.name, pid, st.Skipped, where)
		}
		kinds := map[string]int{}
		for _, blk := range st.Blocks {
			kinds[blk.Kind]++
		}
		if kinds["http"] != 2 || kinds["stream"] != 1 {
			t.Errorf("%s worker %d: window installed in blocks %v, want 2 http and 1 stream", n.name, pid, kinds)
		}
	}
	warn := 0
	for _, l := range strings.Split(n.inst.Proc.Log(), "\n") {
		if strings.Contains(l, "[warn]") && strings.Contains(l, "ticketkeys: stream server 1 ("+where+")") {
			warn++
		}
	}
	if warn != 2 {
		t.Errorf("%s: %d warnings naming the shared-cache block %s, want one per worker (2)", n.name, warn, where)
	}
	for _, v := range luaVersions() {
		if _, err := luatest.Handshake(luatest.ClientConfig(cert, v), n.inst.StreamShared, true); err != nil {
			t.Errorf("%s: TLS %x handshake with the shared-cache stream block: %v", n.name, v, err)
		}
	}
	c, err := net.DialTimeout("tcp", n.inst.StreamPlain, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: plain stream server: %v", n.name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "plain\n" {
		t.Errorf("%s: plain stream server answered %q (%v), want \"plain\\n\"", n.name, got, err)
	}
}

// engineIDs returns the engine's current window ids of keyring in response order.
func engineIDs(t *testing.T, s *vaulttest.Server, keyring string) []string {
	t.Helper()
	w := readWindow(t, s, keyring, "nginx")
	ids := make([]string, len(w.Keys))
	for i, k := range w.Keys {
		ids[i] = k.ID
	}
	return ids
}

// waitNodesHoldEngine waits until every worker of every node holds the engine's window (read again on
// each try, since the window may move meanwhile), bounded by timeout.
func waitNodesHoldEngine(t *testing.T, s *vaulttest.Server, keyring string, nodes []*luaNode, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		want := engineIDs(t, s, keyring)
		ok := true
		for _, n := range nodes {
			if !luatest.AllBlocksHave(n.inst.StatusAll(t), want) {
				ok = false
				break
			}
		}
		if ok {
			return want
		}
		if time.Now().After(deadline) {
			for _, n := range nodes {
				t.Logf("%s status: %+v", n.name, n.inst.StatusAll(t))
			}
			t.Fatalf("nodes did not all hold the engine window %v within %v", want, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// streamLoad makes TLS connections to a random node's stream block per connection, each of users with
// its own session cache, until ctx ends or maxConns; it counts offered and resumed tickets.
func streamLoad(ctx context.Context, cert *testcert.Cert, version uint16, addrs []string, users, maxConns int, seed int64) (offered, resumed, failures int) {
	rng := rand.New(rand.NewSource(seed))
	cfgs := make([]*tls.Config, users)
	has := make([]bool, users)
	for i := range cfgs {
		cfgs[i] = luatest.ClientConfig(cert, version)
	}
	for i := 0; i < maxConns && ctx.Err() == nil; i++ {
		u := rng.Intn(users)
		addr := addrs[rng.Intn(len(addrs))]
		r, err := luatest.Handshake(cfgs[u], addr, true)
		if err != nil {
			failures++
			continue
		}
		if has[u] {
			offered++
			if r {
				resumed++
			}
		}
		has[u] = true
		sleepCtx(ctx, 20*time.Millisecond)
	}
	return offered, resumed, failures
}

// TestNginxLuaThreeNodes is the end-to-end proof of issue 6, on every nginx build (issue 10: Debian's
// nginx 1.22.1 and the OpenResty lines, as parallel subtests against one Vault): through at least two
// real rotations, a client choosing a random node per connection resumes >= 0.999 of offered tickets in
// TLS 1.2 and 1.3 (on https and on the stream TLS block); no reload happens (same master and worker
// PIDs); a long-lived keep-alive connection on each node survives every rotation; a stream TLS block
// with a shared session cache and no placeholder is skipped with one warning per worker while every
// other block holds the window, next to a plain stream server; a corrupt window file changes nothing; a
// killed worker comes back with the current window.
//
// It runs on every server (vaulttest.ForEachServer, one server after the other: the resumption rates are
// measured under load), every nginx line on each: Vault Agent and OpenBao's Agent (`bao agent`) render the
// same shipped template. The lines run side by side and their time is the schedule's (32 s of load through
// rotations), so every line costs about what one does: five lines 53 s on Vault and 56 s on OpenBao,
// Debian's alone 56 s on OpenBao.
func TestNginxLuaThreeNodes(t *testing.T) {
	vaulttest.ForEachServer(t, func(t *testing.T, server vaulttest.Kind) {
		s := vaulttest.Start(t, vaulttest.WithServer(server))
		// AppRole is enabled once here: the subtests create their roles side by side.
		if err := s.Client.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			t.Fatalf("enable approle auth: %v", err)
		}
		cert := testcert.New(t, testcert.ECDSAP256)
		servertest.EachNginx(t, func(t *testing.T, b *servertest.NginxBuild) {
			start := time.Now()
			nginxLuaThreeNodes(t, s, cert, b, "web-"+b.Name)
			t.Logf("%s (nginx %s) on %s: %.0f s", b.Name, b.Version, server.Title(), time.Since(start).Seconds())
		})
	})
}

func nginxLuaThreeNodes(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, b *servertest.NginxBuild, keyring string) {
	createKeyring(t, s, keyring)
	var nodes []*luaNode
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startLuaNode(t, s, cert, b, keyring, fmt.Sprintf("lua%d", i)))
	}
	ids := waitNodesHoldEngine(t, s, keyring, nodes, 30*time.Second)
	t.Logf("%s: 3 nodes x 2 workers hold the engine window %v", b.Name, ids)
	for _, n := range nodes {
		checkSkippedSharedBlock(t, cert, n)
	}
	masters := make([]int, 3)
	workers := make([][]int, 3)
	var https, streams []string
	for i, n := range nodes {
		masters[i], workers[i] = n.inst.Proc.MasterPID, n.inst.Proc.WorkerPIDs()
		https, streams = append(https, n.inst.HTTPS), append(streams, n.inst.Stream)
	}

	// Phase 1: load through >= 2 rotations, with one long-lived connection per node.
	watch := watchWindows(t, s, keyring)
	const loadFor = 32 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), loadFor+8*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	load := startFleetLoad(ctx, &wg, https, cert.Pool, loadFor, 0)
	var mu sync.Mutex
	type sres struct{ offered, resumed, failures int }
	streamRes := map[string]sres{}
	probes := make([]probeResult, 3)
	for _, v := range []struct {
		name string
		ver  uint16
	}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, scancel := context.WithTimeout(ctx, loadFor)
			defer scancel()
			o, r, f := streamLoad(sctx, cert, v.ver, streams, 8, 5000, int64(v.ver)+1)
			mu.Lock()
			defer mu.Unlock()
			streamRes[v.name] = sres{o, r, f}
		}()
	}
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, pcancel := context.WithTimeout(ctx, loadFor)
			defer pcancel()
			probes[i] = keepAliveProbe(pctx, n.inst.HTTPS, cert.ClientConfig(), "/", 500*time.Millisecond, 200)
		}()
	}
	wg.Wait()
	watch.Stop()
	load.checkResumedThroughRotations(t, watch) // the https load
	for _, name := range []string{"TLS1.2", "TLS1.3"} {
		for _, c := range load.results[name].Conns {
			if c.HandshakeErr != "" || c.RequestErr != "" {
				t.Logf("https %s: connection to node %d at %s: handshake error %q, request error %q", name, c.Addr, c.Start.Format("15:04:05.000"), c.HandshakeErr, c.RequestErr)
			}
		}
		sr := streamRes[name]
		rate := 0.0
		if sr.offered > 0 {
			rate = float64(sr.resumed) / float64(sr.offered)
		}
		t.Logf("stream %s: %d offered, %d resumed (rate %.4f), %d failed connections", name, sr.offered, sr.resumed, rate, sr.failures)
		if sr.offered < 100 || rate < 0.999 || sr.failures > 0 {
			t.Errorf("stream %s: %d of %d resumed, %d failures; want >= 100 offered, rate >= 0.999, no failure", name, sr.resumed, sr.offered, sr.failures)
		}
	}
	for i, p := range probes {
		t.Logf("%s long-lived connection: %d requests ok, %d failed, %d reconnects", nodes[i].name, p.Requests, len(p.Failures), p.Reopened)
		if p.Requests < 30 || len(p.Failures) > 0 || p.Reopened > 0 {
			t.Errorf("%s long-lived connection did not survive the rotations: %d ok, failures %v, %d reconnects", nodes[i].name, p.Requests, p.Failures, p.Reopened)
		}
	}
	for i, n := range nodes {
		if got := n.inst.Proc.WorkerPIDs(); !slices.Equal(got, workers[i]) || n.inst.Proc.Exited() {
			t.Errorf("%s: worker PIDs %v -> %v (or master exited): a reload or crash happened", n.name, workers[i], got)
		}
		log := n.inst.Proc.Log()
		if strings.Contains(log, "reconfiguring") || strings.Contains(log, "signal 1 (SIGHUP)") {
			t.Errorf("%s: the nginx log shows a reload", n.name)
		}
		installs := strings.Count(log, "ticketkeys: installed a window")
		t.Logf("%s: master %d, workers %v unchanged; %d window installs logged (2 workers x (1 at start + 1 per change))", n.name, masters[i], workers[i], installs)
		if installs < 2*3 {
			t.Errorf("%s: only %d installs logged, want >= 6 (2 workers, start + 2 rotations)", n.name, installs)
		}
	}
	waitNodesHoldEngine(t, s, keyring, nodes, 10*time.Second)

	// Phase 2: a corrupt window file on node 0 changes nothing; the Agent's next render repairs it. The
	// corruption must not straddle the Agent's next rewrite, so it starts right after a window change and
	// is retried if the Agent rewrote the file before the checks ended.
	n0 := nodes[0]
	var held []string
	var corrupt uint64
	for attempt := 1; ; attempt++ {
		ino := luaInode(t, n0.window)
		n0.agent.WaitFor(t, 25*time.Second, "a window change on "+n0.name, func() bool { return luaInode(t, n0.window) != ino })
		held = waitNodesHoldEngine(t, s, keyring, nodes, 8*time.Second)
		good, err := os.ReadFile(n0.window)
		if err != nil {
			t.Fatal(err)
		}
		logBefore := len(n0.inst.Proc.Log())
		// Cut inside the last line (a cut at a line break would be a valid shorter window, which only the
		// Agent's atomic rename rules out).
		luatest.WriteFileAtomic(t, n0.window, good[:len(good)-10])
		corrupt = luaInode(t, n0.window)
		time.Sleep(2 * time.Second) // 2 polling intervals of the shipped snippet
		st := n0.inst.StatusAll(t)
		if luaInode(t, n0.window) != corrupt {
			if attempt == 3 {
				t.Fatalf("the Agent rewrote the corrupt file before the checks ended, 3 times")
			}
			t.Logf("the Agent rewrote the corrupt file during the check (attempt %d); retrying", attempt)
			continue
		}
		if !luatest.AllBlocksHave(st, held) {
			t.Fatalf("a corrupt window file changed %s's keys from %v: %+v", n0.name, held, st)
		}
		errs := 0
		for _, l := range strings.Split(n0.inst.Proc.Log()[logBefore:], "\n") {
			if strings.Contains(l, "[error]") && strings.Contains(l, "ticketkeys: ") {
				errs++
				if !strings.Contains(l, "truncated") {
					t.Errorf("error line does not say the file is truncated: %s", l)
				}
			}
		}
		if errs != 2 {
			t.Errorf("%d ticketkeys error lines for one corrupt file, want one per worker (2)", errs)
		}
		break
	}
	for _, v := range luaVersions() {
		for i := 0; i < 10; i++ {
			if !luatest.CrossResumes(t, cert, v, nodes[1].inst.HTTPS, n0.inst.HTTPS, false) {
				t.Errorf("TLS %x: ticket from %s not resumed on %s while its window file is corrupt", v, nodes[1].name, n0.name)
			}
		}
	}
	t.Logf("%s: corrupt window file -> keys unchanged %v, 2 error lines, cross-node resumption intact", n0.name, held)
	n0.agent.WaitFor(t, 2*agentPeriod+10*time.Second, "the Agent's rewrite of the corrupt file on "+n0.name, func() bool {
		return luaInode(t, n0.window) != corrupt
	})
	repaired := waitNodesHoldEngine(t, s, keyring, nodes, 10*time.Second)
	t.Logf("%s: the Agent's next render replaced the corrupt file; every worker of every node installed %v", n0.name, repaired)

	// Phase 3: a killed worker comes back with the current window.
	n1 := nodes[1]
	victim := n1.inst.Proc.WorkerPIDs()[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatalf("kill worker %d: %v", victim, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		w := n1.inst.Proc.WorkerPIDs()
		if len(w) == 2 && !slices.Contains(w, victim) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if w := n1.inst.Proc.WorkerPIDs(); len(w) != 2 || slices.Contains(w, victim) {
		t.Fatalf("%s: worker %d not respawned: workers %v", n1.name, victim, w)
	}
	want := waitNodesHoldEngine(t, s, keyring, []*luaNode{n1}, 5*time.Second)
	respawned := 0
	for pid, ws := range n1.inst.StatusAll(t) {
		if !slices.Contains(workers[1], pid) {
			respawned++
			// Installed synchronously at start, before the worker accepted a connection, not by the timer.
			installedAtStart := false
			for _, l := range strings.Split(n1.inst.Proc.Log(), "\n") {
				if strings.Contains(l, "ticketkeys: installed a window") && strings.Contains(l, fmt.Sprintf("worker pid %d)", pid)) &&
					strings.HasSuffix(l, "context: init_worker_by_lua*") {
					installedAtStart = true
				}
			}
			if !installedAtStart {
				t.Errorf("%s: respawned worker %d logged no install from init_worker_by_lua", n1.name, pid)
			}
			t.Logf("%s: worker %d killed; respawned worker %d holds the current window %v (installs %d)", n1.name, victim, pid, want, ws.Applies)
		}
	}
	if respawned != 1 {
		t.Errorf("%s: %d respawned workers answered the status handler, want 1", n1.name, respawned)
	}
	for _, v := range luaVersions() {
		for i := 0; i < 20; i++ {
			if !luatest.CrossResumes(t, cert, v, nodes[2].inst.HTTPS, n1.inst.HTTPS, false) {
				t.Errorf("TLS %x: ticket from %s not resumed on %s after the worker respawn", v, nodes[2].name, n1.name)
			}
		}
	}
	if n1.inst.Proc.MasterPID != masters[1] || n1.inst.Proc.Exited() {
		t.Errorf("%s: master changed or exited", n1.name)
	}
}

// luaVersions are the TLS versions every check runs in.
func luaVersions() []uint16 { return []uint16{tls.VersionTLS12, tls.VersionTLS13} }

// luaInode returns the inode of path (the Agent writes by rename, so a rewrite changes it).
func luaInode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
