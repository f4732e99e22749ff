package scripts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sourceVersion is ticketkeys.Version as version.go spells it.
func sourceVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../version.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^(?:var|const) Version = "(v[^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatal("version.go has no Version = \"v...\" line")
	}
	return string(m[1])
}

// release runs scripts/release.sh VERSION from the checkout at root into dist, with a fixed
// SOURCE_DATE_EPOCH, and returns its combined output.
func release(t *testing.T, root, dist, version string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "scripts/release.sh"), version)
	cmd.Env = append(os.Environ(), "DIST="+dist, "SOURCE_DATE_EPOCH=1767225600")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// copyCheckout copies the files git tracks (as they are in the working tree) to a new directory, so a
// second release builds from another path.
func copyCheckout(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "-C", "..", "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "elsewhere", "ticketkeys")
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join("..", f)
		fi, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the working tree
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// Two releases of the same source, from two checkout paths at two times, give the same bytes: every file
// of dist/ (binaries for both architectures, Debian packages, the rock, the OPM tarball) has the same
// sha256, and SHA256SUMS lists every file with its true sum. The second release builds from a copy of the
// checkout at another path, so a path compiled into a binary, a file time in an archive or a build id
// would show.
func TestReleaseIsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 8 binaries twice")
	}
	for _, tool := range []string{"dpkg-deb", "zip", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/debian-packages.txt)", tool)
		}
	}
	version := sourceVersion(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dist1, dist2 := filepath.Join(t.TempDir(), "dist"), filepath.Join(t.TempDir(), "dist")
	if out, err := release(t, root, dist1, version); err != nil {
		t.Fatalf("release.sh %s: %v\n%s", version, err, out)
	}
	if out, err := release(t, copyCheckout(t), dist2, version); err != nil {
		t.Fatalf("release.sh %s from a copy of the checkout: %v\n%s", version, err, out)
	}
	sums1, err := os.ReadFile(filepath.Join(dist1, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	sums2, err := os.ReadFile(filepath.Join(dist2, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sums1, sums2) {
		t.Errorf("two releases of the same source differ:\n--- first ---\n%s--- second (another path) ---\n%s", sums1, sums2)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums1)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q: want \"SUM  NAME\"", line)
		}
		b, err := os.ReadFile(filepath.Join(dist1, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS lists %s with %s; the file's sha256 is %x", name, sum, got)
		}
		listed[name] = true
	}
	debVersion := strings.Replace(strings.TrimPrefix(version, "v"), "-", "~", 1)
	want := []string{"SHA256SUMS"}
	for _, arch := range []string{"amd64", "arm64"} {
		for _, b := range []string{"vault-plugin-secrets-ticketkeys", "ticketkeys-fleetcheck", "ticketkeys-haproxy-push", "ticketkeys-agent-config"} {
			want = append(want, "linux-"+arch+"/"+b)
		}
		want = append(want, "ticketkeys_"+debVersion+"_"+arch+".deb")
	}
	for _, w := range want[1:] {
		if !listed[w] {
			t.Errorf("SHA256SUMS does not list %s", w)
		}
	}
	// The package holds what the guides run from /usr/share/ticketkeys, and the version register.sh reads.
	out, err := exec.Command("dpkg-deb", "-c", filepath.Join(dist1, "ticketkeys_"+debVersion+"_amd64.deb")).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"./usr/bin/ticketkeys-fleetcheck", "./usr/bin/ticketkeys-haproxy-push", "./usr/bin/ticketkeys-agent-config",
		"./usr/lib/ticketkeys/plugins/vault-plugin-secrets-ticketkeys", "./usr/share/ticketkeys/VERSION",
		"./usr/share/ticketkeys/bootstrap/register.sh", "./usr/share/ticketkeys/bootstrap/node-approle.sh",
		"./usr/share/ticketkeys/bootstrap/agent/nginx-lua/install.sh", "./usr/share/ticketkeys/bootstrap/agent/templates/base.hcl.tmpl",
		"./usr/share/ticketkeys/bootstrap/policies/ticketkeys-operator.hcl", "./usr/share/ticketkeys/nginx/lib/resty/ticketkeys.lua"} {
		if !regexp.MustCompile(`(?m) root/root .* ` + regexp.QuoteMeta(f) + `$`).Match(out) {
			t.Errorf("the amd64 package has no %s owned by root:\n%s", f, out)
		}
	}
}

