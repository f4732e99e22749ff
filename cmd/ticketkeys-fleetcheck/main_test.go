package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// TestUsageErrors: every bad flag is refused with exit status 2 and a
// message naming the flag and the rule.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	_, _, ca := testcert.New(t, testcert.ECDSAP256).WritePEM(dir)
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", "test-token")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	base := []string{"-keyring", "web", "-format", "nginx"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no keyring", []string{"-format", "nginx", "-node", "127.0.0.1:443"}, "-keyring: required"},
		{"no format", []string{"-keyring", "web", "-node", "127.0.0.1:443"}, "-format: required"},
		{"bad format", append(base[:2:2], "-format", "apache", "-node", "127.0.0.1:443"), `format: must be one of [nginx haproxy envoy go], got "apache"`},
		{"no node", base, "at least one node is required"},
		{"node without port", append(base, "-node", "127.0.0.1"), `address must be host:port, got "127.0.0.1"`},
		{"unknown node option", append(base, "-node", "127.0.0.1:443,port=9"), `option must be sni=NAME, ca=FILE, kind=local|agent or domain=NAME, got "port=9"`},
		{"unknown node kind", append(base, "-node", "127.0.0.1:443,kind=lua"), `nodes[0].kind: must be one of [local agent], got "lua"`},
		{"duplicate node", append(base, "-node", "127.0.0.1:443", "-node", "127.0.0.1:443"), `"127.0.0.1:443" appears twice`},
		{"ca without certificates", append(base, "-node", "127.0.0.1:443,ca="+empty), "holds no PEM certificate"},
		{"bad TLS version", append(base, "-node", "127.0.0.1:443,ca="+ca, "-tls", "1.1"), `-tls: each version must be 1.2 or 1.3, got "1.1"`},
		{"negative grace", append(base, "-node", "127.0.0.1:443", "-grace", "-1s"), "grace: must not be negative, got -1s"},
		{"remote http vault", append(base, "-node", "127.0.0.1:443", "-vault-addr", "http://vault.example.com:8200"), "-vault-addr: plain http:// only to a loopback address"},
		{"vault ca without certificates", append(base, "-node", "127.0.0.1:443", "-vault-addr", "https://127.0.0.1:1", "-vault-ca-cert", empty), "no PEM certificate"},
		{"listen without continuous", append(base, "-node", "127.0.0.1:443", "-listen", "127.0.0.1:0"), "-listen: only with -continuous"},
		{"empty token file", append(base, "-node", "127.0.0.1:443", "-token-file", empty), "is empty"},
		{"role id without secret id", append(base, "-node", "127.0.0.1:443", "-approle-role-id-file", empty), "-approle-role-id-file and -approle-secret-id-file: give both or neither"},
		{"token file and approle", append(base, "-node", "127.0.0.1:443", "-token-file", empty, "-approle-role-id-file", empty, "-approle-secret-id-file", empty), "give one way to get a token, not both"},
		{"missing nodes file", append(base, "-nodes-file", filepath.Join(dir, "nope")), "-nodes-file: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tc.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2; stderr %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not say %q", stderr.String(), tc.want)
			}
		})
	}
}

// TestVaultUnreachable: a round whose window read fails exits 1 and says so
// in the table and the JSON report.
func TestVaultUnreachable(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "test-token")
	dir := t.TempDir()
	nodes := filepath.Join(dir, "nodes")
	if err := os.WriteFile(nodes, []byte("# fleet\n127.0.0.1:1 # nothing listens\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-vault-addr", "http://127.0.0.1:1", "-keyring", "web", "-format", "haproxy",
		"-nodes-file", nodes, "-timeout", "1s", "-json", filepath.Join(dir, "report.json")}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "vault: ") || !strings.Contains(stdout.String(), "127.0.0.1:1") {
		t.Fatalf("table does not report the Vault error and the node:\n%s", stdout.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil || !bytes.Contains(b, []byte(`"vault_error"`)) || !bytes.Contains(b, []byte(`"ok": false`)) {
		t.Fatalf("report.json: %v\n%s", err, b)
	}
}
