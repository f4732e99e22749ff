package agent

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// runInstall runs nginx-lua/install.sh with DESTDIR=root and returns its
// stdout and stderr.
func runInstall(t *testing.T, root string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"nginx-lua/install.sh"}, args...)...)
	cmd.Env = append(os.Environ(), "DESTDIR="+root)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wantMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
	}
}

// The installer takes the keyring name once and renders it into every file
// that names it; a re-run never overwrites a file the operator edited.
func TestNginxLuaInstall(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("install.sh sets root ownership: run as root")
	}
	if _, err := user.LookupGroup("www-data"); err != nil {
		t.Skip("no www-data group on this machine")
	}
	root := t.TempDir()
	conf := filepath.Join(root, "etc/nginx/ticketkeys/ticketkeys.conf")
	stream := filepath.Join(root, "etc/nginx/ticketkeys/stream.conf")
	tmpl := filepath.Join(root, "etc/vault-agent/ticketkeys/window.ctmpl")
	hcl := filepath.Join(root, "etc/vault-agent/ticketkeys/agent.hcl")

	out, errOut, err := runInstall(t, root, "-k", "api", "-m", "tk", "-a", "https://127.0.0.1:8200")
	if err != nil {
		t.Fatalf("install.sh: %v\n%s%s", err, out, errOut)
	}
	for path, want := range map[string][]string{
		conf: {`file = "/var/lib/ticketkeys/nginx/api.window"`, "ssl_session_ticket_key /etc/nginx/ticketkeys/placeholder.key;"},
		tmpl: {`secret "tk/keys/api?format=nginx"`},
		hcl:  {`destination          = "/var/lib/ticketkeys/nginx/api.window"`, `address = "https://127.0.0.1:8200"`, `source               = "/etc/vault-agent/ticketkeys/window.ctmpl"`},
	} {
		got := readFile(t, path)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s does not contain %q:\n%s", path, w, got)
			}
		}
		if strings.Contains(got, "web.window") || strings.Contains(got, "keys/web") || strings.Contains(got, "vault.example.com") {
			t.Errorf("%s still names keyring web or the example Vault:\n%s", path, got)
		}
	}
	if !strings.Contains(out, "node-approle.sh api") {
		t.Errorf("install.sh output does not give the node-approle.sh step for keyring api:\n%s", out)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/nginx/ticketkeys/placeholder.key")); err != nil || len(b) != 80 {
		t.Errorf("placeholder key: %v, %d bytes; want 80", err, len(b))
	}
	wantMode(t, filepath.Join(root, "etc/nginx/ticketkeys/placeholder.key"), 0o600)
	wantMode(t, filepath.Join(root, "etc/nginx/ticketkeys"), 0o755)
	wantMode(t, filepath.Join(root, "etc/vault-agent/ticketkeys"), 0o750)
	wantMode(t, conf, 0o644)
	wantMode(t, tmpl, 0o640)
	module := readFile(t, filepath.Join(root, "usr/local/share/ticketkeys/lua/resty/ticketkeys.lua"))
	if module != readFile(t, "../../nginx/lib/resty/ticketkeys.lua") {
		t.Errorf("installed module differs from nginx/lib/resty/ticketkeys.lua")
	}
	placeholder := readFile(t, filepath.Join(root, "etc/nginx/ticketkeys/placeholder.key"))

	// The operator edits the http snippet, then upgrades with another keyring name.
	edited := readFile(t, conf) + "ssl_session_cache shared:SSL:10m;  # local edit\n"
	if err := os.WriteFile(conf, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = runInstall(t, root, "-k", "shop", "-m", "tk", "-a", "https://127.0.0.1:8200")
	if err != nil {
		t.Fatalf("install.sh again: %v\n%s%s", err, out, errOut)
	}
	if got := readFile(t, conf); got != edited {
		t.Errorf("re-running install.sh overwrote the edited %s", conf)
	}
	if !strings.Contains(errOut, "KEPT your edited /etc/nginx/ticketkeys/ticketkeys.conf") {
		t.Errorf("install.sh did not say it kept the edited snippet; stderr:\n%s", errOut)
	}
	if got := readFile(t, conf+".new"); !strings.Contains(got, "/var/lib/ticketkeys/nginx/shop.window") {
		t.Errorf("%s.new is not the new rendering for keyring shop:\n%s", conf, got)
	}
	for _, path := range []string{tmpl, hcl} {
		if got := readFile(t, path); !strings.Contains(got, "shop") || strings.Contains(got, "api") {
			t.Errorf("unedited %s was not re-rendered for keyring shop:\n%s", path, got)
		}
		if _, err := os.Stat(path + ".new"); err == nil {
			t.Errorf("unedited %s got a .new file", path)
		}
	}
	if _, err := os.Stat(stream + ".new"); err == nil {
		t.Errorf("unchanged %s got a .new file", stream)
	}
	if got := readFile(t, filepath.Join(root, "etc/nginx/ticketkeys/placeholder.key")); got != placeholder {
		t.Errorf("re-running install.sh replaced the placeholder key")
	}
}

