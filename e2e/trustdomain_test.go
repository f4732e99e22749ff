//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// clientCA makes a CA and one client certificate (ExtKeyUsageClientAuth) it signed.
func clientCA(t *testing.T, name string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	ca, cert := testcert.NewClientCA(t, name)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, cert
}

// startDomainServer runs a Go TLS server on 127.0.0.1 whose ticket keys come from keyring (client.Source,
// ConfigureServer); clientCAs non-nil requires client certificates they verify. It answers "ok" and closes.
func startDomainServer(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, keyring string, clientCAs *x509.CertPool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := client.NewSource(ctx, s.Client, "ticketkeys", keyring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	cfg := cert.ServerConfig()
	if clientCAs != nil {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
	}
	if err := src.ConfigureServer(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err == nil {
					_, _ = c.Write([]byte("ok\n"))
				}
			}(c)
		}
	}()
	return ln.Addr().String()
}

// dialDomain makes one connection and reads the answer (so TLS 1.3 tickets arrive); it returns whether the
// session resumed and the handshake's error.
func dialDomain(addr string, cfg *tls.Config) (resumed bool, err error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		return c.ConnectionState().DidResume, err
	}
	st := c.ConnectionState()
	return st.DidResume, nil
}

// One keyring per trust domain, proven on Go servers fed by Vault (issue 21 item 6): domain "www" (no client
// certificates) and domain "pay" (client certificates of its own CA required) on one fleet and one Vault,
// each with its own keyring. A ticket issued by www, offered to pay by a client under the same server name,
// never resumes there, and pay still demands its client certificate (the handshake fails without one, and
// with www's client certificate). Control: two servers sharing one keyring do resume each other's tickets,
// so the client does offer the ticket and the separation is what stops it. TestTrustDomainsNginxLua (below)
// is the same proof on nginx with resty.ticketkeys scopes.
func TestTrustDomainsDoNotShareResumption(t *testing.T) {
	s := vaulttest.Start(t)
	for _, name := range []string{"www", "pay", "shared"} {
		createKeyring(t, s, name)
	}
	cert := testcert.New(t, testcert.ECDSAP256)
	payCAs, _ := clientCA(t, "pay")
	_, wwwClientCert := clientCA(t, "www")
	www := startDomainServer(t, s, cert, "www", nil)
	pay := startDomainServer(t, s, cert, "pay", payCAs)
	sharedA := startDomainServer(t, s, cert, "shared", nil)
	sharedB := startDomainServer(t, s, cert, "shared", nil)

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		name := map[uint16]string{tls.VersionTLS12: "TLS 1.2", tls.VersionTLS13: "TLS 1.3"}[v]
		newClient := func(certs ...tls.Certificate) *tls.Config {
			cfg := cert.ClientConfig()
			cfg.MinVersion, cfg.MaxVersion = v, v
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
			cfg.Certificates = certs
			return cfg
		}
		for _, tc := range []struct {
			what  string
			certs []tls.Certificate
		}{{"no client certificate", nil}, {"www's client certificate", []tls.Certificate{wwwClientCert}}} {
			cfg := newClient(tc.certs...)
			if _, err := dialDomain(www, cfg); err != nil {
				t.Fatalf("%s: www: %v", name, err)
			}
			if resumed, err := dialDomain(www, cfg); err != nil || !resumed {
				t.Fatalf("%s: www's own ticket back at www: resumed=%v err=%v; want a resumption (the client offers tickets)", name, resumed, err)
			}
			resumed, err := dialDomain(pay, cfg)
			if resumed {
				t.Errorf("%s, %s: www's ticket resumed at pay: another trust domain's session, pay's client-certificate check skipped", name, tc.what)
			}
			if err == nil {
				t.Errorf("%s, %s: pay accepted the connection; want its client-certificate check to refuse it", name, tc.what)
			}
		}
		cfg := newClient()
		if _, err := dialDomain(sharedA, cfg); err != nil {
			t.Fatalf("%s: shared A: %v", name, err)
		}
		if resumed, err := dialDomain(sharedB, cfg); err != nil || !resumed {
			t.Errorf("%s: control: a ticket of server A resumed at server B of the same keyring: %v (err %v); want true, or the test cannot tell separation from a client that offers nothing", name, resumed, err)
		}
	}
}

