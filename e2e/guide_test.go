//go:build e2e

package e2e

// The guide tests (TestGuideNginxLua, TestGuideNginxAgent, TestGuideHAProxy, TestGuideEnvoy, TestGuideCaddy)
// follow a guide of docs/ as a new user would, from the guide's own text: every fenced code block of the
// guide is run, used as the server's configuration, compared with a file the guide's commands wrote, or
// explicitly skipped, as an HTML comment before its fence says (invisible to readers):
//
//	<!-- guide-test: run-once -->          shell commands on a Vault admin shell, once
//	<!-- guide-test: run-per-node -->      shell commands run for each node (two here)
//	<!-- guide-test: run-on-node N -->     shell commands run for node N only (1 or 2): the guide shows two
//	                                       equivalent ways of one step, and the test takes one per node
//	<!-- guide-test: nginx-conf -->        the nginx.conf every node runs
//	<!-- guide-test: haproxy-cfg -->       the haproxy.cfg every node runs
//	<!-- guide-test: envoy-yaml -->        the envoy.yaml every node would run (checked, not run: no Envoy here)
//	<!-- guide-test: caddy-json -->        the Caddy JSON configuration every node runs
//	<!-- guide-test: installed PATH -->    an excerpt of the file the guide's commands wrote at PATH
//	<!-- guide-test: skip REASON -->       not meant to be run (output, an example for elsewhere)
//
// A block without a marker fails the test, so a new block cannot go untested by accident. A run block is
// run by bash (-euo pipefail) from the repository root, except a `vault agent ...` line, which the test
// starts as a long-running process (the guide's node daemon) and stops by PID at the end.
//
// The test changes only what a test machine must, each change listed in its guide's substitutions or
// below, and every listed string must occur in the guide (so the guide cannot change under the test
// unnoticed):
//   - every node's file system root is a directory in /tmp (mode 0755, so that nginx workers running as
//     www-data reach it as they reach /): the guide's commands run with DESTDIR set to it, and every path
//     under guideRootedPrefixes (/etc/nginx/, /etc/haproxy/, /etc/caddy/, /etc/vault-agent/, /var/lib/ticketkeys/, /run/haproxy/,
//     /run/haproxy.pid, /usr/local/bin/, /usr/local/share/ticketkeys/, /etc/envoy/), in the guide's commands, in its server configuration
//     and in the text files the commands wrote under the node's /etc, is moved under it; a command or a
//     configuration naming any other absolute path (but nginx's module directory) fails the test before it
//     runs, and so does a command other than those of guideCommands and the bootstrap/ scripts;
//   - the Vault server is the test's own (internal/vaulttest, plugin installed in its plugin directory,
//     not registered: the guide registers it), the admin shell has its root token, a `vault` on PATH and
//     the Go build and module caches of the test's user (for the guide's `go build` and `go run`);
//   - the node's /usr/sbin/nginx, first on its Agents' PATH, runs Debian's nginx with the node's prefix,
//     configuration, pid file and error log (what a real node's nginx has compiled in), so that an Agent's
//     `nginx -s reload` reaches the node's nginx, never the machine's; until the node's nginx runs it fails
//     as `nginx -s reload` does with no nginx running;
//   - every `listen` (nginx) or `bind` (HAProxy) gets its own port on 127.0.0.1; the servers (Debian's
//     packages) run through internal/servertest (private prefix, pid file and log); the test's
//     certificate stands in for the certificate files the configuration names;
//   - Caddy (TestGuideCaddy) is the binary the guide's commands installed in the node's /usr/local/bin,
//     run with the guide's JSON key source (apps.tls.session_tickets) in the test's own site config.
//
// Then a real TLS client (package fleetcheck, per TLS listener of the guide's configuration, across the
// two nodes) checks that each node's fresh ticket names and decrypts under the current key read from
// Vault, that each node resumes the other's tickets and one under the published next key, and that a
// rotation reaches both nodes; each test adds what its guide promises about how the rotation arrives
// (no reload, or one reload) and checks that no command output or log holds key material.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ticketkeys "github.com/ticketkeys/vault-plugin-secrets-ticketkeys"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/fleetcheck"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// guideBlock is one fenced code block of a guide and what its marker says to do with it.
type guideBlock struct {
	Line int    // line of the opening fence, 1-based
	Role string // run-once, run-per-node, run-on-node, nginx-conf, haproxy-cfg, envoy-yaml, caddy-json, installed, skip
	Arg  string // run-on-node: the node's number; installed: the file's path; skip: why
	Text string // the block's lines, without the fences
}

// guideMarker is the HTML comment right before a fence.
var guideMarker = regexp.MustCompile(`^<!-- guide-test: ([a-z-]+)(?: (.*?))? -->$`)

// guideRoles says whether each role needs an argument.
var guideRoles = map[string]bool{"run-once": false, "run-per-node": false, "run-on-node": true,
	"nginx-conf": false, "haproxy-cfg": false, "installed": true, "skip": true,
	"envoy-yaml": false, "caddy-json": false}

// guideRoleList names the roles in the errors of a wrong marker.
const guideRoleList = "roles: run-once, run-per-node, run-on-node N, nginx-conf, haproxy-cfg, envoy-yaml, caddy-json, installed PATH, skip REASON"

// readGuide returns the fenced code blocks of the guide at rel, failing the test for a block without a
// valid marker on the line right before its fence.
func readGuide(t *testing.T, rel string) []guideBlock {
	t.Helper()
	b, err := os.ReadFile(luaRepoFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	blocks, errs := parseGuide(rel, string(b))
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return blocks
}

// parseGuide returns the fenced code blocks of text (the guide at rel) with their markers, and an error
// for each block whose marker is missing or wrong.
func parseGuide(rel, text string) ([]guideBlock, []error) {
	lines := strings.Split(text, "\n")
	var blocks []guideBlock
	var errs []error
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(strings.TrimSpace(lines[i]), "```") {
			continue
		}
		blk := guideBlock{Line: i + 1}
		marker := ""
		if i > 0 {
			marker = lines[i-1]
		}
		if err := blk.setMarker(marker); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", rel, blk.Line, err))
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			errs = append(errs, fmt.Errorf("%s:%d: code block never closed", rel, blk.Line))
			break
		}
		blk.Text = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, blk)
	}
	return blocks, errs
}

