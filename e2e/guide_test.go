//go:build e2e

package e2e

// TestGuideNginxLua follows docs/nginx-lua.md as a new user would, from the guide's own text: every fenced
// code block of the guide is run, used as configuration, compared with what the installer wrote, or
// explicitly skipped, as an HTML comment before its fence says (invisible to readers):
//
//	<!-- guide-test: run-once -->          shell commands on a Vault admin shell, once
//	<!-- guide-test: run-per-node -->      shell commands run for each node (two here)
//	<!-- guide-test: nginx-conf -->        the nginx.conf every node runs
//	<!-- guide-test: installed PATH -->    an excerpt of the file install.sh wrote at PATH
//	<!-- guide-test: skip REASON -->       not meant to be run (output, an example for elsewhere)
//
// A block without a marker fails the test, so a new block cannot go untested by accident. A run block is
// run by bash (-euo pipefail) from the repository root, except a `vault agent ...` line, which the test
// starts as a long-running process (the guide's node daemon) and stops by PID at the end.
//
// The test changes only what a test machine must, each change listed in guideSubstitutions or below, and
// every listed string must occur in the guide (so the guide cannot change under the test unnoticed):
//   - every node's file system root is a directory in /tmp (mode 0755, so that nginx workers running as
//     www-data reach it as they reach /): install.sh runs with DESTDIR set to it, and every path under
//     /etc/nginx/, /etc/vault-agent/ and /usr/local/share/ticketkeys/, in the guide's commands, in its
//     nginx.conf and in the configuration files install.sh wrote, is moved under it; a command or an
//     nginx.conf naming any other absolute path (but nginx's module directory) fails the test before it
//     runs, and so does a command other than sh, bash, vault, dpkg-query and the bootstrap/ scripts;
//   - the Vault server is the test's own (internal/vaulttest, plugin installed in its plugin directory,
//     not registered: the guide registers it), the admin shell has its root token and a `vault` on PATH;
//   - every `listen` of the nginx.conf gets its own port on 127.0.0.1; nginx (Debian's) runs through
//     internal/servertest (private prefix, pid file and error log), with access_log off and the http temp
//     paths in its private directory inserted at the top of http{}; the test's certificate stands in for
//     the files the conf names in ssl_certificate and ssl_certificate_key. A conf without a `user` line
//     gets nginx's built-in default (nobody, group nogroup) explicitly, as a real nginx started as root
//     would use it (servertest would run the workers as root instead).
//
// Then a real TLS client (package fleetcheck, per TLS listener of the guide's nginx.conf, across the two
// nodes) checks that each node's fresh ticket names and decrypts under the current key read from Vault,
// that each node resumes the other's tickets and one under the published next key, and that a rotation
// reaches both nodes with no reload (same master and worker PIDs), the workers running as the group
// install.sh gave the window directory.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/fleetcheck"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// guideNginxLua is the guide this test walks, relative to the repository root.
const guideNginxLua = "docs/nginx-lua.md"

// guideKeyring is the keyring the guide's commands create and install for.
const guideKeyring = "web"

// guideBlock is one fenced code block of a guide and what its marker says to do with it.
type guideBlock struct {
	Line int    // line of the opening fence, 1-based
	Role string // run-once, run-per-node, nginx-conf, installed, skip
	Arg  string // installed: the file's path; skip: why
	Text string // the block's lines, without the fences
}

// guideMarker is the HTML comment right before a fence.
var guideMarker = regexp.MustCompile(`^<!-- guide-test: ([a-z-]+)(?: (.*?))? -->$`)

