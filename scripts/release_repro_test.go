//go:build release

package scripts

// TestReleaseIsReproducible builds the whole release twice (16 cross-compiled binaries): minutes on a
// warm Go cache, more than go test's default timeout on a cold 2-core machine. It runs under the release
// tag, from `make test-release` (part of `make test`), with its own timeout.

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