// setMarker reads the block's role and argument from the line before its fence.
func (b *guideBlock) setMarker(line string) error {
	m := guideMarker.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return errors.New("code block without a <!-- guide-test: ROLE --> marker on the line before it: say how the " +
			"guide test uses it (" + guideRoleList + ")")
	}
	needsArg, known := guideRoles[m[1]]
	switch {
	case !known:
		return fmt.Errorf("unknown guide-test role %q (%s)", m[1], guideRoleList)
	case needsArg && m[2] == "":
		return fmt.Errorf("guide-test role %q needs an argument (run-on-node: the node's number; installed: the file's path; skip: why)", m[1])
	case !needsArg && m[2] != "":
		return fmt.Errorf("guide-test role %q takes no argument, got %q", m[1], m[2])
	}
	if m[1] == "run-on-node" {
		if n, err := strconv.Atoi(m[2]); err != nil || n < 1 || n > 2 {
			return fmt.Errorf("guide-test role run-on-node: the node's number must be 1 or 2 (the test runs two nodes), got %q", m[2])
		}
	}
	b.Role, b.Arg = m[1], m[2]
	return nil
}

// A block the guide test would not know what to do with fails it: no marker, an unknown role, a missing
// or unexpected argument, an unclosed fence.
func TestGuideMarkers(t *testing.T) {
	for _, c := range []struct {
		name, text, want string
	}{
		{"marked", "text\n<!-- guide-test: run-once -->\n```sh\nls\n```\n", ""},
		{"skip with reason", "<!-- guide-test: skip output -->\n```\n[error] ...\n```\n", ""},
		{"one node", "<!-- guide-test: run-on-node 2 -->\n```sh\nls\n```\n", ""},
		{"haproxy.cfg", "<!-- guide-test: haproxy-cfg -->\n```haproxy\nglobal\n```\n", ""},
		{"envoy.yaml", "<!-- guide-test: envoy-yaml -->\n```yaml\nstatic_resources:\n```\n", ""},
		{"caddy JSON", "<!-- guide-test: caddy-json -->\n```json\n{}\n```\n", ""},
		{"no marker", "text\n\n```sh\nls\n```\n", "guide.md:3: code block without a <!-- guide-test: ROLE --> marker"},
		{"marker not right before", "<!-- guide-test: run-once -->\n\n```sh\nls\n```\n", "guide.md:3: code block without"},
		{"unknown role", "<!-- guide-test: run -->\n```sh\nls\n```\n", `guide.md:2: unknown guide-test role "run"`},
		{"skip without reason", "<!-- guide-test: skip -->\n```\nout\n```\n", `guide-test role "skip" needs an argument`},
		{"run with argument", "<!-- guide-test: run-per-node twice -->\n```sh\nls\n```\n", `role "run-per-node" takes no argument, got "twice"`},
		{"no such node", "<!-- guide-test: run-on-node 3 -->\n```sh\nls\n```\n", `must be 1 or 2 (the test runs two nodes), got "3"`},
		{"node by name", "<!-- guide-test: run-on-node a -->\n```sh\nls\n```\n", `must be 1 or 2 (the test runs two nodes), got "a"`},
		{"unclosed", "<!-- guide-test: run-once -->\n```sh\nls\n", "guide.md:2: code block never closed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errs := parseGuide("guide.md", c.text)
			switch {
			case c.want == "" && len(errs) > 0:
				t.Errorf("errors %v, want none", errs)
			case c.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), c.want)):
				t.Errorf("errors %v, want one saying %q", errs, c.want)
			}
		})
	}
}

// guideSubst is one substitution of the guide's text for a real machine by the test machine's.
type guideSubst struct {
	Old, New string
	Why      string
}

// guideSpec is what a guide test tells the shared walk about its guide.
type guideSpec struct {
	path     string        // the guide, relative to the repository root
	keyring  string        // the keyring its commands create and its nodes read
	format   string        // the format its nodes read (the ticket layout fleetcheck checks)
	conf     string        // the role of its server configuration block: nginx-conf, haproxy-cfg, envoy-yaml or caddy-json
	settings string        // the keyring settings its `vault write` gives, replaced by a rotation within the test
	retain   time.Duration // the test's retain for those settings
	// nodeSubs lists the guide's own substitutions for a node, besides those of guideWalk.subs; may be nil.
	// noPackages: the guide installs no Debian package (Envoy is not packaged for Debian; Caddy is built
	// from the checkout): no apt-get line.
	noPackages bool
	nodeSubs   func(node string) []guideSubst
	// unnamedTickets: its nodes issue crypto/tls tickets without a key name (fleetcheck.Config.UnnamedTickets).
	unnamedTickets bool
}

// subs lists the substitutions of the guide's text for the admin shell (node "") or a node. Every guide
// names the Vault server and its plugin directory as the test replaces them, creates its keyring with
// `vault write ... settings` and installs its packages with `apt-get install` (unless noPackages).
func (w *guideWalk) subs(node string) []guideSubst {
	subs := []guideSubst{
		{"https://vault.internal:8200", w.s.Addr, "the test's Vault server"},
		{"/etc/vault.d/plugins/", w.s.PluginDir + "/", "the test Vault's plugin_directory, where the plugin binary is installed"},
		{w.guide.settings, fmt.Sprintf("rotation_period=%s retain=%s", agentPeriod, w.guide.retain), "a rotation within the test"},
	}
	if !w.guide.noPackages {
		subs = append(subs, guideSubst{"apt-get install ", "dpkg-query -W ", "the test installs no package; it fails unless the guide's packages are installed (scripts/debian-packages.txt)"})
	}
	subs = append(subs, w.extraSubs...)
	if node != "" {
		subs = append(subs, guideSubst{"$(hostname)", node, "two nodes on one machine"})
		if w.guide.nodeSubs != nil {
			subs = append(subs, w.guide.nodeSubs(node)...)
		}
	}
	return subs
}

