package vaulttest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTail(t *testing.T) {
	cases := []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"a\nb\nc\n\n", 1, "c"},
		{"one", 1, "one"},
		{"a\nb", 0, ""},
	}
	for _, c := range cases {
		if got := tail([]byte(c.in), c.n); got != c.want {
			t.Errorf("tail(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestServerConfig(t *testing.T) {
	cfg := serverConfig("/tmp/x", "127.0.0.1:8201", "127.0.0.1:9301", "debug")
	for _, want := range []string{
		`path = "/tmp/x/data"`,
		`address         = "127.0.0.1:8201"`,
		`cluster_address = "127.0.0.1:9301"`,
		`cluster_addr     = "https://127.0.0.1:9301"`,
		`tls_disable     = true`,
		`plugin_directory = "/tmp/x/plugins"`,
		`disable_mlock    = true`,
		`api_addr         = "http://127.0.0.1:8201"`,
		`log_level        = "debug"`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("server config lacks %q:\n%s", want, cfg)
		}
	}
}

func TestBaseEnvDropsVaultVariables(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "not-for-children")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	for _, kv := range baseEnv() {
		if strings.HasPrefix(kv, "VAULT_") {
			t.Errorf("child environment contains %q", kv)
		}
	}
}

func TestVaultBinaryPath(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("VAULT_BIN", "")
	t.Setenv("TICKETKEYS_CACHE", dir)
	_, err := vaultBinaryPath()
	if err == nil || !strings.Contains(err.Error(), "scripts/vault-build.sh") || !strings.Contains(err.Error(), filepath.Join(dir, "vault-"+VaultVersion, "vault")) {
		t.Fatalf("missing binary: got error %v, want one naming the cache path and scripts/vault-build.sh", err)
	}

	bin := filepath.Join(dir, "vault-"+VaultVersion, "vault")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := vaultBinaryPath(); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("non-executable binary: got error %v, want \"not an executable\"", err)
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := vaultBinaryPath(); err != nil || got != bin {
		t.Fatalf("cached binary: got %q, %v; want %q", got, err, bin)
	}

	other := filepath.Join(dir, "other-vault")
	if err := os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_BIN", other)
	if got, err := vaultBinaryPath(); err != nil || got != other {
		t.Fatalf("VAULT_BIN: got %q, %v; want %q", got, err, other)
	}
}

func TestInstallPluginSHA256(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, []byte("abc"), 0o755); err != nil {
		t.Fatal(err)
	}
	sum, err := installPlugin(src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// sha256("abc"), FIPS 180-2 example.
	if want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; sum != want {
		t.Fatalf("sha256 = %s, want %s", sum, want)
	}
}

func TestParseServers(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
	}{
		{"", "[vault openbao]"},
		{"vault", "[vault]"},
		{" openbao , vault", "[openbao vault]"},
	} {
		got, err := parseServers(c.in)
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("parseServers(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
	if _, err := parseServers("vault,bao"); err == nil || !strings.Contains(err.Error(), `server "bao" is not "vault" or "openbao"`) {
		t.Errorf("parseServers(\"vault,bao\") error = %v; want one naming the unknown server and the known ones", err)
	}
}

func TestOpenBaoConfigDeclaresAudit(t *testing.T) {
	stanza := AuditStanza("file", "/tmp/x/audit.log")
	for _, want := range []string{`audit "file" "file" {`, `file_path = "/tmp/x/audit.log"`, `mode      = "0600"`} {
		if !strings.Contains(stanza, want) {
			t.Errorf("AuditStanza lacks %q:\n%s", want, stanza)
		}
	}
	if OpenBao.CLI() != "bao" || Vault.CLI() != "vault" || !OpenBao.AuditDeclared() || Vault.AuditDeclared() {
		t.Errorf("kinds: OpenBao CLI %q declared %t, Vault CLI %q declared %t", OpenBao.CLI(), OpenBao.AuditDeclared(), Vault.CLI(), Vault.AuditDeclared())
	}
	if env := strings.Join(OpenBao.CLIEnv("http://127.0.0.1:1", "tok"), " "); !strings.Contains(env, "BAO_ADDR=http://127.0.0.1:1") || !strings.Contains(env, "VAULT_TOKEN=tok") {
		t.Errorf("OpenBao.CLIEnv = %s; want BAO_* and VAULT_*", env)
	}
}

// TestForEachServerParallel: the servers' bodies run at the same time (each waits until the other has
// started), both run before ForEachServerParallel returns, and each gets its own kind.
func TestForEachServerParallel(t *testing.T) {
	t.Setenv(ServersEnv, "vault,openbao")
	started := map[Kind]chan struct{}{Vault: make(chan struct{}), OpenBao: make(chan struct{})}
	other := map[Kind]Kind{Vault: OpenBao, OpenBao: Vault}
	var mu sync.Mutex
	var ran []Kind
	ForEachServerParallel(t, func(t *testing.T, kind Kind) {
		close(started[kind])
		select {
		case <-started[other[kind]]:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: the %s body did not start while this one ran", kind, other[kind])
		}
		mu.Lock()
		ran = append(ran, kind)
		mu.Unlock()
	})
	if len(ran) != 2 {
		t.Errorf("bodies that had finished when ForEachServerParallel returned: %v, want vault and openbao", ran)
	}
}