// guideRoles says whether each role needs an argument.
var guideRoles = map[string]bool{"run-once": false, "run-per-node": false, "nginx-conf": false, "installed": true, "skip": true}

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
			"guide test uses it (roles: run-once, run-per-node, nginx-conf, installed PATH, skip REASON)")
	}
	needsArg, known := guideRoles[m[1]]
	switch {
	case !known:
		return fmt.Errorf("unknown guide-test role %q (roles: run-once, run-per-node, nginx-conf, installed PATH, skip REASON)", m[1])
	case needsArg && m[2] == "":
		return fmt.Errorf("guide-test role %q needs an argument (installed: the file's path; skip: why)", m[1])
	case !needsArg && m[2] != "":
		return fmt.Errorf("guide-test role %q takes no argument, got %q", m[1], m[2])
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
		{"no marker", "text\n\n```sh\nls\n```\n", "guide.md:3: code block without a <!-- guide-test: ROLE --> marker"},
		{"marker not right before", "<!-- guide-test: run-once -->\n\n```sh\nls\n```\n", "guide.md:3: code block without"},
		{"unknown role", "<!-- guide-test: run -->\n```sh\nls\n```\n", `guide.md:2: unknown guide-test role "run"`},
		{"skip without reason", "<!-- guide-test: skip -->\n```\nout\n```\n", `guide-test role "skip" needs an argument`},
		{"run with argument", "<!-- guide-test: run-per-node twice -->\n```sh\nls\n```\n", `role "run-per-node" takes no argument, got "twice"`},
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

// guideSubstitutions lists what the test changes in the guide's commands and nginx.conf besides the
// node's root and the listen ports. perNode is the node's name ("" for the admin shell's run-once blocks).
func guideSubstitutions(s *vaulttest.Server, perNode string) []guideSubst {
	subs := []guideSubst{
		{"https://vault.internal:8200", s.Addr, "the test's Vault server"},
		{"/etc/vault.d/plugins/", s.PluginDir + "/", "the test Vault's plugin_directory, where the plugin binary is installed"},
		{"rotation_period=1h retain=12h", fmt.Sprintf("rotation_period=%s retain=%s", agentPeriod, agentRetain), "a rotation within the test"},
		{"apt-get install ", "dpkg-query -W ", "the test installs no package; it fails unless the guide's packages are installed (scripts/debian-packages.txt)"},
	}
	if perNode != "" {
		subs = append(subs, guideSubst{"$(hostname)", perNode, "two nodes on one machine"})
	}
	return subs
}

// guideRootedPrefixes are the absolute paths the guide installs into; each node has them under its root.
var guideRootedPrefixes = regexp.MustCompile(`(^|[^A-Za-z0-9_.~/-])(/etc/nginx/|/etc/vault-agent/|/usr/local/share/ticketkeys/)`)

// guideAbsPath finds absolute paths in shell text (not URLs: "//" is not a path start here).
var guideAbsPath = regexp.MustCompile(`(?:^|[\s"'=(<>])(/[A-Za-z0-9_.][^\s"'();|&<>]*)`)

// guideListen finds listen directives (with an optional IPv4 address) of an nginx.conf.
var guideListen = regexp.MustCompile(`\blisten\s+(?:(?:\d{1,3}\.){3}\d{1,3}:)?(\d+)\b`)

// guideUserDirective finds the main-context user directive of an nginx.conf.
var guideUserDirective = regexp.MustCompile(`(?m)^\s*user\s`)

// guideWalk is one walk through the guide: the test's Vault, the admin shell's environment and the output
// of every command.
type guideWalk struct {
	s      *vaulttest.Server
	repo   string
	env    []string
	outLog string // every command's output, for the leak check
}

// guideNode is one machine set up by the guide.
type guideNode struct {
	name   string
	root   string         // stands for /
	ports  map[string]int // the guide's listen port -> this node's port on 127.0.0.1
	agents []*vaulttest.Process
	nginx  *servertest.Proc
}

func newGuideWalk(t *testing.T, s *vaulttest.Server) *guideWalk {
	t.Helper()
	bin := t.TempDir()
	if err := os.Symlink(s.VaultBin, filepath.Join(bin, "vault")); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	return &guideWalk{
		s:    s,
		repo: servertest.RepoRoot(t),
		env: []string{
			"PATH=" + bin + ":" + os.Getenv("PATH"),
			"HOME=" + home,
			"VAULT_ADDR=" + s.Addr,
			"VAULT_TOKEN=" + s.RootToken,
		},
		outLog: filepath.Join(t.TempDir(), "guide-output.log"),
	}
}

// newGuideNode makes the node's root: a fresh directory in the system temp dir, mode 0755 like /, removed
// when the test ends.
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
	return &guideNode{name: name, root: root, ports: map[string]int{}}
}