// guideRootedPrefixes are the absolute paths the guides install into; each node has them under its root.
var guideRootedPrefixes = regexp.MustCompile(`(^|[^A-Za-z0-9_.~/-])(/etc/nginx/|/etc/haproxy/|/etc/caddy/|/etc/vault-agent/|/run/haproxy/|/run/haproxy\.pid\b|/usr/local/bin/|/usr/local/share/ticketkeys/|/var/lib/ticketkeys/|/etc/envoy/)`)

// guideAbsPath finds absolute paths in shell text (not URLs: "//" is not a path start here).
var guideAbsPath = regexp.MustCompile(`(?:^|[\s"'=(<>])(/[A-Za-z0-9_.][^\s"'();|&<>]*)`)

// guideWalk is one walk through a guide on two nodes: the test's Vault and certificate, the admin shell's
// environment, the output of every command, and a watch of the keyring's windows (their material, for the
// leak check).
type guideWalk struct {
	guide guideSpec
	s     *vaulttest.Server
	cert  *testcert.Cert
	nodes []*guideNode
	repo  string // where the guide's commands run: the checkout, or /usr/share/ticketkeys of the release
	env   []string
	// extraSubs are substitutions of one test for the admin shell and every node (each must occur in the
	// guide, as the others).
	extraSubs []guideSubst
	outLog    string // every command's output, for the leak check
	watch     *windowWatch
	start     time.Time
}

// guideNode is one machine set up by the guide.
type guideNode struct {
	name   string
	root   string         // stands for /
	ports  map[string]int // the guide's listen or bind port -> this node's port on 127.0.0.1
	agents []*vaulttest.Process
	server *servertest.Proc // the node's nginx or HAProxy
	caddy  *caddyNode       // or its Caddy
}

// startGuideWalk reads the guide (every block marked), skips the test unless it runs as root (rootWhy: why
// the guide's node commands need root), and starts the test's Vault (plugin installed, not registered;
// vaultOpts may name the plugin binary), the window watch and two nodes, prefix-a and prefix-b. The test
// runs in parallel with the others.
func startGuideWalk(t *testing.T, guide guideSpec, prefix, rootWhy string, vaultOpts ...vaulttest.Option) (*guideWalk, []guideBlock) {
	t.Helper()
	t.Parallel()
	blocks := readGuide(t, guide.path)
	if os.Getuid() != 0 {
		t.Skip("the guide's node commands run as root: " + rootWhy)
	}
	start := time.Now()
	s := vaulttest.Start(t, append([]vaulttest.Option{vaulttest.WithoutPluginRegistration()}, vaultOpts...)...)
	w := newGuideWalk(t, s, guide)
	w.start = start
	w.cert = testcert.New(t, testcert.ECDSAP256)
	w.watch = watchWindowsFormat(t, s, guide.keyring, guide.format)
	w.nodes = []*guideNode{newGuideNode(t, prefix+"-a"), newGuideNode(t, prefix+"-b")}
	return w, blocks
}

func newGuideWalk(t *testing.T, s *vaulttest.Server, guide guideSpec) *guideWalk {
	t.Helper()
	bin := t.TempDir()
	if err := os.Symlink(s.VaultBin, filepath.Join(bin, "vault")); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	env := []string{
		"PATH=" + bin + ":" + os.Getenv("PATH"),
		"HOME=" + home,
		"VAULT_ADDR=" + s.Addr,
		"VAULT_TOKEN=" + s.RootToken,
	}
	// The test user's Go caches, so that the guide's `go build` and `go run` do not start from nothing.
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH", "GOFLAGS", "GOTOOLCHAIN", "GOPROXY").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	for i, v := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		env = append(env, []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOFLAGS", "GOTOOLCHAIN", "GOPROXY"}[i]+"="+v)
	}
	return &guideWalk{
		guide:  guide,
		s:      s,
		repo:   servertest.RepoRoot(t),
		env:    env,
		outLog: filepath.Join(t.TempDir(), "guide-output.log"),
	}
}

// newGuideNode makes the node's root: a fresh directory in the system temp dir, mode 0755 like /, removed
// when the test ends, with the node's /usr/sbin/nginx (see setNginxWrapper), failing until the node's
// nginx runs.
func newGuideNode(t *testing.T, name string) *guideNode {
	t.Helper()
	root, err := os.MkdirTemp("", "ticketkeys-guide-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &guideNode{name: name, root: root, ports: map[string]int{}}
	n.setNginxWrapper(t, fmt.Sprintf("echo 'nginx: no nginx runs on node %s yet' >&2; exit 1", name))
	return n
}

// setNginxWrapper writes the node's /usr/sbin/nginx, a shell script running body, by rename (an Agent may
// run it meanwhile).
func (n *guideNode) setNginxWrapper(t *testing.T, body string) {
	t.Helper()
	dir := filepath.Join(n.root, "usr/sbin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".nginx.tmp")
	script := fmt.Sprintf("#!/bin/sh\n# nginx of test node %s (e2e/guide_test.go)\n%s\n", n.name, body)
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "nginx")); err != nil {
		t.Fatal(err)
	}
}

// subst applies the guide's substitutions and, for a node, moves the guide's install paths under its root.
func (w *guideWalk) subst(text string, n *guideNode) string {
	name := ""
	if n != nil {
		name = n.name
	}
	for _, sb := range w.subs(name) {
		text = strings.ReplaceAll(text, sb.Old, sb.New)
	}
	if n != nil {
		text = n.rooted(text)
	}
	return text
}

