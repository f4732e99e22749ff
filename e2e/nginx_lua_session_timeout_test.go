//go:build e2e

package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// guideKeyringSettings finds the guide's `vault write ticketkeys/keys/web rotation_period=... retain=...`.
var guideKeyringSettings = regexp.MustCompile(`(?m)^vault write ticketkeys/keys/web rotation_period=(\S+) retain=(\S+)`)

// guideInstallLine finds the guide's install.sh command line (its arguments, without the comment).
var guideInstallLine = regexp.MustCompile(`(?m)^sh bootstrap/agent/nginx-lua/install\.sh([^#\n]*)`)

// TestNginxLuaTicketOlderThanFiveMinutes (issue 19 item 4) sets up one node as docs/nginx-lua.md says
// (its install.sh line, whose -t must be the guide keyring's rotation_period + retain: a key's lifetime
// from activation to not_after), installs a window of one key living that long, and resumes a TLS 1.2
// and a TLS 1.3 ticket 5m10s after they were issued: older than nginx's default ssl_session_timeout
// (5m), which refuses them (and which TLS 1.3 clients honour through the ticket's lifetime hint). It
// sleeps, so it runs in parallel with the other tests; one handshake and one resumption per version.
func TestNginxLuaTicketOlderThanFiveMinutes(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("install.sh sets root ownership: run as root")
	}
	if testing.Short() {
		t.Skip("sleeps 5m10s")
	}
	guide, err := os.ReadFile(luaRepoFile(t, "docs/nginx-lua.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := guideKeyringSettings.FindSubmatch(guide)
	inst := guideInstallLine.FindSubmatch(guide)
	if m == nil || inst == nil {
		t.Fatalf("docs/nginx-lua.md: no `vault write ticketkeys/keys/web rotation_period=... retain=...` or install.sh line")
	}
	period, err1 := time.ParseDuration(string(m[1]))
	retain, err2 := time.ParseDuration(string(m[2]))
	if err1 != nil || err2 != nil {
		t.Fatalf("docs/nginx-lua.md: keyring settings %q: %v %v", m[0], err1, err2)
	}
	lifetime := period + retain // docs/api.md: a key encrypts rotation_period, then decrypts retain more
	args := strings.Fields(strings.ReplaceAll(string(inst[1]), "https://vault.internal:8200", "https://127.0.0.1:8200"))
	if tm := regexp.MustCompile(`-t (\S+)`).FindStringSubmatch(string(inst[1])); tm == nil {
		t.Errorf("docs/nginx-lua.md's install.sh line gives no -t SESSION_TIMEOUT: nginx keeps its default ssl_session_timeout of 5m")
	} else if d, err := time.ParseDuration(tm[1]); err != nil || d != lifetime {
		t.Errorf("docs/nginx-lua.md: install.sh -t %s; want the keyring's rotation_period + retain, %s (%v)", tm[1], lifetime, err)
	}

	n := newGuideNode(t, "timeout")
	cmd := exec.Command("sh", append([]string{"bootstrap/agent/nginx-lua/install.sh"}, args...)...)
	cmd.Dir = servertest.RepoRoot(t)
	cmd.Env = append(os.Environ(), "DESTDIR="+n.root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	n.rootInstalledFiles(t)
	snippet := filepath.Join(n.root, "etc/nginx/ticketkeys/ticketkeys.conf")
	fm := regexp.MustCompile(`file = "([^"]+)"`).FindStringSubmatch(readFileT(t, snippet))
	if fm == nil {
		t.Fatalf("%s names no window file", snippet)
	}

	// One key, activated a minute ago, living the guide's lifetime: as Agent would render it (the
	// directory's group, 0640).
	now := time.Now().UTC().Truncate(time.Second)
	line := fmt.Sprintf("%s %s %s %s\n", base64.StdEncoding.EncodeToString(luatest.NewKey(t, 80)),
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(-time.Minute+period).Format(time.RFC3339),
		now.Add(-time.Minute+lifetime).Format(time.RFC3339))
	window := fm[1]
	if err := os.WriteFile(window, []byte(line), 0o640); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(window)); err == nil {
		_ = os.Chown(window, 0, int(fi.Sys().(*syscall.Stat_t).Gid))
	}

	cert := testcert.New(t, testcert.ECDSAP256)
	certFile, keyFile, _ := cert.WritePEM(t.TempDir())
	b := servertest.DebianNginx(t)
	port := servertest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf(`%sevents {}
error_log {{DIR}}/error.log notice;
http {
    access_log off;
    client_body_temp_path {{DIR}}/body;
    proxy_temp_path {{DIR}}/proxy;
    fastcgi_temp_path {{DIR}}/fastcgi;
    uwsgi_temp_path {{DIR}}/uwsgi;
    scgi_temp_path {{DIR}}/scgi;
    include %s;
    server {
        listen %s ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { return 200 "ok\n"; }
    }
}
`, b.LoadModules(false), snippet, addr, certFile, keyFile)
	p := servertest.StartNginxWith(t, b, conf)
	p.WaitListening(t, addr)
	if !strings.Contains(p.Log(), "installed a window of 1 keys") {
		t.Fatalf("nginx did not install the window:\n%s", guideLogLines(p.Log(), "ticketkeys", 10))
	}

	caches := map[uint16]tls.ClientSessionCache{}
	for _, v := range luaVersions() {
		caches[v] = tls.NewLRUClientSessionCache(1)
		if resumed, err := timeoutGet(addr, cert, v, caches[v]); err != nil || resumed {
			t.Fatalf("%s: first handshake: resumed %v, err %v", tlsName(v), resumed, err)
		}
	}
	const age = 5*time.Minute + 10*time.Second
	t.Logf("tickets issued; resuming them in %s (nginx's default ssl_session_timeout is 5m)", age)
	time.Sleep(age)
	for _, v := range luaVersions() {
		resumed, err := timeoutGet(addr, cert, v, caches[v])
		if err != nil {
			t.Fatalf("%s: %v", tlsName(v), err)
		}
		if !resumed {
			t.Errorf("%s: a ticket %s old was not resumed, although its key decrypts for %s more: the snippet's ssl_session_timeout is shorter than the key's lifetime (%s)",
				tlsName(v), age, lifetime-time.Minute-age, lifetime)
		}
	}
}

// timeoutGet makes one HTTPS request to addr with TLS version v and the session cache, reading the whole
// answer (so a TLS 1.3 ticket arrives), and says whether the handshake resumed.
func timeoutGet(addr string, cert *testcert.Cert, v uint16, cache tls.ClientSessionCache) (bool, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{
		RootCAs: cert.Pool, ServerName: testcert.ServerName, MinVersion: v, MaxVersion: v, ClientSessionCache: cache,
	})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", testcert.ServerName); err != nil {
		return false, err
	}
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		return false, fmt.Errorf("GET /: %q, %v", status, err)
	}
	for err == nil {
		_, err = br.ReadString('\n')
	}
	return conn.ConnectionState().DidResume, nil
}

// tlsName names a TLS version in messages.
func tlsName(v uint16) string {
	return map[uint16]string{tls.VersionTLS12: "TLS 1.2", tls.VersionTLS13: "TLS 1.3"}[v]
}

// readFileT returns the file at path, failing the test when it cannot be read.
func readFileT(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