// Bad values stop the installer before it writes anything, naming the flag,
// the rule and the value.
func TestNginxLuaInstallRejects(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-k", "a/b"}, "-k KEYRING 'a/b': want 1-128 characters"},
		{[]string{"-k", ""}, "-k KEYRING '': want"},
		{[]string{"-m", "../sys"}, "-m MOUNT '../sys'"},
		{[]string{"-a", "vault:8200"}, "-a VAULT_ADDR 'vault:8200': want http(s)://host[:port]"},
		{[]string{"-u", "no-such-group-xyz"}, "-u NGINX_USER 'no-such-group-xyz'"},
		{[]string{"-a", "http://vault.example.com:8200"}, "-a VAULT_ADDR 'http://vault.example.com:8200': plain http:// only to a loopback address"},
		{[]string{"-a", "http://127.0.0.1.example.com:8200"}, "plain http:// only to a loopback address"},
		{[]string{"-a", "http://localhost.example.com:8200"}, "plain http:// only to a loopback address"},
		{[]string{"web"}, "unexpected argument 'web'"},
		{[]string{"-g", "no-such-group-xyz"}, "-g NGINX_GROUP 'no-such-group-xyz': no such group"},
		{[]string{"-A", "no-such-user-xyz"}, "-A AGENT_USER 'no-such-user-xyz': no such user"},
		{[]string{"-c", "/no/such/ca.pem"}, "-c CA_FILE '/no/such/ca.pem': no such file"},
		{[]string{"-c", "ca.pem"}, "-c CA_FILE 'ca.pem': want an absolute path"},
		{[]string{"-t", "5x"}, "-t SESSION_TIMEOUT '5x': want"},
		{[]string{"-t", "0s"}, "-t SESSION_TIMEOUT '0s': want"},
		{[]string{"-t", "8d"}, "-t SESSION_TIMEOUT '8d': want"},
		{[]string{"-t", "169h"}, "at most 7d"},
		{[]string{"-t", ""}, "-t SESSION_TIMEOUT '': want"},
	} {
		root := t.TempDir()
		_, errOut, err := runInstall(t, root, c.args...)
		if err == nil || !strings.Contains(errOut, c.want) {
			t.Errorf("install.sh %q: err %v, stderr %q; want a failure saying %q", c.args, err, errOut, c.want)
		}
		if entries, _ := os.ReadDir(root); len(entries) != 0 {
			t.Errorf("install.sh %q failed but wrote %d entries under DESTDIR", c.args, len(entries))
		}
	}
}

// wantOwner fails the test unless path has the mode (permission and setgid bits) and the owner and group
// given by name.
func wantOwner(t *testing.T, path string, mode os.FileMode, owner, group string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := st.Mode() & (os.ModePerm | os.ModeSetgid); got != mode {
		t.Errorf("%s: mode %v, want %v", path, got, mode)
	}
	sys := st.Sys().(*syscall.Stat_t)
	u, err := user.LookupId(strconv.Itoa(int(sys.Uid)))
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(strconv.Itoa(int(sys.Gid)))
	if err != nil {
		t.Fatal(err)
	}
	if u.Username != owner || g.Name != group {
		t.Errorf("%s: owned by %s:%s, want %s:%s", path, u.Username, g.Name, owner, group)
	}
}