// rooted moves every install path in text under the node's root.
func (n *guideNode) rooted(text string) string {
	return guideRootedPrefixes.ReplaceAllString(text, "${1}"+n.root+"${2}")
}

// checkSubstitutionsMatch fails the test before anything runs unless every substitution (for the node
// named node) occurs in the blocks the test runs: a guide that changed such a line would otherwise run
// unsubstituted (a real `apt-get install`, say).
func (w *guideWalk) checkSubstitutionsMatch(t *testing.T, blocks []guideBlock, node string) {
	t.Helper()
	var used strings.Builder
	for _, b := range blocks {
		if strings.HasPrefix(b.Role, "run-") || b.Role == w.guide.conf {
			used.WriteString(b.Text)
		}
	}
	for _, sb := range w.subs(node) {
		if !strings.Contains(used.String(), sb.Old) {
			t.Errorf("%s no longer contains %q, which the test replaces (%s): update the test's substitutions (guideWalk.subs, guideSpec)", w.guide.path, sb.Old, sb.Why)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// guideCommands are the commands the test lets the guide run on this machine: each touches only the test's
// Vault and the paths its arguments name (which unsafePath checks). A command line starting otherwise fails
// the test.
// scripts/caddy-build.sh writes only its cache (TICKETKEYS_CACHE) and prints the binary's path.
var guideCommands = []string{"sh", "bash", "vault", "dpkg-query", "install", "umask", "grep", "scripts/caddy-build.sh"}

// guideCommandSplit splits a shell line into the commands of a list or pipeline (roughly: enough to see
// each command's first word), once guideRedirect has taken the redirections out.
var guideCommandSplit = regexp.MustCompile(`&&|\|\||[;|&]`)

// guideCommandSubst finds a command substitution $(...) (not nested), whose command unsafeCommand checks
// as a line of its own.
var guideCommandSubst = regexp.MustCompile(`\$\(([^()]*)\)`)

// guideRedirect finds the redirections with an & (2>&1, >&2, &>FILE), which are not list separators.
var guideRedirect = regexp.MustCompile(`\d*>&\d*|&>>?`)

// unsafeCommand returns an error naming the first command of script outside guideCommands, the
// repository's bootstrap/ scripts, `go build`/`go run` of the repository's packages and the programs in
// binDirs (a node's /usr/local/bin/, which only the guide's own builds fill), or nil.
func unsafeCommand(script string, binDirs ...string) error {
	var lines []string
	for _, line := range strings.Split(script, "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, m := range guideCommandSubst.FindAllStringSubmatch(line, -1) {
			lines = append(lines, m[1])
		}
		lines = append(lines, guideCommandSubst.ReplaceAllString(line, "SUBST"))
	}
	for _, line := range lines {
		for _, c := range guideCommandSplit.Split(guideRedirect.ReplaceAllString(line, " > "), -1) {
			f := strings.Fields(strings.TrimLeft(c, " \t({"))
			if len(f) == 0 || slices.Contains(guideCommands, f[0]) || strings.HasPrefix(f[0], "bootstrap/") ||
				slices.ContainsFunc(binDirs, func(dir string) bool { return strings.HasPrefix(f[0], dir) }) {
				continue
			}
			if f[0] == "go" && len(f) > 2 && (f[1] == "build" || f[1] == "run") &&
				slices.ContainsFunc(f[2:], func(a string) bool { return strings.HasPrefix(a, "./") }) {
				continue
			}
			return fmt.Errorf("the test does not run %q on this machine: add it to guideCommands if it touches only the "+
				"test's Vault and the paths it names, or add a substitution: %s", strings.Join(f[:min(2, len(f))], " "), strings.TrimSpace(line))
		}
	}
	return nil
}

// unsafePath returns an error naming the first absolute path of cmd outside the allowed directories (each
// given with its trailing slash) and /dev/null, or nil: the guide would write where the test must not.
func unsafePath(cmd string, allowed ...string) error {
	for _, m := range guideAbsPath.FindAllStringSubmatch(cmd, -1) {
		if m[1] == "/dev/null" || slices.ContainsFunc(allowed, func(dir string) bool { return strings.HasPrefix(m[1]+"/", dir) }) {
			continue
		}
		return fmt.Errorf("the command names %s, outside the test's node root and Vault: add a substitution for it "+
			"(the test's substitutions, guideRootedPrefixes) before the test may run it", m[1])
	}
	return nil
}

// The walk refuses, before running anything, a command it does not know to be harmless on the test machine
// and an absolute path outside the node's root and the test's Vault.
func TestGuideRefusesUnsafeCommands(t *testing.T) {
	root, vault := "/tmp/ticketkeys-guide-a-1", "/tmp/TestGuide1/001"
	for _, c := range []struct {
		script, want string
	}{
		{"sh bootstrap/agent/nginx-lua/install.sh -k web -a http://127.0.0.1:8200   # as root", ""},
		{"bootstrap/node-approle.sh web guide-a " + root + "/etc/vault-agent/ticketkeys", ""},
		{"bootstrap/register.sh " + vault + "/plugins/vault-plugin-secrets-ticketkeys", ""},
		{"dpkg-query -W nginx >/dev/null && vault write ticketkeys/keys/web rotation_period=10s", ""},
		{"# on the node, as root (Agent writes into " + root + "/etc/nginx/ticketkeys):", ""},
		{"install -d -m 0700 " + root + "/etc/vault-agent/ticketkeys", ""},
		{"(umask 077\n vault read -field=role_id auth/approle/role/r/role-id > " + root + "/etc/vault-agent/ticketkeys/role-id)", ""},
		{"go build -o " + root + "/usr/local/bin/ticketkeys-haproxy-push ./cmd/ticketkeys-haproxy-push", ""},
		{"go run ./bootstrap/agent/cmd/ticketkeys-agent-config -kind nginx > " + root + "/etc/vault-agent/ticketkeys/agent.hcl", ""},
		{"vault read sys/auth/approle >/dev/null 2>&1 || vault auth enable approle", ""},
		{root + "/usr/local/bin/caddy list-modules | grep -x tls.stek.ticketkeys", ""},
		{`install -m 0755 "$(scripts/caddy-build.sh)" ` + root + "/usr/local/bin/caddy", ""},
		{`install -m 0755 "$(nginx -s reload)" ` + root + "/usr/local/bin/caddy", `does not run "nginx -s"`},
		{"/usr/local/bin/caddy list-modules", `does not run "/usr/local/bin/caddy list-modules"`},
		{root + "-other/usr/local/bin/caddy run", `does not run`},
		{"apt-get install nginx", `does not run "apt-get install"`},
		{"vault status 2>&1 && nginx -t", `does not run "nginx -t"`},
		{"vault status >&2 & nginx -t", `does not run "nginx -t"`},
		{"vault status && systemctl reload nginx", `does not run "systemctl reload"`},
		{"nginx -t | tee log", `does not run "nginx -t"`},
		{"sh bootstrap/agent/nginx-lua/install.sh; nginx -s reload", `does not run "nginx -s"`},
		{"(nginx -s reload)", `does not run "nginx -s"`},
		{"go install example.com/tool@latest", `does not run "go install"`},
		{"go run example.com/tool@latest", `does not run "go run"`},
		{"bootstrap/node-approle.sh web n1 /etc/vault-agent/ticketkeys", "names /etc/vault-agent/ticketkeys, outside"},
		{"sh install.sh >/var/log/install.log", "names /var/log/install.log, outside"},
		{"bootstrap/node-approle.sh web n1 " + root + "-other/etc", "names " + root + "-other/etc, outside"},
		{"go build -o /usr/bin/tool ./cmd/tool", "names /usr/bin/tool, outside"},
		{"install -d -m 0700 /etc/vault-agent/ticketkeys", "names /etc/vault-agent/ticketkeys, outside"},
	} {
		err := unsafeCommand(c.script, root+"/usr/local/bin/")
		if err == nil {
			err = unsafePath(c.script, root+"/", vault+"/")
		}
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%q: %v; want %s", c.script, err, map[bool]string{true: "no error", false: "an error saying " + strconv.Quote(c.want)}[c.want == ""])
		}
	}
}

// walkAndStart walks the guide, then starts each node's server with the guide's configuration by
// startServer (after the Agent, whose files the server needs at start), and returns the guide's TLS
// listeners: the guide's port -> each node's address.
func (w *guideWalk) walkAndStart(t *testing.T, blocks []guideBlock, startServer func(*testing.T, string, *guideNode) map[string]string) map[string][]string {
	t.Helper()
	conf := w.walk(t, blocks)
	listeners := map[string][]string{}
	for _, n := range w.nodes {
		for gp, addr := range startServer(t, conf, n) {
			listeners[gp] = append(listeners[gp], addr)
		}
	}
	t.Logf("guide walked, 2 nodes up in %.1f s; TLS listeners (guide port: nodes) %v", time.Since(w.start).Seconds(), listeners)
	return listeners
}

// walk follows the guide's blocks in order on the admin shell and the nodes, checks the excerpts of
// written files, and returns the text of the guide's one server configuration block (role w.guide.conf).
func (w *guideWalk) walk(t *testing.T, blocks []guideBlock) string {
	t.Helper()
	w.checkSubstitutionsMatch(t, blocks, w.nodes[0].name)
	var conf string
	for _, b := range blocks {
		switch b.Role {
		case "run-once":
			w.run(t, b, nil)
		case "run-per-node":
			for _, n := range w.nodes {
				w.run(t, b, n)
			}
		case "run-on-node":
			i, _ := strconv.Atoi(b.Arg) // 1 or 2: setMarker checked it
			w.run(t, b, w.nodes[i-1])
		case "nginx-conf", "haproxy-cfg", "envoy-yaml", "caddy-json":
			if b.Role != w.guide.conf {
				t.Fatalf("%s:%d: a %s block in a guide whose test runs a %s", w.guide.path, b.Line, b.Role, w.guide.conf)
			}
			if conf != "" {
				t.Fatalf("%s:%d: a second %s block; the test runs one", w.guide.path, b.Line, b.Role)
			}
			conf = b.Text
		case "installed":
			for _, n := range w.nodes {
				w.checkInstalled(t, b, n)
			}
		case "skip":
			t.Logf("%s:%d: skipped: %s", w.guide.path, b.Line, b.Arg)
		}
	}
	if conf == "" {
		t.Fatalf("%s: no %s block", w.guide.path, w.guide.conf)
	}
	return conf
}

// run runs a run block on the admin shell (n == nil) or on node n.
func (w *guideWalk) run(t *testing.T, b guideBlock, n *guideNode) {
	t.Helper()
	text := w.subst(b.Text, n)
	allowed := []string{w.s.Dir + "/"}
	if n != nil {
		allowed = append(allowed, n.root+"/")
	}
	if err := unsafePath(text, allowed...); err != nil {
		t.Fatalf("%s:%d: %v:\n%s", w.guide.path, b.Line, err, text)
	}
	var script []string
	flush := func() {
		if slices.ContainsFunc(script, func(l string) bool { l = strings.TrimSpace(l); return l != "" && !strings.HasPrefix(l, "#") }) {
			var binDirs []string
			if n != nil {
				binDirs = append(binDirs, n.root+"/usr/local/bin/")
			}
			if err := unsafeCommand(strings.Join(script, "\n"), binDirs...); err != nil {
				t.Fatalf("%s:%d: %v", w.guide.path, b.Line, err)
			}
			w.shell(t, b, n, strings.Join(script, "\n"))
		}
		script = nil
	}
	// Join continuation lines, so that a daemon's command line is seen whole.
	for _, line := range strings.Split(strings.ReplaceAll(text, "\\\n", " "), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "vault" && f[1] == "agent" {
			flush()
			w.startAgent(t, b, n, f[2:])
			continue
		}
		script = append(script, line)
	}
	flush()
}

// shell runs script with bash from the repository root in the admin shell's environment (and DESTDIR set
// to the node's root), appending its output to the walk's log.
func (w *guideWalk) shell(t *testing.T, b guideBlock, n *guideNode, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = w.repo
	cmd.Env = w.env
	where := "admin shell"
	if n != nil {
		cmd.Env = append(slices.Clone(w.env), "DESTDIR="+n.root)
		where = "node " + n.name
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	f, ferr := os.OpenFile(w.outLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if ferr != nil {
		t.Fatal(ferr)
	}
	fmt.Fprintf(f, "### %s:%d (%s)\n%s\n", w.guide.path, b.Line, where, out.Bytes())
	f.Close()
	if err != nil {
		t.Fatalf("%s:%d (%s): following the guide failed: %v\n--- commands as run ---\n%s\n--- output ---\n%s", w.guide.path, b.Line, where, err, script, out.String())
	}
	t.Logf("%s:%d (%s): ran in %.1f s", w.guide.path, b.Line, where, time.Since(start).Seconds())
	if n != nil {
		n.rootInstalledFiles(t)
	}
}

// rootInstalledFiles moves the install paths in every text file under the node's /etc under its root, so
// the configuration files the guide's commands wrote name the node's files, as they name / on a real node.
// The nginx-lua installer's manifest keeps the real paths it looks itself up by (a second install.sh run in
// the walk would see the moved files as edited ones and write .new files beside them).
func (n *guideNode) rootInstalledFiles(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(n.root, "etc"), func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || d.Name() == ".install-manifest" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b, 0) >= 0 || !guideRootedPrefixes.Match(b) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(p, []byte(n.rooted(string(b))), fi.Mode().Perm())
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// startAgent starts the guide's `vault agent ARGS` line for node n, with the node's /usr/sbin first on its
// PATH, and waits for the first render of every template destination its configuration names.
func (w *guideWalk) startAgent(t *testing.T, b guideBlock, n *guideNode, args []string) {
	t.Helper()
	if n == nil {
		t.Fatalf("%s:%d: a vault agent line in a run-once block: the Agent runs on each node (run-per-node)", w.guide.path, b.Line)
	}
	var config string
	for i, a := range args {
		if strings.HasPrefix(a, "#") {
			args = args[:i]
			break
		}
		if strings.ContainsAny(a, `"'$;&|`) {
			t.Fatalf("%s:%d: vault agent argument %q: the test starts the Agent without a shell; keep its line to plain words", w.guide.path, b.Line, a)
		}
		if c, ok := strings.CutPrefix(a, "-config="); ok {
			config = c
		}
	}
	hcl, err := os.ReadFile(config)
	if err != nil {
		t.Fatalf("%s:%d: vault agent -config: %v", w.guide.path, b.Line, err)
	}
	var dests []string
	for _, m := range regexp.MustCompile(`(?m)^\s*destination\s*=\s*"([^"]+)"`).FindAllStringSubmatch(string(hcl), -1) {
		dests = append(dests, m[1])
	}
	if len(dests) == 0 {
		t.Fatalf("%s:%d: %s has no template destination", w.guide.path, b.Line, config)
	}
	path := "PATH=" + filepath.Join(n.root, "usr/sbin") + ":" + os.Getenv("PATH")
	agent := vaulttest.StartAgentCommand(t, w.s.VaultBin, []string{path}, args...)
	n.agents = append(n.agents, agent)
	what := fmt.Sprintf("first render of %s (the Agent of %s:%d, node %s)", strings.Join(dests, ", "), w.guide.path, b.Line, n.name)
	agent.WaitFor(t, 30*time.Second, what, func() bool {
		for _, d := range dests {
			if _, err := os.Stat(d); err != nil {
				return false
			}
		}
		return true
	})
	t.Logf("%s:%d (node %s): vault agent %s rendered %s", w.guide.path, b.Line, n.name, strings.Join(args, " "), strings.Join(dests, ", "))
}

// checkInstalled fails the test unless the file the guide's commands wrote at path (under the node's root)
// contains the block's text.
func (w *guideWalk) checkInstalled(t *testing.T, b guideBlock, n *guideNode) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(n.root, b.Arg))
	if err != nil {
		t.Fatalf("%s:%d: the guide shows %s as written by its commands: %v", w.guide.path, b.Line, b.Arg, err)
	}
	if !strings.Contains(string(got), n.rooted(b.Text)) {
		t.Errorf("%s:%d: the guide shows this excerpt of %s, which its commands did not write:\n%s\n--- written ---\n%s", w.guide.path, b.Line, b.Arg, b.Text, got)
	}
}

// guideListen finds listen directives (with an optional IPv4 address) of an nginx.conf.
var guideListen = regexp.MustCompile(`\blisten\s+(?:(?:\d{1,3}\.){3}\d{1,3}:)?(\d+)\b`)

// guideUserDirective finds the main-context user directive of an nginx.conf.
var guideUserDirective = regexp.MustCompile(`(?m)^\s*user\s`)

// startNginx runs the guide's nginx.conf on node n, points the node's /usr/sbin/nginx at it, and returns
// the node's address of every TLS listen port of the guide's configuration. nginx gets access_log off and
// the http temp paths in its private directory at the top of http{}, and, for a conf without a `user`
// line, nginx's built-in default (nobody, group nogroup) explicitly, as a real nginx started as root would
// use it (servertest would run the workers as root instead).
func (w *guideWalk) startNginx(t *testing.T, conf string, n *guideNode) map[string]string {
	t.Helper()
	conf = w.subst(conf, n)
	if err := unsafePath(conf, n.root+"/", "/usr/lib/nginx/modules/"); err != nil {
		t.Fatalf("%s: nginx.conf: %v", w.guide.path, err)
	}
	tlsAddrs := map[string]string{}
	conf = guideListen.ReplaceAllStringFunc(conf, func(m string) string {
		return "listen " + n.loopback(t, guideListen.FindStringSubmatch(m)[1])
	})
	for _, m := range regexp.MustCompile(`\blisten\s+(\S+)([^;]*);`).FindAllStringSubmatch(conf, -1) {
		if !strings.HasPrefix(m[1], "127.0.0.1:") {
			t.Fatalf("%s: nginx.conf listens on %s: the test maps only IPv4 and bare ports to 127.0.0.1", w.guide.path, m[1])
		}
		if slices.Contains(strings.Fields(m[2]), "ssl") {
			for gp, p := range n.ports {
				if m[1] == fmt.Sprintf("127.0.0.1:%d", p) {
					tlsAddrs[gp] = m[1]
				}
			}
		}
	}
	private := "http {\n    access_log off;\n"
	for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		private += fmt.Sprintf("    %s_temp_path %s/%s;\n", p, servertest.DirPlaceholder, p)
	}
	if !strings.Contains(conf, "http {\n") {
		t.Fatalf("%s: the nginx.conf has no `http {` line to put the test's private paths under", w.guide.path)
	}
	conf = strings.Replace(conf, "http {\n", private, 1)
	if !guideUserDirective.MatchString(conf) {
		// servertest would run the workers as root; a real nginx started as root runs them as its built-in
		// default user, which the test gives explicitly, so that a guide without `user` fails as a node would.
		conf = "user nobody nogroup;\n" + conf
	}
	for _, m := range regexp.MustCompile(`\bssl_certificate(?:_key)?\s+(\S+);`).FindAllStringSubmatch(conf, -1) {
		dir := filepath.Dir(m[1])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		w.cert.WritePEM(dir)
	}
	nginx := servertest.DebianNginx(t)
	n.server = servertest.StartNginxWith(t, nginx, conf)
	p := n.server
	n.setNginxWrapper(t, fmt.Sprintf("exec %s -p '%s/' -c '%s' -e '%s' -g 'pid %s;' \"$@\"", nginx.Bin, p.Dir, p.ConfPath, p.ErrorLog, p.PIDFile))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- node %s: the nginx log's ticketkeys lines (%s) ---\n%s", n.name, p.ErrorLog, guideLogLines(p.Log(), "ticketkeys", 20))
		}
	})
	n.waitListening(t)
	return tlsAddrs
}