// subst applies the substitutions and, for a node, moves the guide's install paths under its root.
func (w *guideWalk) subst(text string, n *guideNode) string {
	name := ""
	if n != nil {
		name = n.name
	}
	for _, sb := range guideSubstitutions(w.s, name) {
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

// checkSubstitutionsMatch fails the test before anything runs unless every substitution occurs in the
// blocks the test runs: a guide that changed such a line would otherwise run unsubstituted (a real
// `apt-get install`, say).
func checkSubstitutionsMatch(t *testing.T, blocks []guideBlock, subs []guideSubst) {
	t.Helper()
	var used strings.Builder
	for _, b := range blocks {
		if b.Role == "run-once" || b.Role == "run-per-node" || b.Role == "nginx-conf" {
			used.WriteString(b.Text)
		}
	}
	for _, sb := range subs {
		if !strings.Contains(used.String(), sb.Old) {
			t.Errorf("%s no longer contains %q, which the test replaces (%s): update guideSubstitutions", guideNginxLua, sb.Old, sb.Why)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// guideCommands are the commands the test lets the guide run on this machine: each touches only the test's
// Vault and the node's root (after the substitutions). A command line starting otherwise fails the test.
var guideCommands = []string{"sh", "bash", "vault", "dpkg-query"}

// guideCommandSplit splits a shell line into the commands of a list or pipeline (roughly: enough to see
// each command's first word).
var guideCommandSplit = regexp.MustCompile(`&&|\|\||[;|&]`)

// unsafeCommand returns an error naming the first command of script outside guideCommands and the
// repository's bootstrap/ scripts, or nil.
func unsafeCommand(script string) error {
	for _, line := range strings.Split(script, "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, c := range guideCommandSplit.Split(line, -1) {
			f := strings.Fields(c)
			if len(f) == 0 || slices.Contains(guideCommands, f[0]) || strings.HasPrefix(f[0], "bootstrap/") {
				continue
			}
			return fmt.Errorf("the test does not run %q on this machine: add it to guideCommands if it touches only the "+
				"test's Vault and node root, or add a substitution (guideSubstitutions): %s", f[0], strings.TrimSpace(line))
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
			"(guideSubstitutions, guideRootedPrefixes) before the test may run it", m[1])
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
		{"apt-get install nginx", `does not run "apt-get"`},
		{"vault status && systemctl reload nginx", `does not run "systemctl"`},
		{"nginx -t | tee log", `does not run "nginx"`},
		{"sh bootstrap/agent/nginx-lua/install.sh; nginx -s reload", `does not run "nginx"`},
		{"bootstrap/node-approle.sh web n1 /etc/vault-agent/ticketkeys", "names /etc/vault-agent/ticketkeys, outside"},
		{"sh install.sh >/var/log/install.log", "names /var/log/install.log, outside"},
		{"bootstrap/node-approle.sh web n1 " + root + "-other/etc", "names " + root + "-other/etc, outside"},
	} {
		err := unsafeCommand(c.script)
		if err == nil {
			err = unsafePath(c.script, root+"/", vault+"/")
		}
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%q: %v; want %s", c.script, err, map[bool]string{true: "no error", false: "an error saying " + strconv.Quote(c.want)}[c.want == ""])
		}
	}
}

// run runs a run-once (n == nil) or run-per-node block.
func (w *guideWalk) run(t *testing.T, b guideBlock, n *guideNode) {
	t.Helper()
	text := w.subst(b.Text, n)
	allowed := []string{w.s.Dir + "/"}
	if n != nil {
		allowed = append(allowed, n.root+"/")
	}
	if err := unsafePath(text, allowed...); err != nil {
		t.Fatalf("%s:%d: %v:\n%s", guideNginxLua, b.Line, err, text)
	}
	var script []string
	flush := func() {
		if slices.ContainsFunc(script, func(l string) bool { l = strings.TrimSpace(l); return l != "" && !strings.HasPrefix(l, "#") }) {
			if err := unsafeCommand(strings.Join(script, "\n")); err != nil {
				t.Fatalf("%s:%d: %v", guideNginxLua, b.Line, err)
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
	fmt.Fprintf(f, "### %s:%d (%s)\n%s\n", guideNginxLua, b.Line, where, out.Bytes())
	f.Close()
	if err != nil {
		t.Fatalf("%s:%d (%s): following the guide failed: %v\n--- commands as run ---\n%s\n--- output ---\n%s", guideNginxLua, b.Line, where, err, script, out.String())
	}
	t.Logf("%s:%d (%s): ran in %.1f s", guideNginxLua, b.Line, where, time.Since(start).Seconds())
	if n != nil {
		n.rootInstalledFiles(t)
	}
}

// rootInstalledFiles moves the install paths in every text file under the node's /etc under its root, so
// the configuration files install.sh wrote name the node's files, as they name / on a real node. The
// installer's manifest keeps the real paths it looks itself up by (a second install.sh run in the walk
// would see the moved files as edited ones and write .new files beside them).
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

// startAgent starts the guide's `vault agent ARGS` line for node n and waits for the first render of
// every template destination its configuration names.
func (w *guideWalk) startAgent(t *testing.T, b guideBlock, n *guideNode, args []string) {
	t.Helper()
	if n == nil {
		t.Fatalf("%s:%d: a vault agent line in a run-once block: the Agent runs on each node (run-per-node)", guideNginxLua, b.Line)
	}
	var config string
	for i, a := range args {
		if strings.HasPrefix(a, "#") {
			args = args[:i]
			break
		}
		if strings.ContainsAny(a, `"'$;&|`) {
			t.Fatalf("%s:%d: vault agent argument %q: the test starts the Agent without a shell; keep its line to plain words", guideNginxLua, b.Line, a)
		}
		if c, ok := strings.CutPrefix(a, "-config="); ok {
			config = c
		}
	}
	hcl, err := os.ReadFile(config)
	if err != nil {
		t.Fatalf("%s:%d: vault agent -config: %v", guideNginxLua, b.Line, err)
	}
	var dests []string
	for _, m := range regexp.MustCompile(`(?m)^\s*destination\s*=\s*"([^"]+)"`).FindAllStringSubmatch(string(hcl), -1) {
		dests = append(dests, m[1])
	}
	if len(dests) == 0 {
		t.Fatalf("%s:%d: %s has no template destination", guideNginxLua, b.Line, config)
	}
	agent := vaulttest.StartAgentCommand(t, w.s.VaultBin, args...)
	n.agents = append(n.agents, agent)
	what := fmt.Sprintf("first render of %s (the Agent of %s:%d, node %s)", strings.Join(dests, ", "), guideNginxLua, b.Line, n.name)
	agent.WaitFor(t, 30*time.Second, what, func() bool {
		for _, d := range dests {
			if _, err := os.Stat(d); err != nil {
				return false
			}
		}
		return true
	})
	t.Logf("%s:%d (node %s): vault agent %s rendered %s", guideNginxLua, b.Line, n.name, strings.Join(args, " "), strings.Join(dests, ", "))
}

// checkInstalled fails the test unless the file install.sh wrote at path (under the node's root) contains
// the block's text.
func (w *guideWalk) checkInstalled(t *testing.T, b guideBlock, n *guideNode) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(n.root, b.Arg))
	if err != nil {
		t.Fatalf("%s:%d: the guide shows %s as installed: %v", guideNginxLua, b.Line, b.Arg, err)
	}
	if !strings.Contains(string(got), n.rooted(b.Text)) {
		t.Errorf("%s:%d: the guide shows this excerpt of %s, which install.sh did not write:\n%s\n--- installed ---\n%s", guideNginxLua, b.Line, b.Arg, b.Text, got)
	}
}

// startNginx runs the guide's nginx.conf on node n, and returns the node's address of every TLS listen
// port of the guide's configuration.
func (w *guideWalk) startNginx(t *testing.T, conf string, n *guideNode, cert *testcert.Cert) map[string]string {
	t.Helper()
	conf = w.subst(conf, n)
	if err := unsafePath(conf, n.root+"/", "/usr/lib/nginx/modules/"); err != nil {
		t.Fatalf("%s: nginx.conf: %v", guideNginxLua, err)
	}
	tlsAddrs := map[string]string{}
	conf = guideListen.ReplaceAllStringFunc(conf, func(m string) string {
		guidePort := guideListen.FindStringSubmatch(m)[1]
		if n.ports[guidePort] == 0 {
			n.ports[guidePort] = servertest.FreePort(t)
		}
		return fmt.Sprintf("listen 127.0.0.1:%d", n.ports[guidePort])
	})
	for _, m := range regexp.MustCompile(`\blisten\s+(\S+)([^;]*);`).FindAllStringSubmatch(conf, -1) {
		if !strings.HasPrefix(m[1], "127.0.0.1:") {
			t.Fatalf("%s: nginx.conf listens on %s: the test maps only IPv4 and bare ports to 127.0.0.1", guideNginxLua, m[1])
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
		t.Fatalf("%s: the nginx.conf has no `http {` line to put the test's private paths under", guideNginxLua)
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
		cert.WritePEM(dir)
	}
	n.nginx = servertest.StartNginxWith(t, servertest.DebianNginx(t), conf)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- node %s: the nginx log's ticketkeys lines (%s) ---\n%s", n.name, n.nginx.ErrorLog, guideLogLines(n.nginx.Log(), "ticketkeys", 20))
		}
	})
	var addrs []string
	for _, p := range n.ports {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
	}
	n.nginx.WaitListening(t, addrs...)
	return tlsAddrs
}

func TestGuideNginxLua(t *testing.T) {
	t.Parallel()
	blocks := readGuide(t, guideNginxLua)
	if os.Getuid() != 0 {
		t.Skip("the guide's node commands run as root (install.sh sets root ownership, nginx switches its workers to www-data)")
	}
	start := time.Now()
	s := vaulttest.Start(t, vaulttest.WithoutPluginRegistration())
	cert := testcert.New(t, testcert.ECDSAP256)
	w := newGuideWalk(t, s)
	watch := watchWindows(t, s, guideKeyring) // key material seen, for the leak check
	nodes := []*guideNode{newGuideNode(t, "guide-a"), newGuideNode(t, "guide-b")}

	checkSubstitutionsMatch(t, blocks, guideSubstitutions(s, nodes[0].name))

	var conf string
	for _, b := range blocks {
		switch b.Role {
		case "run-once":
			w.run(t, b, nil)
		case "run-per-node":
			for _, n := range nodes {
				w.run(t, b, n)
			}
		case "nginx-conf":
			if conf != "" {
				t.Fatalf("%s:%d: a second nginx-conf block; the test runs one", guideNginxLua, b.Line)
			}
			conf = b.Text
		case "installed":
			for _, n := range nodes {
				w.checkInstalled(t, b, n)
			}
		case "skip":
			t.Logf("%s:%d: skipped: %s", guideNginxLua, b.Line, b.Arg)
		}
	}
	if conf == "" {
		t.Fatalf("%s: no nginx-conf block", guideNginxLua)
	}
	// Every node and the admin shell have seen the walk; now nginx starts with the guide's nginx.conf
	// (after the Agent, as install.sh's next steps say), and each substitution must have been used.
	listeners := map[string][]string{} // the guide's TLS port -> each node's address
	for _, n := range nodes {
		for gp, addr := range w.startNginx(t, conf, n, cert) {
			listeners[gp] = append(listeners[gp], addr)
		}
	}
	if len(listeners) == 0 {
		t.Fatalf("%s: the nginx.conf has no TLS listener (listen ... ssl)", guideNginxLua)
	}
	t.Logf("guide walked, 2 nodes up in %.1f s; TLS listeners (guide port: nodes) %v", time.Since(start).Seconds(), listeners)

	// A fleet check per TLS listener of the guide's configuration, across the two nodes.
	var checkers []*guideFleet
	for gp, addrs := range listeners {
		checkers = append(checkers, newGuideFleet(t, s, cert, gp, addrs))
	}
	pids := map[*guideNode][]int{}
	for _, n := range nodes {
		pids[n] = append([]int{n.nginx.MasterPID}, n.nginx.WorkerPIDs()...)
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

	// No reload, the workers run as the window directory's group, and no worker failed to read the window.
	var logs []string
	for _, n := range nodes {
		now := append([]int{n.nginx.MasterPID}, n.nginx.WorkerPIDs()...)
		if !slices.Equal(now, pids[n]) || n.nginx.Exited() {
			t.Errorf("node %s: nginx master and workers %v -> %v: a reload or restart happened", n.name, pids[n], now)
		}
		log := n.nginx.Log()
		if strings.Contains(log, "reconfiguring") || strings.Contains(log, "signal 1 (SIGHUP)") {
			t.Errorf("node %s: the nginx log shows a reload", n.name)
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "[error]") && strings.Contains(l, "ticketkeys") {
				t.Errorf("node %s: %s", n.name, l)
			}
		}
		checkWorkersGroup(t, n)
		logs = append(logs, n.nginx.ErrorLog)
		for _, a := range n.agents {
			logs = append(logs, a.LogPath)
		}
	}
	watch.Stop()
	watch.noKeyMaterial(t, append(logs, w.outLog)...)
	t.Logf("guide test: %.1f s", time.Since(start).Seconds())
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

// checkWorkersGroup fails the test unless every nginx worker of n runs, not as root, in the group that owns
// the window directory install.sh made (the guide's `user` line).
func checkWorkersGroup(t *testing.T, n *guideNode) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(n.root, "etc/nginx/ticketkeys"))
	if err != nil {
		t.Fatal(err)
	}
	dirGid := int(fi.Sys().(*syscall.Stat_t).Gid)
	for _, pid := range n.nginx.WorkerPIDs() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		var uid, gid int
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 && (f[0] == "Uid:" || f[0] == "Gid:") {
				v, _ := strconv.Atoi(f[1])
				if f[0] == "Uid:" {
					uid = v
				} else {
					gid = v
				}
			}
		}
		if uid == 0 || gid != dirGid {
			t.Errorf("node %s: worker %d runs as uid %d gid %d; want a non-root user in gid %d, the group of the window directory", n.name, pid, uid, gid, dirGid)
		}
	}
}

// guideFleet is the fleet check of one TLS listener of the guide's nginx.conf across the nodes.
type guideFleet struct {
	guidePort string
	checker   *fleetcheck.Checker
	last      *fleetcheck.Report
	green     bool // a round has been green: every later round must be too
}

func newGuideFleet(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, guidePort string, addrs []string) *guideFleet {
	t.Helper()
	var nodes []fleetcheck.Node
	for _, a := range addrs {
		nodes = append(nodes, fleetcheck.Node{Addr: a, ServerName: testcert.ServerName, RootCAs: cert.Pool})
	}
	c, err := fleetcheck.New(fleetcheck.Config{
		Keyring: guideKeyring, Format: "nginx", Nodes: nodes,
		Read: fleetcheck.VaultReader(s.Client, "ticketkeys", guideKeyring, "nginx"),
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
