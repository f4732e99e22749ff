//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// caddyBuild is what scripts/caddy-build.sh builds: the Caddy version that caddy/go.mod requires, the
// module path of caddy/ (caddy/go.mod) and of the repository (go.mod), which caddy/go.mod replaces with
// the checkout.
type caddyBuild struct {
	version, module, root string
}

// readCaddyBuild reads the build's facts from caddy/go.mod and go.mod, and checks that the main package
// caddy-build.sh builds (caddy/cmd/caddy) imports the module.
func readCaddyBuild(t *testing.T) caddyBuild {
	t.Helper()
	read := func(rel string) string {
		b, err := os.ReadFile(luaRepoFile(t, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	find := func(rel, re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(read(rel))
		if m == nil {
			t.Fatalf("%s: no line matching %s", rel, re)
		}
		return m[1]
	}
	b := caddyBuild{
		version: find("caddy/go.mod", `(?m)^\s*github\.com/caddyserver/caddy/v2 (v\S+)`),
		module:  find("caddy/go.mod", `(?m)^module (\S+)`),
		root:    find("go.mod", `(?m)^module (\S+)`),
	}
	if main := read("caddy/cmd/caddy/main.go"); !strings.Contains(main, `_ "`+b.module+`"`) {
		t.Fatalf("caddy/cmd/caddy/main.go (what scripts/caddy-build.sh builds) does not import %s", b.module)
	}
	if !strings.Contains(read("scripts/caddy-build.sh"), `"$root/caddy" go build -trimpath -o "$build_tmp" ./cmd/caddy`) {
		t.Fatal("scripts/caddy-build.sh no longer builds ./cmd/caddy in caddy/: update readCaddyBuild")
	}
	return b
}

// xcaddyCommand is the guide's xcaddy command for the build: it must build what scripts/caddy-build.sh
// builds, into /usr/local/bin/caddy.
func (b caddyBuild) xcaddyCommand() string {
	return fmt.Sprintf("xcaddy build %s --output /usr/local/bin/caddy \\\n    --with %s=./caddy \\\n    --replace %s=.", b.version, b.module, b.root)
}

// guideCaddy is docs/caddy.md for the guide walk of guide_test.go: each node gets the guide's Caddy
// (the cached build of scripts/caddy-build.sh stands in for the xcaddy command, which must name the same
// Caddy version and module paths), its AppRole from node-approle.sh, and runs the guide's JSON
// session_tickets under the test's site.
func guideCaddy(b caddyBuild) guideSpec {
	return guideSpec{
		path: "docs/caddy.md", keyring: "web", format: "go", conf: "caddy-json",
		settings: "rotation_period=1h retain=12h", retain: agentRetain,
		noPackages: true, unnamedTickets: true,
		nodeSubs: func(string) []guideSubst {
			return []guideSubst{{b.xcaddyCommand(), `install -m 0755 "$CADDY_BIN" /usr/local/bin/caddy`,
				"the cached build of scripts/caddy-build.sh (the same Caddy and module, pinned by caddy/go.sum) instead of a " +
					"build with xcaddy, which is not installed here and would resolve and build Caddy's dependencies again (minutes)"}}
		},
	}
}

// TestGuideCaddy follows docs/caddy.md on two nodes (guide_test.go says how): the guide's build command
// (checked against what scripts/caddy-build.sh builds), node-approle.sh per node, and the guide's JSON
// key source in each node's Caddy, started from the binary the guide's commands installed. Then a TLS
// client checks that each node's fresh ticket decrypts under the current key read from Vault, that each
// node resumes the other's tickets and one under the published next key, and that a rotation reaches
// both nodes as the guide promises: without a reload (same Caddy PID, same config).
func TestGuideCaddy(t *testing.T) {
	build := readCaddyBuild(t)
	w, blocks := startGuideWalk(t, guideCaddy(build), "caddy", "Caddy reads the 0600 root credential files node-approle.sh writes")
	guide, err := os.ReadFile(luaRepoFile(t, w.guide.path))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(guide), "`make caddy` builds Caddy "+build.version+" ") {
		t.Errorf("%s must say that `make caddy` builds Caddy %s (caddy/go.mod)", w.guide.path, build.version)
	}
	if !strings.Contains(string(guide), build.xcaddyCommand()) {
		t.Fatalf("%s must build what scripts/caddy-build.sh builds (Caddy %s from caddy/go.mod, module %s, replace %s); want its xcaddy command to read:\n%s",
			w.guide.path, build.version, build.module, build.root, build.xcaddyCommand())
	}
	w.env = append(w.env, "CADDY_BIN="+caddyBinary(t))
	for _, n := range w.nodes {
		// What every Debian machine has (base-files), where the guide's build installs Caddy.
		if err := os.MkdirAll(filepath.Join(n.root, "usr/local/bin"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	listeners := w.walkAndStart(t, blocks, w.startCaddy)
	pids := map[*guideNode]int{}
	for _, n := range w.nodes {
		pids[n] = n.caddy.cmd.Process.Pid
	}
	w.checkFleetThroughRotation(t, listeners)

	// No reload: the same Caddy process with the config it started with; the keys changed in it.
	for _, n := range w.nodes {
		n.checkModes(t, map[string]os.FileMode{"/etc/caddy/ticketkeys": os.ModeDir | 0o700,
			"/etc/caddy/ticketkeys/role-id": 0o600, "/etc/caddy/ticketkeys/secret-id": 0o600})
		select {
		case <-n.caddy.done:
			t.Errorf("node %s: Caddy (pid %d) exited", n.name, pids[n])
			continue
		default:
		}
		if err := syscall.Kill(pids[n], 0); err != nil || n.caddy.cmd.Process.Pid != pids[n] {
			t.Errorf("node %s: Caddy pid %d: %v", n.name, pids[n], err)
		}
		if g := n.caddy.generation(t, w.cert); g != "1" {
			t.Errorf("node %s: Caddy serves config generation %q, want 1: a reload happened", n.name, g)
		}
		if changes := len(n.caddy.logEntries("session ticket keys changed")); changes < 1 {
			t.Errorf("node %s: Caddy logged no key change after its first window; want the rotation's", n.name)
		} else {
			t.Logf("node %s: Caddy pid %d, config generation 1, %d key changes logged", n.name, pids[n], changes)
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