// checkModes fails the test unless each file (a path on a real node) has its mode under the node's root.
func (n *guideNode) checkModes(t *testing.T, modes map[string]os.FileMode) {
	t.Helper()
	for path, want := range modes {
		fi, err := os.Stat(filepath.Join(n.root, path))
		if err != nil {
			t.Errorf("node %s: %v", n.name, err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("node %s: %s has mode %v, the guide says %v", n.name, path, fi.Mode(), want)
		}
	}
}

// loopback returns the node's address on 127.0.0.1 for the guide's port guidePort.
func (n *guideNode) loopback(t *testing.T, guidePort string) string {
	t.Helper()
	if n.ports[guidePort] == 0 {
		n.ports[guidePort] = servertest.FreePort(t)
	}
	return fmt.Sprintf("127.0.0.1:%d", n.ports[guidePort])
}

// waitListening waits until the node's server accepts connections on every port of its configuration.
func (n *guideNode) waitListening(t *testing.T) {
	t.Helper()
	var addrs []string
	for _, p := range n.ports {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
	}
	n.server.WaitListening(t, addrs...)
}

// guideLogLines returns the last max lines of log that contain word.
func guideLogLines(log, word string, max int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out[len(out)-min(max, len(out)):], "\n")
}

// serverPIDs returns the master's and the workers' PIDs of every node's server.
func (w *guideWalk) serverPIDs() map[*guideNode][]int {
	pids := map[*guideNode][]int{}
	for _, n := range w.nodes {
		pids[n] = append([]int{n.server.MasterPID}, n.server.WorkerPIDs()...)
	}
	return pids
}