// A VERSION other than ticketkeys.Version is refused before anything is built, naming both.
func TestReleaseRefusesAnotherVersion(t *testing.T) {
	version := sourceVersion(t)
	dist := filepath.Join(t.TempDir(), "dist")
	out, err := release(t, "..", dist, "v9.9.9")
	if err == nil || !strings.Contains(out, "VERSION v9.9.9 differs from ticketkeys.Version "+version+" in version.go") {
		t.Errorf("release.sh v9.9.9: %v, output %q; want a refusal naming both versions", err, out)
	}
	if _, err := os.Stat(dist); !os.IsNotExist(err) {
		t.Errorf("the refused release wrote %s", dist)
	}
	out, err = release(t, "..", dist, "0.2")
	if err == nil || !strings.Contains(out, "VERSION '0.2': want a semantic version like v1.2.3") {
		t.Errorf("release.sh 0.2: %v, output %q; want a refusal of the malformed version", err, out)
	}
}

// register.sh -s SHA256SUMS registers the sha256 the release lists for the binary's name once the binary
// hashes to it, and refuses a binary that does not (naming the sums it found), before it calls Vault.
func TestRegisterTakesTheReleaseChecksum(t *testing.T) {
	dir := t.TempDir()
	for _, arch := range []string{"linux-amd64", "linux-arm64"} {
		if err := os.MkdirAll(filepath.Join(dir, "dist", arch), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	plugin := filepath.Join(dir, "plugins", "vault-plugin-secrets-ticketkeys")
	if err := os.MkdirAll(filepath.Dir(plugin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\n# the released amd64 plugin\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	released, _ := os.ReadFile(plugin)
	sums := filepath.Join(dir, "dist", "SHA256SUMS")
	list := sum([]byte("the arm64 one")) + "  linux-arm64/vault-plugin-secrets-ticketkeys\n" +
		sum(released) + "  linux-amd64/vault-plugin-secrets-ticketkeys\n" +
		sum([]byte("fleetcheck")) + "  linux-amd64/ticketkeys-fleetcheck\n"
	if err := os.WriteFile(sums, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	// A vault stand-in: logs its arguments, answers "no such mount" to reads, succeeds otherwise.
	calls := filepath.Join(dir, "vault-calls")
	fake := filepath.Join(dir, "vault")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\n[ \"$1\" = read ] && exit 2\nexit 0\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command("../bootstrap/register.sh", args...)
		cmd.Env = append(os.Environ(), "VAULT="+fake, "VAULT_ADDR=http://127.0.0.1:1")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("-sha256sums", sums, plugin)
	if err != nil {
		t.Fatalf("register.sh -sha256sums with the released binary: %v\n%s", err, out)
	}
	logged, _ := os.ReadFile(calls)
	if !strings.Contains(string(logged), "plugin register -sha256="+sum(released)+" ") {
		t.Errorf("register.sh did not register the release's sha256 %s; vault calls:\n%s", sum(released), logged)
	}
	if !strings.Contains(out, "is the release's linux-amd64/vault-plugin-secrets-ticketkeys") {
		t.Errorf("register.sh did not say which released file the binary is:\n%s", out)
	}

	os.Remove(calls)
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\n# changed after the release\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = run("-s", sums, plugin)
	if err == nil || !strings.Contains(out, "which "+sums+" does not list for vault-plugin-secrets-ticketkeys") ||
		!strings.Contains(out, "linux-amd64/vault-plugin-secrets-ticketkeys") {
		t.Errorf("register.sh -s with a changed binary: %v\n%s\nwant a refusal listing the release's sums", err, out)
	}
	if b, _ := os.ReadFile(calls); len(b) > 0 {
		t.Errorf("register.sh called vault for a refused binary:\n%s", b)
	}
	out, err = run("-s", filepath.Join(dir, "missing"), plugin)
	if err == nil || !strings.Contains(out, "-s SHA256SUMS "+filepath.Join(dir, "missing")+": cannot read it") {
		t.Errorf("register.sh -s with a missing file: %v\n%s", err, out)
	}
}