// Issue 19 item 7: the window lives in a directory only Agent writes (its group the workers' group,
// setgid so Agent's files get it, the file 0640); everything nginx's master reads as root (snippets,
// placeholder) is root's alone, so a non-root Agent cannot add Lua to nginx's configuration.
func TestNginxLuaInstallModes(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("install.sh sets root ownership: run as root")
	}
	for _, g := range []string{"www-data", "daemon"} {
		if _, err := user.LookupGroup(g); err != nil {
			t.Skipf("no %s group on this machine", g)
		}
	}
	root := t.TempDir()
	out, errOut, err := runInstall(t, root, "-a", "https://127.0.0.1:8200", "-A", "daemon")
	if err != nil {
		t.Fatalf("install.sh: %v\n%s%s", err, out, errOut)
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	wantOwner(t, p("etc/nginx/ticketkeys"), 0o755, "root", "root")
	wantOwner(t, p("etc/nginx/ticketkeys/placeholder.key"), 0o600, "root", "root")
	wantOwner(t, p("etc/nginx/ticketkeys/ticketkeys.conf"), 0o644, "root", "root")
	wantOwner(t, p("etc/nginx/ticketkeys/stream.conf"), 0o644, "root", "root")
	wantOwner(t, p("etc/nginx/ticketkeys/.install-manifest"), 0o600, "root", "root")
	wantOwner(t, p("var/lib/ticketkeys"), 0o755, "root", "root")
	wantOwner(t, p("var/lib/ticketkeys/nginx"), 0o750|os.ModeSetgid, "daemon", "www-data")
	wantOwner(t, p("etc/vault-agent/ticketkeys"), 0o750, "root", "daemon")
	wantOwner(t, p("etc/vault-agent/ticketkeys/agent.hcl"), 0o640, "root", "daemon")
	wantOwner(t, p("etc/vault-agent/ticketkeys/window.ctmpl"), 0o640, "root", "daemon")
	hcl := readFile(t, p("etc/vault-agent/ticketkeys/agent.hcl"))
	for _, w := range []string{`destination          = "/var/lib/ticketkeys/nginx/web.window"`, `perms                = "0640"`} {
		if !strings.Contains(hcl, w) {
			t.Errorf("agent.hcl does not contain %q:\n%s", w, hcl)
		}
	}
	if got := readFile(t, p("etc/nginx/ticketkeys/ticketkeys.conf")); !strings.Contains(got, `file = "/var/lib/ticketkeys/nginx/web.window"`) {
		t.Errorf("ticketkeys.conf does not read the window from /var/lib/ticketkeys/nginx/web.window:\n%s", got)
	}
	// Nothing nginx's master reads is writable by the Agent's user: every path under /etc/nginx is root's
	// and not group- or world-writable.
	_ = filepath.WalkDir(p("etc/nginx"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		st, _ := os.Stat(path)
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 || st.Mode().Perm()&0o022 != 0 {
			t.Errorf("%s: uid %d mode %v: a non-root user could change what nginx's master loads", path, sys.Uid, st.Mode().Perm())
		}
		return nil
	})
	// The advice names the window directory for the Agent's user, never the nginx directory.
	if strings.Contains(out, "may write /etc/nginx") || !strings.Contains(out, "/var/lib/ticketkeys/nginx") {
		t.Errorf("install.sh's advice for the Agent's user should name /var/lib/ticketkeys/nginx only:\n%s", out)
	}
}

// Issue 19 item 7: -u is the workers' user and the group is its primary group (Debian's nobody is in
// nogroup: there is no group nobody), or -g.
func TestNginxLuaInstallNobody(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("install.sh sets root ownership: run as root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody on this machine")
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		args  []string
		env   string
		group string
	}{
		{"-u nobody", []string{"-u", "nobody"}, "", g.Name},
		{"NGINX_USER=nobody", nil, "nobody", g.Name},
		{"-u nobody -g www-data", []string{"-u", "nobody", "-g", "www-data"}, "", "www-data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if c.env != "" {
				t.Setenv("NGINX_USER", c.env)
			}
			out, errOut, err := runInstall(t, root, append([]string{"-a", "https://127.0.0.1:8200"}, c.args...)...)
			if err != nil {
				t.Fatalf("install.sh: %v\n%s%s", err, out, errOut)
			}
			wantOwner(t, filepath.Join(root, "var/lib/ticketkeys/nginx"), 0o750|os.ModeSetgid, "root", c.group)
			if !strings.Contains(out, "user nobody") {
				t.Errorf("install.sh does not give nginx.conf's user line for nobody:\n%s", out)
			}
		})
	}
}