// checkNoReload fails the test unless every node's server runs with the master and worker PIDs of before.
func (w *guideWalk) checkNoReload(t *testing.T, before map[*guideNode][]int) {
	t.Helper()
	now := w.serverPIDs()
	for _, n := range w.nodes {
		if !slices.Equal(now[n], before[n]) || n.server.Exited() {
			t.Errorf("node %s: %s master and workers %v -> %v: a reload or restart happened", n.name, n.server.Kind, before[n], now[n])
		}
	}
}

// checkFleetThroughRotation runs a fleet check per TLS listener (the guide's port -> each node's address)
// until a round is green, then until a green round after a rotation finds every fresh ticket of every
// node under the new current key from Vault.
func (w *guideWalk) checkFleetThroughRotation(t *testing.T, listeners map[string][]string) {
	t.Helper()
	if len(listeners) == 0 {
		t.Fatalf("%s: the server configuration has no TLS listener", w.guide.path)
	}
	var checkers []*guideFleet
	for gp, addrs := range listeners {
		checkers = append(checkers, w.newGuideFleet(t, gp, addrs))
	}
	for _, f := range checkers {
		f.waitGreen(t, 30*time.Second, "a green round", func(*fleetcheck.Report) bool { return true })
	}
	first := checkers[0].last.Window.Current
	for _, f := range checkers {
		rep := f.waitGreen(t, 2*agentPeriod+15*time.Second, "a green round after a rotation, every fresh ticket under the new current key", func(rep *fleetcheck.Report) bool {
			if rep.Window == nil || rep.Window.Current == first {
				return false
			}
			for _, node := range rep.Nodes {
				for _, v := range node.Versions {
					if v.TicketKeyID != rep.Window.Current {
						return false
					}
				}
			}
			return true
		})
		t.Logf("listener :%s: rotation %s -> %s reached both nodes (round %d): every fresh ticket decrypts under the new current key from Vault, %d/%d matrix offers resumed",
			f.guidePort, shortIDs(first), shortIDs(rep.Window.Current), rep.Round, rep.Matrix.Pairs-rep.Matrix.Failures, rep.Matrix.Pairs)
	}
}

