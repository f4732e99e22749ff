package scripts

import (
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
