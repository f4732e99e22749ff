package nginx_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// clientAuth is a client-certificate CA (PEM file for ssl_client_certificate) and one client
// certificate it signed.
type clientAuth struct {
	caFile string
	cert   tls.Certificate
}

// newClientAuth makes a CA, writes it to dir/client-ca.pem, and signs one client certificate
// (ExtKeyUsageClientAuth) with it.
func newClientAuth(t *testing.T, dir string) clientAuth {
	t.Helper()
	ca, cert := testcert.NewClientCA(t, "domain B")
	caFile := filepath.Join(dir, "client-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return clientAuth{caFile: caFile, cert: cert}
}

// domainServer writes one https server{} block (listen on a free loopback port, its own certificate,
// answering "NAME\n"; with ca, client certificates are required) and returns it and its address.
func domainServer(t *testing.T, dir, name string, cert *testcert.Cert, ca *clientAuth) (block, addr string) {
	t.Helper()
	addr = fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	return serverBlock(t, dir, name, addr, "", cert, ca), addr
}

// serverBlock writes NAME's certificate under dir and returns an https server{} block listening on addr
// (with server_name serverName unless empty) answering "NAME\n"; with ca, client certificates are
// required.
func serverBlock(t *testing.T, dir, name, addr, serverName string, cert *testcert.Cert, ca *clientAuth) string {
	t.Helper()
	sub := filepath.Join(dir, name+"-cert")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, _ := cert.WritePEM(sub)
	extra := ""
	if serverName != "" {
		extra = fmt.Sprintf("    server_name %s;\n", serverName)
	}
	if ca != nil {
		extra += fmt.Sprintf("    ssl_client_certificate %s;\n    ssl_verify_client on;\n", ca.caFile)
	}
	return fmt.Sprintf("server {\n    listen %s ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n%s"+
		"    location / { return 200 \"%s\\n\"; }\n}\n", addr, certFile, keyFile, extra, name)
}

// get makes one TLS connection with cfg (its session cache carries tickets), GETs / and reports
// whether the session resumed and the answer's status line and body.
func get(cfg *tls.Config, addr string) (resumed bool, answer string, err error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return false, "", err
	}
	body, err := io.ReadAll(c)
	status, _, _ := strings.Cut(string(body), "\r\n")
	_, text, _ := strings.Cut(string(body), "\r\n\r\n")
	return c.ConnectionState().DidResume, status + " " + strings.TrimSpace(text), err
}

// scopeNode is one nginx of the trust-domain tests: https blocks A and B (B requires client certificates),
// each in its scope.
type scopeNode struct {
	inst *luatest.Instance
	a, b string // addresses
	// whereA and whereB are the scopes' server options (config file, or file:line).
	whereA, whereB string
}