// finish stops the watch and fails the test if a command's output, an Agent's log or a server's log holds
// material of a key it saw; then it logs the test's time.
func (w *guideWalk) finish(t *testing.T) {
	t.Helper()
	logs := []string{w.outLog}
	for _, n := range w.nodes {
		if n.server != nil { // nil: a guide whose server the test cannot run (Envoy) or runs itself (Caddy)
			logs = append(logs, n.server.ErrorLog)
		}
		if n.caddy != nil {
			logs = append(logs, n.caddy.log)
		}
		for _, a := range n.agents {
			logs = append(logs, a.LogPath)
		}
	}
	w.watch.Stop()
	w.watch.noKeyMaterial(t, logs...)
	w.checkSecurity(t)
	t.Logf("guide test: %.1f s", time.Since(w.start).Seconds())
}

// checkSecurity checks what the guide's commands left in Vault against what the guides promise (issue 21):
// the mount's audit_non_hmac_response_keys name no field with key material, no audit device logs raw or
// leaves accessors unhashed, and each node's AppRole (node-approle.sh) gives tokens only the reader and
// token-self policies, without `default`, from a secret-id that expires and is the role's only one.
func (w *guideWalk) checkSecurity(t *testing.T) {
	t.Helper()
	cfg, err := w.s.Client.Sys().MountConfig("ticketkeys")
	if err != nil {
		t.Fatalf("security: mount config: %v", err)
	}
	for _, k := range ticketkeys.KeyMaterialResponseKeys {
		if slices.Contains(cfg.AuditNonHMACResponseKeys, k) {
			t.Errorf("security: after %s the mount's audit_non_hmac_response_keys %q name %s: audit logs hold keys in clear", w.guide.path, cfg.AuditNonHMACResponseKeys, k)
		}
	}
	devices, err := w.s.Client.Sys().ListAudit()
	if err != nil {
		t.Fatalf("security: audit devices: %v", err)
	}
	for path, d := range devices {
		if b, _ := strconv.ParseBool(d.Options["log_raw"]); b {
			t.Errorf("security: audit device %s has log_raw=%s", path, d.Options["log_raw"])
		}
		if v, ok := d.Options["hmac_accessor"]; ok {
			if b, _ := strconv.ParseBool(v); !b {
				t.Errorf("security: audit device %s has hmac_accessor=%s", path, v)
			}
		}
	}
	for _, n := range w.nodes {
		role, err := w.s.Client.Logical().Read("auth/approle/role/ticketkeys-" + n.name)
		if err != nil || role == nil {
			t.Logf("security: node %s has no AppRole ticketkeys-%s (%v); its guide authenticates otherwise", n.name, n.name, err)
			continue
		}
		if ttl, _ := role.Data["secret_id_ttl"].(json.Number).Int64(); ttl <= 0 {
			t.Errorf("security: role ticketkeys-%s secret_id_ttl %v: its secret-ids never expire", n.name, role.Data["secret_id_ttl"])
		}
		if role.Data["token_no_default_policy"] != true {
			t.Errorf("security: role ticketkeys-%s gives its tokens Vault's default policy", n.name)
		}
		for _, p := range role.Data["token_policies"].([]any) {
			if p != "ticketkeys-token-self" && !strings.HasPrefix(p.(string), "ticketkeys-reader-") {
				t.Errorf("security: role ticketkeys-%s gives its tokens policy %v beyond the reader and token-self policies", n.name, p)
			}
		}
		list, err := w.s.Client.Logical().List("auth/approle/role/ticketkeys-" + n.name + "/secret-id")
		if err != nil || list == nil || len(list.Data["keys"].([]any)) != 1 {
			t.Errorf("security: role ticketkeys-%s secret-ids: %v (%v); want exactly the one node-approle.sh last wrote", n.name, list, err)
		}
	}
}