// The nginx side of issue 21 item 6: nginx with resty.ticketkeys, fed by a real Vault Agent, one scope
// (window, keyring) per trust domain.

// domainKeyringSettings are the trust-domain keyrings' settings: no scheduled rotation during the test,
// so the one rotation it makes (`vault write ticketkeys/keys/X/rotate`) is the only change; the rotated
// key is published at once and activates domainPublishAhead later, read by the Agents meanwhile (the
// mount's max_read_ttl is 5s).
const domainPublishAhead = 15 * time.Second

var domainKeyringSettings = map[string]any{"rotation_period": "1h", "publish_ahead": domainPublishAhead.String(), "retain": "1h"}

// domainNode is one nginx node of the trust-domain test: nginx (2 workers, the shipped http snippet)
// serving domain A and domain B on listen sockets of their own.
type domainNode struct {
	name           string
	inst           *luatest.Instance
	a, b           string // addresses of the A and B blocks
	whereA, whereB string // the scopes' server options: config files, or file:line
	windowA        string // the window file of A's scope (and of every block, without scopes)
	windowB        string // the window file of B's scope ("" without scopes)
}

// startDomainAgent starts one node's Vault Agent from the shipped agent.hcl with the shipped
// window.ctmpl once per keyring (two template stanzas, one window file each), logging in with one AppRole
// holding both keyrings' reader policies, and waits for both first renders.
func startDomainAgent(t *testing.T, s *vaulttest.Server, dir, name, keyA, keyB string) (agentProc *vaulttest.Process, windowA, windowB string) {
	t.Helper()
	roleIDFile, secretIDFile := appRoleFilesFor(t, s, []string{keyA, keyB}, "domains-"+keyA+"-"+name, dir)
	windowA, windowB = filepath.Join(dir, "a.window"), filepath.Join(dir, "b.window")
	tmplA, tmplB := filepath.Join(dir, "a.ctmpl"), filepath.Join(dir, "b.ctmpl")
	for tmpl, keyring := range map[string]string{tmplA: keyA, tmplB: keyB} {
		if err := os.WriteFile(tmpl, []byte(luaShipped(t, "bootstrap/agent/nginx-lua/window.ctmpl",
			"ticketkeys/keys/web?", "ticketkeys/keys/"+keyring+"?")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hcl := luaShipped(t, "bootstrap/agent/nginx-lua/agent.hcl",
		"https://vault.example.com:8200", s.Addr,
		"/etc/vault-agent/ticketkeys/role-id", roleIDFile,
		"/etc/vault-agent/ticketkeys/secret-id", secretIDFile,
		"/etc/vault-agent/ticketkeys/window.ctmpl", tmplA,
		"/var/lib/ticketkeys/nginx/web.window", windowA)
	// The second keyring's template: the shipped stanza again, with B's template and window.
	i := strings.LastIndex(hcl, "\ntemplate {")
	if i < 0 {
		t.Fatal("shipped agent.hcl has no template stanza")
	}
	hcl += strings.NewReplacer(tmplA, tmplB, windowA, windowB).Replace(hcl[i:])
	agentProc = vaulttest.StartAgent(t, s, hcl)
	agentProc.WaitFor(t, 60*time.Second, "first renders of "+windowA+" and "+windowB, func() bool {
		_, errA := os.Stat(windowA)
		_, errB := os.Stat(windowB)
		return errA == nil && errB == nil
	})
	return agentProc, windowA, windowB
}

// startDomainNginx starts nginx b with the shipped http snippet (placeholders inherited by every block)
// and two TLS server blocks on listen sockets of their own: A (certA, answers "a") and B (certB, client
// certificates of clientCA required: ssl_verify_client on, answers "b"). With windowB set, the snippet's
// start{} gets a scope per domain instead of its file option: A's block gets windowA, B's windowB, named
// by file:line (byLine, both blocks in one file) or by file. Without windowB the snippet stays as
// shipped: one window, windowA, in every block.
func startDomainNginx(t *testing.T, b *servertest.NginxBuild, name string, certA, certB *testcert.Cert, clientCA *x509.Certificate,
	windowA, windowB string, byLine bool) *domainNode {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &domainNode{name: name, windowA: windowA, windowB: windowB}
	if err := os.WriteFile(filepath.Join(dir, "placeholder.key"), luatest.NewKey(t, 80), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "client-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clientCA.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	block := func(c *testcert.Cert, answer, verify string) (string, string) {
		sub := filepath.Join(dir, answer+"-cert")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		certFile, keyFile, _ := c.WritePEM(sub)
		addr := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
		return fmt.Sprintf("server {\n    listen %s ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n%s"+
			"    location / { return 200 \"%s\\n\"; }\n}\n", addr, certFile, keyFile, verify, answer), addr
	}
	blockA, addrA := block(certA, "a", "")
	blockB, addrB := block(certB, "b", fmt.Sprintf("    ssl_client_certificate %s;\n    ssl_verify_client on;\n", caFile))
	n.a, n.b = addrA, addrB
	var include string
	if byLine {
		f := filepath.Join(dir, "domains.conf")
		if err := os.WriteFile(f, []byte(blockA+"\n"+blockB), 0o644); err != nil {
			t.Fatal(err)
		}
		n.whereA, n.whereB = f+":1", fmt.Sprintf("%s:%d", f, strings.Count(blockA, "\n")+2)
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
	const shippedStart = `require("resty.ticketkeys").start{ file = "/var/lib/ticketkeys/nginx/web.window", shared_dict = "ticketkeys" }`
	start := fmt.Sprintf(`require("resty.ticketkeys").start{ file = %q, shared_dict = "ticketkeys" }`, windowA)
	if windowB != "" {
		start = fmt.Sprintf(`require("resty.ticketkeys").start{ shared_dict = "ticketkeys", scopes = { { server = %q, file = %q }, { server = %q, file = %q } } }`,
			n.whereA, windowA, n.whereB, windowB)
	}
	snippet := filepath.Join(dir, "ticketkeys.conf")
	if err := os.WriteFile(snippet, []byte(luaShipped(t, "bootstrap/agent/nginx-lua/ticketkeys.conf",
		shippedStart, start,
		"/etc/nginx/ticketkeys/", dir+"/",
		"/usr/local/share/ticketkeys/lua", luatest.LibDir(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	statusPort := servertest.FreePort(t)
	conf := fmt.Sprintf(`%sworker_processes 2;
error_log {{DIR}}/error.log notice;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path {{DIR}}/body;
    proxy_temp_path {{DIR}}/proxy;
    fastcgi_temp_path {{DIR}}/fastcgi;
    uwsgi_temp_path {{DIR}}/uwsgi;
    scgi_temp_path {{DIR}}/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
    include %s;
%s    server {
        listen 127.0.0.1:%d reuseport;
        location = /ticketkeys/status { content_by_lua_block { require("resty.ticketkeys").status() } }
    }
}
`, b.LoadModules(true), snippet, include, statusPort)
	n.inst = &luatest.Instance{StatusURL: fmt.Sprintf("http://127.0.0.1:%d/ticketkeys/status", statusPort)}
	n.inst.Proc = servertest.StartNginxWith(t, b, conf)
	n.inst.Proc.WaitListening(t, addrA, addrB, fmt.Sprintf("127.0.0.1:%d", statusPort))
	n.inst.Proc.WaitWorkers(t, 2)
	return n
}

// blockKeys reports, for every worker of n, the window file (scope) and key ids of block A and of block
// B as the status handler reports them (read from nginx's memory): "A: scope ids; B: scope ids".
func (n *domainNode) blockKeys(t *testing.T) (scopeA, scopeB map[int]string, idsA, idsB map[int][]string) {
	t.Helper()
	scopeA, scopeB, idsA, idsB = map[int]string{}, map[int]string{}, map[int][]string{}, map[int][]string{}
	in := func(where, server string) bool { return where == server || strings.HasPrefix(where, server+":") }
	for pid, st := range n.inst.StatusAll(t) {
		for _, blk := range st.Blocks {
			switch {
			case in(blk.Where, n.whereA):
				scopeA[pid], idsA[pid] = blk.Scope, blk.IDs()
			case in(blk.Where, n.whereB):
				scopeB[pid], idsB[pid] = blk.Scope, blk.IDs()
			}
		}
	}
	return scopeA, scopeB, idsA, idsB
}

// domainKeysErr checks what scopes add, from every worker's status: A's block holds keyring A's window
// (wantA, from windowA) and B's block keyring B's (wantB, from windowB). It returns what differs, nil
// when both hold their own keyring's keys.
func (n *domainNode) domainKeysErr(t *testing.T, windowA, windowB string, wantA, wantB []string) error {
	t.Helper()
	scopeA, scopeB, idsA, idsB := n.blockKeys(t)
	var bad []string
	for _, pid := range n.inst.Proc.WorkerPIDs() {
		if scopeA[pid] != windowA || !slices.Equal(idsA[pid], wantA) {
			bad = append(bad, fmt.Sprintf("worker %d: A's block holds %s %v, want keyring A's %s %v", pid, filepath.Base(scopeA[pid]), idsA[pid], filepath.Base(windowA), wantA))
		}
		if scopeB[pid] != windowB || !slices.Equal(idsB[pid], wantB) {
			bad = append(bad, fmt.Sprintf("worker %d: B's block holds %s %v, want keyring B's %s %v", pid, filepath.Base(scopeB[pid]), idsB[pid], filepath.Base(windowB), wantB))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s: %s", n.name, strings.Join(bad, "; "))
	}
	return nil
}

// waitDomainKeys waits until every worker of every node holds the engine's current window of keyring A
// in A's block and of keyring B in B's block (re-read on each try), and returns those windows' ids.
func waitDomainKeys(t *testing.T, s *vaulttest.Server, keyA, keyB string, nodes []*domainNode, timeout time.Duration) (idsA, idsB []string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		idsA, idsB = engineIDs(t, s, keyA), engineIDs(t, s, keyB)
		var errs []string
		for _, n := range nodes {
			if err := n.domainKeysErr(t, n.windowA, n.windowB, idsA, idsB); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if len(errs) == 0 {
			return idsA, idsB
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes' blocks do not hold their own keyring's window within %v: %s", timeout, strings.Join(errs, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ticketNames is a client session cache that also records the key name (hex of the first 16 bytes: nginx
// writes it in clear at the start of every ticket) of the last ticket a server issued.
type ticketNames struct {
	tls.ClientSessionCache
	last string
}

func (c *ticketNames) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		if ticket, _, err := cs.ResumptionState(); err == nil && len(ticket) >= 16 {
			c.last = hex.EncodeToString(ticket[:16])
		}
	}
	c.ClientSessionCache.Put(key, cs)
}

// getDomain makes one TLS connection with cfg (its session cache carries tickets), GETs / and reports
// whether the session resumed, the answer's status line and body ("HTTP/1.1 200 OK a"), and the error.
func getDomain(cfg *tls.Config, addr string) (resumed bool, answer string, err error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return c.ConnectionState().DidResume, "", err
	}
	body, err := io.ReadAll(c)
	status, _, _ := strings.Cut(string(body), "\r\n")
	_, text, _ := strings.Cut(string(body), "\r\n\r\n")
	return c.ConnectionState().DidResume, strings.TrimSpace(status + " " + strings.TrimSpace(text)), err
}

// domainClient makes the test's clients: they trust both domains' CAs under one server name (so a
// client offers A's ticket to B: one session cache entry per server name), in one TLS version, with B's
// client certificate or none.
type domainClient struct {
	roots   *x509.CertPool
	version uint16
	cert    tls.Certificate
}

func (dc domainClient) new(withCert bool) (*tls.Config, *ticketNames) {
	names := &ticketNames{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	cfg := &tls.Config{RootCAs: dc.roots, ServerName: testcert.ServerName, MinVersion: dc.version, MaxVersion: dc.version,
		ClientSessionCache: names}
	if withCert {
		cfg.Certificates = []tls.Certificate{dc.cert}
	}
	return cfg, names
}

// Answers of the domain blocks: A's page, B's page, and what B answers a client without a certificate
// (nginx completes the handshake, then refuses every request: no page).
const domainOKA, domainOKB, domainNoCert = "HTTP/1.1 200 OK a", "HTTP/1.1 200 OK b", "HTTP/1.1 400 Bad Request"

// domainStep makes one connection and fails the test unless it resumed as wantResume and the answer
// starts with want.
func domainStep(t *testing.T, cfg *tls.Config, addr, what string, wantResume bool, want string) {
	t.Helper()
	r, ans, err := getDomain(cfg, addr)
	if err != nil && want != domainNoCert {
		t.Fatalf("%s: %v (answer %q)", what, err, ans)
	}
	if r != wantResume {
		t.Fatalf("%s: resumed %v, want %v (answer %q, err %v)", what, r, wantResume, ans, err)
	}
	if !strings.HasPrefix(ans, want) {
		t.Fatalf("%s: answer %q (err %v), want %q", what, ans, err, want)
	}
}

// domainRound runs the trust-domain checks once in one TLS version on two scoped nodes: tickets issued
// on A carry keyring A's current key (curA) and resume on A across the nodes, never on B (either node,
// with or without B's client certificate), and B without a client certificate answers no page; tickets
// issued on B carry keyring B's current key (curB) and resume on B across the nodes, never on A.
func domainRound(t *testing.T, dc domainClient, n0, n1 *domainNode, curA, curB string) {
	t.Helper()
	for _, pair := range [][2]*domainNode{{n0, n1}, {n1, n0}} {
		from, to := pair[0], pair[1]
		// A's ticket: back on A (the client offers tickets), on the other node's A.
		cfg, names := dc.new(false)
		domainStep(t, cfg, from.a, from.name+": first handshake on A", false, domainOKA)
		if names.last != curA {
			t.Fatalf("%s: A issued a ticket under key %s, want keyring A's current key %s", from.name, names.last, curA)
		}
		domainStep(t, cfg, from.a, from.name+": A's ticket on A", true, domainOKA)
		domainStep(t, cfg, to.a, from.name+": A's ticket on "+to.name+"'s A", true, domainOKA)
		// A's ticket on B of either node, without a client certificate: no resumption and no page.
		for _, n := range []*domainNode{from, to} {
			cfg, _ = dc.new(false)
			domainStep(t, cfg, from.a, from.name+": first handshake on A", false, domainOKA)
			domainStep(t, cfg, n.b, from.name+": A's ticket on "+n.name+"'s B without a client certificate", false, domainNoCert)
		}
		// B issues tickets to a client without a certificate too: such a ticket resumes on B of the other
		// node, and that session still gets no page (it carries no client certificate).
		cfg, names = dc.new(false)
		domainStep(t, cfg, to.b, to.name+": first handshake on B without a client certificate", false, domainNoCert)
		if names.last != curB {
			t.Fatalf("%s: B issued a ticket under key %s to a client without a certificate, want keyring B's current key %s", to.name, names.last, curB)
		}
		domainStep(t, cfg, from.b, to.name+": B's ticket of a session without a client certificate on "+from.name+"'s B", true, domainNoCert)
		// A's ticket offered to B by a client holding B's client certificate: a full handshake on B.
		cfg, names = dc.new(true)
		domainStep(t, cfg, from.a, from.name+": first handshake on A (client holds B's certificate)", false, domainOKA)
		domainStep(t, cfg, to.b, from.name+": A's ticket on "+to.name+"'s B with a client certificate", false, domainOKB)
		// That handshake left B's ticket: it carries keyring B's current key, resumes on B of both nodes
		// and never on A.
		if names.last != curB {
			t.Fatalf("%s: B issued a ticket under key %s, want keyring B's current key %s", to.name, names.last, curB)
		}
		domainStep(t, cfg, to.b, to.name+": B's ticket on B", true, domainOKB)
		domainStep(t, cfg, from.b, to.name+": B's ticket on "+from.name+"'s B", true, domainOKB)
		domainStep(t, cfg, from.a, to.name+": B's ticket on "+from.name+"'s A", false, domainOKA)
	}
}

// TestTrustDomainsNginxLua is the nginx proof of issue 21 item 6, on every nginx build (Debian's and
// each OpenResty line, side by side against one real Vault dev server): keyrings A and B (one per trust
// domain) on that Vault; per node one real Vault Agent rendering both windows with the shipped
// window.ctmpl (one template stanza per keyring, shipped agent.hcl, one AppRole reading both); two
// nginx nodes (the shipped http snippet, its start{} given one scope per domain: node 1 names the blocks
// by file, node 2 by file:line), each serving A (its certificate) and B (another certificate,
// ssl_verify_client on with a test CA) on listen sockets of their own. In TLS 1.2 and 1.3, before and
// after one rotation of each keyring (`vault write ticketkeys/keys/X/rotate`, activating 15 s later):
//
//   - every worker's A block holds keyring A's engine window and B's block keyring B's (status handler),
//     and the tickets A and B issue carry their own keyring's current key (key name in the ticket);
//   - a ticket issued on A never resumes on B, on either node, with or without B's client certificate,
//     and B without a client certificate answers no page (400, no required SSL certificate), also when
//     it resumes a B session made without one;
//   - A's tickets resume on A across the nodes and B's (with B's client certificate) on B, never on A;
//   - tickets issued before the rotation still resume on the other node after it (decrypt-only keys).
//
// What scopes add, and why this test fails without them: nginx already refuses to resume a session in
// another block's session-id context (derived from its certificate and client-CA list), so the cross-domain
// resumption checks pass with one window in every block too (the control below logs whether they do). A
// control nginx with the shipped snippet unchanged (one window, keyring A's) must fail the key checks: its
// B block holds keyring A's keys and issues B's tickets under keyring A's key, which the scoped nodes never
// do. No key material is logged: the Agents' and nginx's logs are checked for every key seen.
func TestTrustDomainsNginxLua(t *testing.T) {
	s := vaulttest.Start(t)
	// AppRole is enabled once here: the subtests create their roles side by side.
	if err := s.Client.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("enable approle auth: %v", err)
	}
	// Readers re-read at least every 5 s: the Agents fetch the rotated keys well before they activate.
	if _, err := s.Client.Logical().Write("ticketkeys/config", map[string]any{"max_read_ttl": "5s"}); err != nil {
		t.Fatal(err)
	}
	certA := testcert.New(t, testcert.ECDSAP256)
	certB := testcert.New(t, testcert.ECDSAP256)
	caB, clientCertB := testcert.NewClientCA(t, "domain B")
	roots := x509.NewCertPool()
	roots.AddCert(certA.CA)
	roots.AddCert(certB.CA)
	servertest.EachNginx(t, func(t *testing.T, b *servertest.NginxBuild) {
		start := time.Now()
		trustDomainsNginxLua(t, s, b, certA, certB, caB, clientCertB, roots)
		t.Logf("%s (nginx %s): %.0f s", b.Name, b.Version, time.Since(start).Seconds())
	})
}

func trustDomainsNginxLua(t *testing.T, s *vaulttest.Server, b *servertest.NginxBuild, certA, certB *testcert.Cert,
	caB *x509.Certificate, clientCertB tls.Certificate, roots *x509.CertPool) {
	keyA, keyB := "domain-a-"+b.Name, "domain-b-"+b.Name
	for _, k := range []string{keyA, keyB} {
		if _, err := s.Client.Logical().Write("ticketkeys/keys/"+k, domainKeyringSettings); err != nil {
			t.Fatalf("create keyring %s: %v", k, err)
		}
	}
	watchA, watchB := watchWindows(t, s, keyA), watchWindows(t, s, keyB)
	var nodes []*domainNode
	var agentLogs []string
	for i := range 2 {
		name := fmt.Sprintf("node%d", i+1)
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ag, windowA, windowB := startDomainAgent(t, s, dir, name, keyA, keyB)
		agentLogs = append(agentLogs, ag.LogPath)
		nodes = append(nodes, startDomainNginx(t, b, name, certA, certB, caB, windowA, windowB, i == 1))
	}
	n0, n1 := nodes[0], nodes[1]
	// The control: the shipped snippet as is (one window in every block), reading node 1's window of A.
	ctl := startDomainNginx(t, b, "single-window", certA, certB, caB, n0.windowA, "", false)

	idsA, idsB := waitDomainKeys(t, s, keyA, keyB, nodes, 30*time.Second)
	t.Logf("%s: 2 nodes x 2 workers: A's blocks hold keyring A's window %v, B's blocks keyring B's %v", b.Name, idsA, idsB)
	clients := map[uint16]domainClient{}
	for _, v := range luaVersions() {
		clients[v] = domainClient{roots: roots, version: v, cert: clientCertB}
	}
	versionName := map[uint16]string{tls.VersionTLS12: "TLS1.2", tls.VersionTLS13: "TLS1.3"}

	// Control: without scopes, B's block holds keyring A's keys and issues B's tickets under them.
	ctlErr := ctl.domainKeysErr(t, n0.windowA, n0.windowB, idsA, idsB)
	if ctlErr == nil {
		t.Fatalf("control: the single-window nginx passes the per-domain key check; the check cannot fail")
	}
	if err := ctl.domainKeysErr(t, n0.windowA, n0.windowA, idsA, idsA); err != nil {
		t.Fatalf("control: the single-window nginx does not hold keyring A's window in both blocks: %v", err)
	}
	for _, v := range luaVersions() {
		cfg, names := clients[v].new(true)
		domainStep(t, cfg, ctl.b, "control: first handshake on B", false, domainOKB)
		if names.last != idsA[0] {
			t.Fatalf("control %s: B issued a ticket under key %s, want keyring A's current key %s (one window in every block)", versionName[v], names.last, idsA[0])
		}
		// OpenSSL's session-id context, not the keys, is what stops this without scopes: logged only.
		cfg, _ = clients[v].new(true)
		domainStep(t, cfg, ctl.a, "control: first handshake on A", false, domainOKA)
		resumed, ans, err := getDomain(cfg, ctl.b)
		t.Logf("control %s: one window in every block: B's ticket is under keyring A's key; A's ticket offered to B: resumed %v (answer %q, err %v)", versionName[v], resumed, ans, err)
	}
	t.Logf("control: %v", ctlErr)

	// Before the rotation.
	for _, v := range luaVersions() {
		domainRound(t, clients[v], n0, n1, idsA[0], idsB[0])
	}
	// Sessions made before the rotation, to be offered after it.
	type held struct {
		cfg  *tls.Config
		v    uint16
		from string
		to   string
		ok   string
	}
	var before []held
	for _, v := range luaVersions() {
		cfg, _ := clients[v].new(false)
		domainStep(t, cfg, n0.a, "pre-rotation handshake on node1's A", false, domainOKA)
		before = append(before, held{cfg, v, "node1's A", n1.a, domainOKA})
		cfg, _ = clients[v].new(true)
		domainStep(t, cfg, n1.b, "pre-rotation handshake on node2's B", false, domainOKB)
		before = append(before, held{cfg, v, "node2's B", n0.b, domainOKB})
	}

	// One rotation of each keyring; the rotated keys activate domainPublishAhead later.
	rotated := map[string]string{}
	var activate time.Time
	for _, k := range []string{keyA, keyB} {
		sec, err := s.Client.Logical().Write("ticketkeys/keys/"+k+"/rotate", nil)
		if err != nil || sec == nil {
			t.Fatalf("rotate %s: %v", k, err)
		}
		id, _ := sec.Data["rotated_key_id"].(string)
		nb, _ := sec.Data["rotated_key_not_before"].(string)
		at, err := time.Parse(time.RFC3339, nb)
		if id == "" || err != nil {
			t.Fatalf("rotate %s: rotated_key_id %q, rotated_key_not_before %q (%v)", k, id, nb, err)
		}
		rotated[k] = id
		if at.After(activate) {
			activate = at
		}
	}
	// Published at once: the nodes hold the rotated keys (decrypt-only) before they activate.
	pubA, pubB := waitDomainKeys(t, s, keyA, keyB, nodes, domainPublishAhead)
	if !slices.Contains(pubA, rotated[keyA]) || !slices.Contains(pubB, rotated[keyB]) {
		t.Fatalf("after the rotations the nodes hold %v and %v, missing the rotated keys %s and %s", pubA, pubB, rotated[keyA], rotated[keyB])
	}
	t.Logf("%s: rotated keys published: A %v, B %v; they activate at %s", b.Name, pubA, pubB, activate.Format(time.RFC3339))
	time.Sleep(time.Until(activate.Add(time.Second)))
	idsA, idsB = waitDomainKeys(t, s, keyA, keyB, nodes, 15*time.Second)
	if idsA[0] != rotated[keyA] || idsB[0] != rotated[keyB] {
		t.Fatalf("after activation the current keys are %s and %s, want the rotated %s and %s", idsA[0], idsB[0], rotated[keyA], rotated[keyB])
	}
	t.Logf("%s: after the rotation: A's blocks hold %v, B's blocks %v", b.Name, idsA, idsB)
	for _, h := range before {
		domainStep(t, h.cfg, h.to, fmt.Sprintf("%s: a ticket of %s from before the rotation, on the other node", versionName[h.v], h.from), true, h.ok)
	}
	for _, v := range luaVersions() {
		domainRound(t, clients[v], n0, n1, idsA[0], idsB[0])
	}
	if err := ctl.domainKeysErr(t, n0.windowA, n0.windowB, idsA, idsB); err == nil {
		t.Errorf("control after the rotation: the single-window nginx passes the per-domain key check")
	}

	watchA.Stop()
	watchB.Stop()
	logs := append([]string(nil), agentLogs...)
	for _, n := range append(nodes, ctl) {
		if n.inst.Proc.Exited() {
			t.Errorf("%s: nginx exited", n.name)
		}
		logs = append(logs, n.inst.Proc.ErrorLog)
	}
	watchA.noKeyMaterial(t, logs...)
	watchB.noKeyMaterial(t, logs...)
	t.Logf("%s: two domains, two nodes (scoped by file and by file:line), TLS 1.2 and 1.3, one rotation of each keyring: tickets resume within a domain across nodes, never across domains; B always demands its client certificate", b.Name)
}