// Issue 19 item 7: -c renders ca_cert into agent.hcl's vault stanza (the file must exist); without -c
// there is no ca_cert.
func TestNginxLuaInstallCACert(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("install.sh sets root ownership: run as root")
	}
	root := t.TempDir()
	ca := "/etc/vault-agent/vault-ca.pem"
	if err := os.MkdirAll(filepath.Join(root, "etc/vault-agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, ca), []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runInstall(t, root, "-a", "https://vault.internal:8200", "-c", ca)
	if err != nil {
		t.Fatalf("install.sh: %v\n%s%s", err, out, errOut)
	}
	hcl := readFile(t, filepath.Join(root, "etc/vault-agent/ticketkeys/agent.hcl"))
	vault, _, _ := strings.Cut(hcl[strings.Index(hcl, "vault {"):], "\n}")
	if !strings.Contains(vault, `ca_cert = "`+ca+`"`) {
		t.Errorf("agent.hcl's vault stanza has no ca_cert = %q:\n%s", ca, vault)
	}

	root = t.TempDir()
	if _, _, err := runInstall(t, root, "-a", "https://vault.internal:8200"); err != nil {
		t.Fatal(err)
	}
	hcl = readFile(t, filepath.Join(root, "etc/vault-agent/ticketkeys/agent.hcl"))
	for _, l := range strings.Split(hcl, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "ca_cert") {
			t.Errorf("agent.hcl without -c sets %q", l)
		}
	}
}

// Issue 19 item 4: both snippets set ssl_session_timeout, by default to the engine's default key
// lifetime (rotation_period 1h + retain 12h), or to -t: nginx's default 5m would refuse a ticket older
// than that whatever the keyring retains.
func TestNginxLuaInstallSessionTimeout(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("install.sh sets root ownership: run as root")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "ssl_session_timeout 13h;"},
		{[]string{"-t", "25s"}, "ssl_session_timeout 25s;"},
		{[]string{"-t", "1d1h"}, "ssl_session_timeout 1d1h;"},
	} {
		root := t.TempDir()
		out, errOut, err := runInstall(t, root, append([]string{"-a", "https://127.0.0.1:8200"}, c.args...)...)
		if err != nil {
			t.Fatalf("install.sh %q: %v\n%s%s", c.args, err, out, errOut)
		}
		for _, f := range []string{"ticketkeys.conf", "stream.conf"} {
			got := readFile(t, filepath.Join(root, "etc/nginx/ticketkeys", f))
			if n := strings.Count(got, "\nssl_session_timeout "); n != 1 || !strings.Contains(got, "\n"+c.want+"\n") {
				t.Errorf("install.sh %q: %s has %d ssl_session_timeout lines, want one %q:\n%s", c.args, f, n, c.want, got)
			}
		}
	}
}

// sessionSeconds is the engine's default key lifetime from activation to not_after (rotation_period +
// retain, path_keys.go), which install.sh's default -t must equal.
func TestNginxLuaInstallDefaultTimeoutIsTheEngines(t *testing.T) {
	b, err := os.ReadFile("nginx-lua/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nsession_timeout=13h\n") {
		t.Errorf("install.sh's default session_timeout is not 13h, the engine's default rotation_period (1h) + retain (12h)")
	}
}

// An upgrade from the layout with the window in /etc/nginx/ticketkeys (root:GROUP 0750) makes that
// directory root's alone and says in which order to switch: Agent first, then nginx.
func TestNginxLuaInstallUpgradeFromEtcWindow(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("install.sh sets root ownership: run as root")
	}
	root := t.TempDir()
	dir := filepath.Join(root, "etc/nginx/ticketkeys")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, 33); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web.window"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runInstall(t, root, "-a", "https://127.0.0.1:8200")
	if err != nil {
		t.Fatalf("install.sh: %v\n%s%s", err, out, errOut)
	}
	wantOwner(t, dir, 0o755, "root", "root")
	if !strings.Contains(errOut, "NOTE: /etc/nginx/ticketkeys/web.window is where earlier versions rendered the window") ||
		!strings.Contains(errOut, "restart Vault Agent (it renders there) before you reload nginx") {
		t.Errorf("install.sh does not say how to move from the old window path; stderr:\n%s", errOut)
	}
}