// guideFleet is the fleet check of one TLS listener of the guide's configuration across the nodes.
type guideFleet struct {
	guidePort string
	checker   *fleetcheck.Checker
	last      *fleetcheck.Report
	green     bool // a round has been green: every later round must be too
}

func (w *guideWalk) newGuideFleet(t *testing.T, guidePort string, addrs []string) *guideFleet {
	t.Helper()
	var nodes []fleetcheck.Node
	for _, a := range addrs {
		nodes = append(nodes, fleetcheck.Node{Addr: a, ServerName: testcert.ServerName, RootCAs: w.cert.Pool})
	}
	c, err := fleetcheck.New(fleetcheck.Config{
		Keyring: w.guide.keyring, Format: w.guide.format, Nodes: nodes, UnnamedTickets: w.guide.unnamedTickets,
		Read: fleetcheck.VaultReader(w.s.Client, "ticketkeys", w.guide.keyring, w.guide.format),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &guideFleet{guidePort: guidePort, checker: c}
}

// waitGreen runs a round every second until one is green and satisfies cond, at most timeout; once a
// round has been green, a failed round fails the test.
func (f *guideFleet) waitGreen(t *testing.T, timeout time.Duration, what string, cond func(*fleetcheck.Report) bool) *fleetcheck.Report {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		rep, err := f.checker.Check(ctx)
		cancel()
		if err != nil {
			t.Fatalf("listener :%s: fleet check: %v", f.guidePort, err)
		}
		f.last = rep
		if rep.OK && cond(rep) {
			f.green = true
			return rep
		}
		if f.green && !rep.OK {
			t.Errorf("listener :%s: round %d failed after a green one: %v", f.guidePort, rep.Round, rep.Failures)
		}
		if time.Now().After(deadline) {
			var b bytes.Buffer
			_ = rep.WriteTable(&b)
			t.Fatalf("listener :%s: waited %s for %s; last round:\n%s", f.guidePort, timeout, what, b.String())
		}
		time.Sleep(time.Second)
	}
}
