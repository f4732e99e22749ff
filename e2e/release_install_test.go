//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// releaseShare is where the Debian package puts the scripts, policies, templates and Lua module, laid out
// as in a checkout; the guide's commands run from there instead of the checkout.
const releaseShare = "/usr/share/ticketkeys"

// releaseDist returns the release directory the install test uses ($TICKETKEYS_DIST, written by `make
// release`), or skips when it is not set: `make test-release` builds the release and runs this test.
func releaseDist(t *testing.T) string {
	t.Helper()
	dist := os.Getenv("TICKETKEYS_DIST")
	if dist == "" {
		t.Skip("TICKETKEYS_DIST is not set: `make test-release` builds dist/ and runs this test against it")
	}
	if _, err := os.Stat(filepath.Join(dist, "SHA256SUMS")); err != nil {
		t.Fatalf("TICKETKEYS_DIST=%s: %v (make release VERSION=...)", dist, err)
	}
	return dist
}

// TestGuideNginxLuaInstalled installs the release on this machine and walks docs/nginx-lua.md against the
// installed paths instead of the checkout: `apt-get install ./dist/ticketkeys_X_ARCH.deb`, the Vault
// server's plugin is the package's /usr/lib/ticketkeys/plugins binary, the guide's commands (register.sh,
// install.sh, node-approle.sh) run from /usr/share/ticketkeys, register.sh registers the checksum of the
// release's SHA256SUMS (-s, verified against the binary) and the version the package ships, node a runs
// the Lua module the package's install.sh installed and node b the one `luarocks make` installed from the
// release's rock (offline, into the node's /usr/local tree, the package's copy removed). Then the checks of
// TestGuideNginxLua: fresh tickets under the current key from Vault, cross-node resumption, a rotation
// reaching both nodes with no reload.
func TestGuideNginxLuaInstalled(t *testing.T) {
	dist := releaseDist(t)
	if os.Getuid() != 0 {
		t.Skip("apt-get install and the guide's node commands run as root")
	}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	deb := regexp.MustCompile(`(?m)  (ticketkeys_[^_ ]+_` + runtime.GOARCH + `\.deb)$`).FindSubmatch(sums)
	rock := regexp.MustCompile(`(?m)  (lua-resty-ticketkeys-([0-9.]+)\.tar\.gz)$`).FindSubmatch(sums)
	rockspec := regexp.MustCompile(`(?m)  (lua-resty-ticketkeys-[0-9.]+-1\.rockspec)$`).FindSubmatch(sums)
	if deb == nil || rock == nil || rockspec == nil {
		t.Fatalf("%s/SHA256SUMS lists no ticketkeys_*_%s.deb, Lua tarball or rockspec:\n%s", dist, runtime.GOARCH, sums)
	}
	check := exec.Command("sha256sum", "--check", "--quiet", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum --check SHA256SUMS in %s: %v\n%s", dist, err, out)
	}

	// The package, as a user installs it (no network: it depends on nothing apt would fetch). It is removed
	// again when the test ends unless it was installed before.
	if st, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status}", "ticketkeys").Output(); string(st) != "installed" {
		t.Cleanup(func() {
			if out, err := exec.Command("dpkg", "--remove", "ticketkeys").CombinedOutput(); err != nil {
				t.Errorf("dpkg --remove ticketkeys: %v\n%s", err, out)
			}
		})
	}
	runOrFail(t, "", "apt-get", "install", "-y", filepath.Join(dist, string(deb[1])))
	version, err := os.ReadFile(filepath.Join(releaseShare, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("installed %s: %s %s", deb[1], releaseShare, strings.TrimSpace(string(version)))
	plugin := "/usr/lib/ticketkeys/plugins/" + vaulttest.PluginFile

	w, blocks := startGuideWalk(t, guideNginxLua, "inst", "install.sh sets root ownership, nginx switches its workers to www-data",
		vaulttest.WithPluginBinary(plugin))
	w.repo = releaseShare
	// register.sh checks the binary against the release's SHA256SUMS and registers that checksum.
	if err := os.WriteFile(filepath.Join(w.s.Dir, "SHA256SUMS"), sums, 0o644); err != nil {
		t.Fatal(err)
	}
	w.extraSubs = []guideSubst{{"bootstrap/register.sh ", "bootstrap/register.sh -s " + filepath.Join(w.s.Dir, "SHA256SUMS") + " ",
		"register the release's checksum (-s), verified against the installed binary"}}
	conf := w.walk(t, blocks)

	// Node b: the rock, unpacked from the release's source tarball and installed with `luarocks make` into
	// the node's /usr/local tree (Debian's luarocks system tree on a real node), the package's copy gone.
	nb := w.nodes[1]
	src := t.TempDir()
	runOrFail(t, "", "tar", "-C", src, "-xzf", filepath.Join(dist, string(rock[1])))
	srcDir := filepath.Join(src, "lua-resty-ticketkeys-"+string(rock[2]))
	runOrFail(t, srcDir, "luarocks", "--tree", filepath.Join(nb.root, "usr/local"), "make", string(rockspec[1]))
	rockModule := filepath.Join(nb.root, "usr/local/share/lua/5.1/resty/ticketkeys.lua")
	got, err := os.ReadFile(rockModule)
	if err != nil {
		t.Fatalf("luarocks make installed no module at %s: %v", rockModule, err)
	}
	shipped, err := os.ReadFile(filepath.Join(releaseShare, "nginx/lib/resty/ticketkeys.lua"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, shipped) {
		t.Fatalf("the rock's module differs from the package's")
	}
	if err := os.Remove(filepath.Join(nb.root, "usr/local/share/ticketkeys/lua/resty/ticketkeys.lua")); err != nil {
		t.Fatal(err)
	}
	snippet := filepath.Join(nb.root, "etc/nginx/ticketkeys/ticketkeys.conf")
	b, err := os.ReadFile(snippet)
	if err != nil {
		t.Fatal(err)
	}
	pkgPath := nb.root + "/usr/local/share/ticketkeys/lua/?.lua"
	if !bytes.Contains(b, []byte(pkgPath)) {
		t.Fatalf("%s does not name %s in its lua_package_path", snippet, pkgPath)
	}
	if err := os.WriteFile(snippet, bytes.ReplaceAll(b, []byte(pkgPath), []byte(nb.root+"/usr/local/share/lua/5.1/?.lua")), 0o644); err != nil {
		t.Fatal(err)
	}

	listeners := map[string][]string{}
	for _, n := range w.nodes {
		for gp, addr := range w.startNginx(t, conf, n) {
			listeners[gp] = append(listeners[gp], addr)
		}
	}
	pids := w.serverPIDs()
	w.checkFleetThroughRotation(t, listeners)
	w.checkNoReload(t, pids)
	for _, n := range w.nodes {
		for _, l := range strings.Split(n.server.Log(), "\n") {
			if strings.Contains(l, "[error]") && strings.Contains(l, "ticketkeys") {
				t.Errorf("node %s: %s", n.name, l)
			}
		}
		checkWorkersGroup(t, n)
	}
	w.finish(t)
}

// runOrFail runs a command (in dir, unless empty) and fails the test with its output when it fails.
func runOrFail(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
