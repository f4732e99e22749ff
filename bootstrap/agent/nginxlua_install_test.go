package agent

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
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
		conf: {`file = "/etc/nginx/ticketkeys/api.window"`, "ssl_session_ticket_key /etc/nginx/ticketkeys/placeholder.key;"},
		tmpl: {`secret "tk/keys/api?format=nginx"`},
		hcl:  {`destination          = "/etc/nginx/ticketkeys/api.window"`, `address = "https://127.0.0.1:8200"`, `source               = "/etc/vault-agent/ticketkeys/window.ctmpl"`},
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
	wantMode(t, filepath.Join(root, "etc/nginx/ticketkeys"), 0o750)
	wantMode(t, filepath.Join(root, "etc/vault-agent/ticketkeys"), 0o750)
	wantMode(t, conf, 0o644)
	wantMode(t, tmpl, 0o640)
	module := readFile(t, filepath.Join(root, "usr/local/share/ticketkeys/lua/resty/ticketkeys.lua"))
	if module != readFile(t, "../../nginx/lib/resty/ticketkeys.lua") {
		t.Errorf("installed module differs from nginx/lib/resty/ticketkeys.lua")
	}
	placeholder := readFile(t, filepath.Join(root, "etc/nginx/ticketkeys/placeholder.key"))

	// The operator edits the http snippet, then upgrades with another keyring name.
	edited := readFile(t, conf) + "ssl_session_timeout 1d;  # local edit\n"
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
	if got := readFile(t, conf+".new"); !strings.Contains(got, "/etc/nginx/ticketkeys/shop.window") {
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
