//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// caddyVersion reads the Caddy version that caddy/go.mod pins, which scripts/caddy-build.sh builds.
func caddyVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(luaRepoFile(t, "caddy/go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/caddyserver/caddy/v2 (v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("caddy/go.mod requires no github.com/caddyserver/caddy/v2")
	}
	return string(m[1])
}

// guideCaddy is docs/caddy.md for the guide walk of guide_test.go: each node installs the Caddy the
// guide's build command gives (scripts/caddy-build.sh, from the test user's cache), gets its AppRole from
// node-approle.sh, and runs the guide's JSON session_tickets under the test's site.
var guideCaddy = guideSpec{
	path: "docs/caddy.md", keyring: "web", format: "go", conf: "caddy-json",
	settings: "rotation_period=1h retain=12h", retain: agentRetain,
	noPackages: true, unnamedTickets: true,
}

// TestGuideCaddy follows docs/caddy.md on two nodes (guide_test.go says how): the guide's build command
// (scripts/caddy-build.sh, whose Caddy version the guide names), node-approle.sh per node, and the guide's
// JSON key source in each node's Caddy, started from the binary the guide's commands installed. Then a TLS
// client checks that each node's fresh ticket decrypts under the current key read from Vault, that each
// node resumes the other's tickets and one under the published next key, and that a rotation reaches
// both nodes as the guide promises: without a reload (the same Caddy process, still on its first config).
func TestGuideCaddy(t *testing.T) {
	version := caddyVersion(t)
	w, blocks := startGuideWalk(t, guideCaddy, "caddy", "Caddy reads the 0600 root credential files node-approle.sh writes")
	guide, err := os.ReadFile(luaRepoFile(t, w.guide.path))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(guide), "`make caddy` builds Caddy "+version+" ") {
		t.Errorf("%s must say that `make caddy` builds Caddy %s (caddy/go.mod)", w.guide.path, version)
	}
	// The guide's build command runs scripts/caddy-build.sh: build (or find) the binary in the test user's
	// cache first, as the walk's HOME is a fresh directory.
	caddyBinary(t)
	cache := os.Getenv("TICKETKEYS_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "ticketkeys")
	}
	w.env = append(w.env, "TICKETKEYS_CACHE="+cache)
	for _, n := range w.nodes {
		// What every Debian machine has (base-files), where the guide's build installs Caddy.
		if err := os.MkdirAll(filepath.Join(n.root, "usr/local/bin"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	listeners := w.walkAndStart(t, blocks, w.startCaddy)
	for _, n := range w.nodes {
		out, err := exec.Command(filepath.Join(n.root, "usr/local/bin/caddy"), "version").Output()
		if err != nil || !strings.HasPrefix(string(out), version+" ") {
			t.Errorf("node %s: the Caddy the guide installed says %q (%v); want Caddy %s of caddy/go.mod", n.name, out, err, version)
		}
	}
	w.checkFleetThroughRotation(t, listeners)

	// No reload: the same Caddy process with the config it started with; the keys changed in it.
	for _, n := range w.nodes {
		n.checkModes(t, map[string]os.FileMode{"/etc/caddy/ticketkeys": os.ModeDir | 0o700,
			"/etc/caddy/ticketkeys/role-id": 0o600, "/etc/caddy/ticketkeys/secret-id": 0o600})
		select {
		case <-n.caddy.done:
			t.Errorf("node %s: Caddy (pid %d) exited", n.name, n.caddy.cmd.Process.Pid)
			continue
		default:
		}
		if g := n.caddy.generation(t, w.cert); g != "1" {
			t.Errorf("node %s: Caddy serves config generation %q, want 1: a reload happened", n.name, g)
		}
		if changes := len(n.caddy.logEntries("session ticket keys changed")); changes < 1 {
			t.Errorf("node %s: Caddy logged no key change after its first window; want the rotation's", n.name)
		} else {
			t.Logf("node %s: Caddy pid %d, config generation 1, %d key changes logged", n.name, n.caddy.cmd.Process.Pid, changes)
		}
	}
	w.finish(t)
}

// startCaddy runs the node's Caddy (the binary the guide's commands installed in /usr/local/bin) with the
// guide's JSON key source (apps.tls.session_tickets, its paths under the node's root) in the test's site
// config (one HTTPS server on 127.0.0.1, the test's certificate), and returns the node's address for the
// guide's port 443. The test's CA stands in for the guide's ca_file (the test's Vault speaks plain HTTP).
func (w *guideWalk) startCaddy(t *testing.T, conf string, n *guideNode) map[string]string {
	t.Helper()
	conf = w.subst(conf, n)
	if err := unsafePath(conf, n.root+"/"); err != nil {
		t.Fatalf("%s: Caddy JSON: %v", w.guide.path, err)
	}
	var cfg struct {
		Apps struct {
			TLS struct {
				SessionTickets map[string]any `json:"session_tickets"`
			} `json:"tls"`
		} `json:"apps"`
	}
	dec := json.NewDecoder(strings.NewReader(conf))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("%s: the Caddy JSON: %v (the test runs its apps.tls.session_tickets only)", w.guide.path, err)
	}
	tickets := cfg.Apps.TLS.SessionTickets
	if source, _ := tickets["key_source"].(map[string]any); source != nil {
		if ca, _ := source["ca_file"].(string); ca != "" {
			if err := os.MkdirAll(filepath.Dir(ca), 0o755); err != nil {
				t.Fatal(err)
			}
			_, _, caFile := w.cert.WritePEM(t.TempDir())
			b, err := os.ReadFile(caFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(ca, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	n.caddy = startCaddyNode(t, filepath.Join(n.root, "usr/local/bin/caddy"), n.name, w.cert, tickets)
	return map[string]string{"443": n.caddy.addr}
}