// startScopeNode starts nginx with blocks A and B: in two included files (sameFile false, scopes by
// file) or in one included file (scopes by file:line); windowA and windowB are the scopes' files.
func startScopeNode(t *testing.T, b *servertest.NginxBuild, certA, certB *testcert.Cert, ca *clientAuth, windowA, windowB string, sameFile bool) *scopeNode {
	t.Helper()
	dir := t.TempDir()
	blockA, addrA := domainServer(t, dir, "a", certA, nil)
	blockB, addrB := domainServer(t, dir, "b", certB, ca)
	n := &scopeNode{a: addrA, b: addrB}
	var include string
	if sameFile {
		f := filepath.Join(dir, "both.conf")
		if err := os.WriteFile(f, []byte(blockA+"\n"+blockB), 0o644); err != nil {
			t.Fatal(err)
		}
		n.whereA = f + ":1"
		n.whereB = fmt.Sprintf("%s:%d", f, strings.Count(blockA, "\n")+2)
		include = "    include " + f + ";\n"
	} else {
		fa, fb := filepath.Join(dir, "a.conf"), filepath.Join(dir, "b.conf")
		for f, blk := range map[string]string{fa: blockA, fb: blockB} {
			if err := os.WriteFile(f, []byte(blk), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		n.whereA, n.whereB = fa, fb
		include = "    include " + fa + ";\n    include " + fb + ";\n"
	}
	// The top-level window covers the harness's own https block; A and B have scopes of their own.
	opts := fmt.Sprintf("interval = 0.2, scopes = { { server = %q, file = %q }, { server = %q, file = %q } }",
		n.whereA, windowA, n.whereB, windowB)
	n.inst = luatest.Start(t, luatest.Config{Nginx: b, Cert: certA, SharedDict: "ticketkeys",
		StartOptions: opts, ExtraHTTP: include})
	n.inst.Proc.WaitListening(t, addrA, addrB)
	return n
}

// waitScopes waits until every worker of n holds idsA in block A and idsB in block B, and reports
// each block's scope as its window file.
func (n *scopeNode) waitScopes(t *testing.T, windowA, windowB string, idsA, idsB []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := n.inst.StatusAll(t)
		ok := true
		var seen []string
		for _, s := range st {
			found := 0
			for _, blk := range s.Blocks {
				seen = append(seen, fmt.Sprintf("%s=%s%v", blk.Where, blk.Scope, blk.IDs()))
				switch {
				case strings.HasPrefix(blk.Where, n.whereA+":") || blk.Where == n.whereA:
					found++
					ok = ok && blk.Scope == windowA && slices.Equal(blk.IDs(), idsA)
				case strings.HasPrefix(blk.Where, n.whereB+":") || blk.Where == n.whereB:
					found++
					ok = ok && blk.Scope == windowB && slices.Equal(blk.IDs(), idsB)
				}
			}
			ok = ok && found == 2
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocks A (%s) and B (%s) do not hold their scopes' windows: %v; log:\n%s", n.whereA, n.whereB, seen, n.inst.Proc.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestScopesKeepTrustDomainsApart proves start{ scopes = ... }: one nginx serves domain A and domain B
// (another certificate, client certificates required) on two listen sockets, each block with its own
// window. A ticket of A never resumes on B and B still demands its client certificate; A's tickets
// resume on A and B's on B, also on a second node with the same scopes (scoped by file:line there), and
// across domains never.
func TestScopesKeepTrustDomainsApart(t *testing.T) {
	eachNginx(t, testScopesKeepTrustDomainsApart)
}

func testScopesKeepTrustDomainsApart(t *testing.T, b *servertest.NginxBuild) {
	certA := testcert.New(t, testcert.ECDSAP256)
	certB := testcert.New(t, testcert.ECDSAP256)
	ca := newClientAuth(t, t.TempDir())
	wdir := t.TempDir()
	windowA, windowB := filepath.Join(wdir, "a.window"), filepath.Join(wdir, "b.window")
	keysA, keysB := luatest.NewKeys(t, 2, 80), luatest.NewKeys(t, 2, 80)
	luatest.WriteWindow(t, windowA, keysA)
	luatest.WriteWindow(t, windowB, keysB)
	n1 := startScopeNode(t, b, certA, certB, &ca, windowA, windowB, false)
	n2 := startScopeNode(t, b, certA, certB, &ca, windowA, windowB, true)
	for _, n := range []*scopeNode{n1, n2} {
		n.waitScopes(t, windowA, windowB, luatest.IDs(keysA), luatest.IDs(keysB))
	}
	roots := x509.NewCertPool()
	roots.AddCert(certA.CA)
	roots.AddCert(certB.CA)
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			// client returns a config trusting both domains' CAs (so the client offers A's ticket to B:
			// one session cache entry per server name), with B's client certificate when withCert.
			client := func(withCert bool) *tls.Config {
				cfg := &tls.Config{RootCAs: roots, ServerName: testcert.ServerName, MinVersion: v.v, MaxVersion: v.v,
					ClientSessionCache: tls.NewLRUClientSessionCache(8)}
				if withCert {
					cfg.Certificates = []tls.Certificate{ca.cert}
				}
				return cfg
			}
			step := func(cfg *tls.Config, addr, what string, wantResume bool, wantAnswer string) {
				t.Helper()
				r, ans, err := get(cfg, addr)
				if err != nil && strings.HasPrefix(wantAnswer, "200") {
					t.Fatalf("%s: %v", what, err)
				}
				if r != wantResume {
					t.Fatalf("%s: resumed %v, want %v (answer %q, err %v)", what, r, wantResume, ans, err)
				}
				if !strings.HasPrefix(ans, "HTTP/1.1 ") || !strings.Contains(ans, wantAnswer) {
					t.Fatalf("%s: answer %q (err %v), want %q", what, ans, err, wantAnswer)
				}
			}
			const okA, okB, noCert = "200 OK a", "200 OK b", "400 Bad Request"
			for i := range 3 {
				// A's ticket offered to B without a client certificate: no resumption, B asks for it.
				cfg := client(false)
				step(cfg, n1.a, "first handshake on A", false, okA)
				step(cfg, n1.a, "A's ticket on A", true, okA)
				step(cfg, n1.b, fmt.Sprintf("try %d: A's ticket on B without a client certificate", i), false, noCert)
				// With the client certificate: a full handshake on B, never a resumption of A's session.
				cfg = client(true)
				step(cfg, n1.a, "first handshake on A (client holds a certificate)", false, okA)
				step(cfg, n1.b, fmt.Sprintf("try %d: A's ticket on B with a client certificate", i), false, okB)
				// B's tickets resume on B, on this node and on the other one; never on A.
				step(cfg, n1.b, "B's ticket on B", true, okB)
				step(cfg, n2.b, "B's ticket of node 1 on node 2's B", true, okB)
				step(cfg, n2.a, "B's ticket on node 2's A", false, okA)
				// A's tickets resume on the other node's A, never on its B.
				cfg = client(false)
				step(cfg, n1.a, "first handshake on node 1's A", false, okA)
				step(cfg, n2.a, "A's ticket of node 1 on node 2's A", true, okA)
				step(cfg, n2.b, "A's ticket of node 2 on node 2's B without a client certificate", false, noCert)
			}
		})
	}
	for _, n := range []*scopeNode{n1, n2} {
		assertNoMaterial(t, n.inst.Proc.Log(), append(slices.Clone(keysA), keysB...))
	}
	t.Logf("two domains, two nodes (scopes by file and by file:line): tickets resume within a domain on both nodes, never across; B always asks for its client certificate")
}

// TestScopeOptionErrors runs start{} with wrong file and scopes options in a worker of a real nginx:
// each raises an error naming the field, the rule and the value, before anything is installed.
func TestScopeOptionErrors(t *testing.T) {
	b := servertest.DebianNginx(t)
	cert := testcert.New(t, testcert.ECDSAP256)
	dir := t.TempDir()
	blockA, addrA := domainServer(t, dir, "a", cert, nil)
	blockB, addrB := domainServer(t, dir, "b", cert, nil)
	conf := filepath.Join(dir, "both.conf")
	if err := os.WriteFile(conf, []byte(blockA+"\n"+blockB), 0o644); err != nil {
		t.Fatal(err)
	}
	lineB := strings.Count(blockA, "\n") + 2
	window := newWindow(t, luatest.NewKeys(t, 1, 80))
	other := filepath.Join(dir, "other.window")
	cases := []struct {
		name, opts string
		want       []string
	}{
		{"no file, no scopes", `{ interval = 1 }`, []string{"file must be a non-empty path string, got nil (or give scopes)"}},
		{"scopes not a list", `{ scopes = "x" }`, []string{"scopes must be a non-empty list", "got string"}},
		{"empty scopes", `{ scopes = {} }`, []string{"scopes must be a non-empty list", "got an empty table"}},
		{"scope not a table", `{ scopes = { "x" } }`, []string{"scopes[1] must be a table", "got string"}},
		{"missing file", `{ scopes = { { server = "{conf}" } } }`, []string{"scopes[1].file must be a non-empty path string", "got nil"}},
		{"missing server", `{ scopes = { { file = "{window}" } } }`, []string{"scopes[1].server must be a configuration file path", "got nil"}},
		{"blank server", `{ scopes = { { server = " ", file = "{window}" } } }`, []string{`scopes[1].server must be a configuration file path or file:line without surrounding spaces, got " "`}},
		{"unknown field", `{ scopes = { { server = "{conf}", file = "{window}", shared_dict = "x" } } }`, []string{`scopes[1] has an unknown field "shared_dict"`}},
		{"duplicate server", `{ scopes = { { server = "{conf}", file = "{window}" }, { server = "{conf}", file = "{other}" } } }`, []string{`scopes[2].server "{conf}" is also scopes[1].server: a server belongs to one scope`}},
		{"duplicate server in a list", `{ scopes = { { server = { "{conf}", "{conf}" }, file = "{window}" } } }`, []string{`scopes[1].server[2] "{conf}" is also scopes[1].server[1]`}},
		{"shared window file", `{ scopes = { { server = "{conf}" .. ":1", file = "{window}" }, { server = "{conf}" .. ":{lineB}", file = "{window}" } } }`, []string{`scopes[2].file "{window}" is already the window file of scopes[1]`, "never share a window file"}},
		{"scope file is the top-level file", `{ file = "{window}", scopes = { { server = "{conf}", file = "{window}" } } }`, []string{`scopes[1].file "{window}" is already the window file of the top-level file option`}},
		{"block in two scopes", `{ scopes = { { server = "{conf}", file = "{window}" }, { server = "{conf}" .. ":{lineB}", file = "{other}" } } }`, []string{"({conf}:{lineB}) matches scopes[2] (by file:line) and scopes[1] (by file): a block belongs to one scope"}},
		{"server matching no block", `{ scopes = { { server = "/etc/nginx/no-such.conf", file = "{window}" } } }`, []string{`scopes[1].server "/etc/nginx/no-such.conf" matches no TLS server block of this nginx`}},
		{"line matching no block", `{ scopes = { { server = "{conf}" .. ":2", file = "{window}" } } }`, []string{`scopes[1].server "{conf}:2" matches no TLS server block`}},
	}
	fill := strings.NewReplacer("{conf}", conf, "{window}", window, "{other}", other, "{lineB}", fmt.Sprint(lineB)).Replace
	var lua strings.Builder
	lua.WriteString(`if ngx.worker.id() == 0 then local tk = require("resty.ticketkeys") `)
	for i, c := range cases {
		fmt.Fprintf(&lua, "do local ok, err = pcall(tk.start, %s); ngx.log(ngx.NOTICE, \"scopecase %d: \", ok and \"no error\" or err) end ",
			fill(c.opts), i)
	}
	lua.WriteString("end ")
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, InitLua: lua.String(),
		ExtraHTTP: "    include " + conf + ";\n"})
	inst.Proc.WaitListening(t, addrA, addrB)
	log := inst.Proc.Log()
	for i, c := range cases {
		var line string
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, fmt.Sprintf("scopecase %d: ", i)) {
				line = l
			}
		}
		if line == "" {
			t.Errorf("%s: no result in the log:\n%s", c.name, log)
			continue
		}
		if !strings.Contains(line, "ticketkeys.start: ") {
			t.Errorf("%s: %s, want an error", c.name, line)
		}
		for _, w := range c.want {
			if w = fill(w); !strings.Contains(line, w) {
				t.Errorf("%s: %s\n  want it to contain %s", c.name, line, w)
			}
		}
	}
	// None of them changed anything: the real start{} after them installed the window everywhere.
	st := inst.Status(t)
	if len(st.Blocks) != 4 || st.Source != "file" {
		t.Errorf("after the refused starts, status %+v, want the window in all 4 blocks", st)
	}
}

