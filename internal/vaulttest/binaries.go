package vaulttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// VaultVersion is the Vault release the tests run against. It must match
// tools/vault/go.mod and scripts/vault-build.sh.
const VaultVersion = "v1.21.0"

// PluginName is the name the plugin is registered and mounted under, and
// PluginFile the file name of its binary in the plugin directory.
const (
	PluginName = "ticketkeys"
	PluginFile = "vault-plugin-secrets-ticketkeys"
	MountPath  = "ticketkeys"
)

// VaultBinary returns the path of the pinned Vault binary, or fails the test
// saying how to get one. It is $VAULT_BIN when set, otherwise
// ${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}/vault-v1.21.0/vault, which is
// where scripts/vault-build.sh puts it.
func VaultBinary(t testing.TB) string {
	t.Helper()
	path, err := vaultBinaryPath()
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return path
}

func vaultBinaryPath() (string, error) {
	return cachedBinaryPath("VAULT_BIN", "vault-"+VaultVersion, "vault", "scripts/vault-build.sh (a cold build takes ~17 minutes)")
}

// The plugin is built once per test binary, into buildDir.
var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// pluginBinary returns the path of the plugin binary built from this
// checkout, building it on first use. The build directory is removed by
// Main.
func pluginBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildPath, buildErr = buildPlugin() })
	if buildErr != nil {
		t.Fatalf("vaulttest: %v", buildErr)
	}
	return buildPath
}

// buildPlugin runs `go build -o <tmp>/vault-plugin-secrets-ticketkeys
// ./cmd/vault-plugin-secrets-ticketkeys` in the module root.
func buildPlugin() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "ticketkeys-plugin-build-")
	if err != nil {
		return "", fmt.Errorf("plugin build: temp dir: %w", err)
	}
	buildDir = dir
	out := filepath.Join(dir, PluginFile)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+PluginFile)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("plugin build: go build ./cmd/%s in %s: %w\n%s", PluginFile, root, err, stderr.String())
	}
	return out, nil
}

// moduleRoot is the directory of the go.mod of the module under test.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("plugin build: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("plugin build: go env GOMOD = %q: not inside a module", gomod)
	}
	return filepath.Dir(gomod), nil
}

// Main runs the tests of a package that uses vaulttest and then removes the
// plugin build directory. Call it from TestMain:
//
//	func TestMain(m *testing.M) { vaulttest.Main(m) }
//
// Without it the tests still work; the build directory (one plugin binary)
// is just left in the system temp directory.
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// installPlugin puts the plugin binary into dir and returns the hex sha256
// of the installed file.
func installPlugin(src, dir string) (string, error) {
	return InstallExecutable(src, filepath.Join(dir, PluginFile))
}

// InstallExecutable puts the executable src at dst (a hard link when
// possible, a copy otherwise) and returns the hex sha256 of the installed
// file: what Vault's plugin catalog checks before it starts a plugin.
func InstallExecutable(src, dst string) (string, error) {
	if err := os.Link(src, dst); err != nil {
		if err := copyFile(src, dst); err != nil {
			return "", fmt.Errorf("install %s as %s: %w", src, dst, err)
		}
	}
	return fileSHA256(dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// fileSHA256 returns the lower-case hex sha256 of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("sha256 of %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