// TestScopesOnASharedSocketUseTheDefaultServersKeys proves what docs/nginx-lua.md says of scopes on one
// listen socket: nginx encrypts every ticket on an address:port with the keys of that socket's default
// server, even when SNI selected another block for the certificate. Block A (the default server, no
// server_name the client sends) and block B (server_name localhost, its own certificate) share one
// socket, each in its own scope, and the status shows each block holding its own scope's window; yet a
// handshake that SNI sends to B (B's certificate answers) gets a ticket under A's current key, never
// under one of B's, in TLS 1.2 and 1.3. This is why the guides give each trust domain its own sockets.
func TestScopesOnASharedSocketUseTheDefaultServersKeys(t *testing.T) {
	eachNginx(t, testScopesOnASharedSocket)
}

func testScopesOnASharedSocket(t *testing.T, b *servertest.NginxBuild) {
	certA, certB := testcert.New(t, testcert.ECDSAP256), testcert.New(t, testcert.ECDSAP256)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	blockA := serverBlock(t, dir, "a", addr, "a.invalid", certA, nil) // first on the socket: its default server
	blockB := serverBlock(t, dir, "b", addr, testcert.ServerName, certB, nil)
	conf := filepath.Join(dir, "shared.conf")
	if err := os.WriteFile(conf, []byte(blockA+"\n"+blockB), 0o644); err != nil {
		t.Fatal(err)
	}
	windowA, windowB := filepath.Join(dir, "a.window"), filepath.Join(dir, "b.window")
	keysA, keysB := luatest.NewKeys(t, 2, 80), luatest.NewKeys(t, 2, 80)
	luatest.WriteWindow(t, windowA, keysA)
	luatest.WriteWindow(t, windowB, keysB)
	n := &scopeNode{a: addr, b: addr, whereA: conf + ":1", whereB: fmt.Sprintf("%s:%d", conf, strings.Count(blockA, "\n")+2)}
	opts := fmt.Sprintf("interval = 0.2, scopes = { { server = %q, file = %q }, { server = %q, file = %q } }",
		n.whereA, windowA, n.whereB, windowB)
	n.inst = luatest.Start(t, luatest.Config{Nginx: b, Cert: certA, SharedDict: "ticketkeys",
		StartOptions: opts, ExtraHTTP: "    include " + conf + ";\n"})
	n.inst.Proc.WaitListening(t, addr)
	n.waitScopes(t, windowA, windowB, luatest.IDs(keysA), luatest.IDs(keysB))

	roots := x509.NewCertPool()
	roots.AddCert(certA.CA)
	roots.AddCert(certB.CA)
	idA, idsB := luatest.ID(keysA[0]), luatest.IDs(keysB)
	for _, v := range versions {
		for _, c := range []struct {
			block, serverName string // serverName "127.0.0.1": no SNI is sent, the default server answers
			leaf              *x509.Certificate
		}{{"A", "127.0.0.1", certA.Leaf}, {"B", testcert.ServerName, certB.Leaf}} {
			cfg := &tls.Config{RootCAs: roots, ServerName: c.serverName, MinVersion: v.v, MaxVersion: v.v}
			capture := &luatest.TicketCapture{}
			cfg.ClientSessionCache = capture
			var leaf *x509.Certificate
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				leaf = cs.PeerCertificates[0]
				return nil
			}
			r, ans, err := get(cfg, addr)
			if err != nil || r {
				t.Fatalf("%s block %s: resumed %v, answer %q, err %v; want a full handshake", v.name, c.block, r, ans, err)
			}
			// The certificate says which block the TLS handshake ran in (SNI); the HTTP answer comes from
			// the block the Host header names, localhost (B), either way.
			if !strings.HasPrefix(ans, "HTTP/1.1 200 OK") {
				t.Fatalf("%s block %s: answer %q, want 200 OK", v.name, c.block, ans)
			}
			if leaf == nil || !leaf.Equal(c.leaf) {
				t.Fatalf("%s block %s: the server presented another block's certificate, want block %s's (SNI %q)", v.name, c.block, c.block, c.serverName)
			}
			key, err := capture.KeyName()
			if err != nil {
				t.Fatalf("%s block %s: %v", v.name, c.block, err)
			}
			if key != idA || slices.Contains(idsB, key) {
				t.Errorf("%s block %s (selected by SNI %q): ticket under key %s, want the default server A's current key %s (B's scope holds %v)",
					v.name, c.block, c.serverName, key, idA, idsB)
			}
		}
	}
	t.Logf("%s: A and B on one socket, each block holding its own scope's window; tickets of SNI-selected B are under the default server A's key (TLS 1.2 and 1.3)", b.Name)
}
