//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// approleLogin logs in with the role_id and secret_id files in dir and
// returns the token.
func approleLogin(t *testing.T, s *vaulttest.Server, dir string) string {
	t.Helper()
	var ids [2]string
	for i, f := range []string{"role-id", "secret-id"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = strings.TrimSpace(string(b))
	}
	secret, err := s.Client.Logical().Write("auth/approle/login", map[string]any{"role_id": ids[0], "secret_id": ids[1]})
	if err != nil || secret == nil || secret.Auth == nil {
		t.Fatalf("approle login with %s: %v", dir, err)
	}
	return secret.Auth.ClientToken
}

// canRead reports whether token may read keyring name.
func canRead(t *testing.T, s *vaulttest.Server, token, name string) bool {
	t.Helper()
	_, err := s.ClientWithToken(t, token).Logical().Read("ticketkeys/keys/" + name)
	if err != nil && !strings.Contains(err.Error(), "403") {
		t.Fatalf("read %s: %v", name, err)
	}
	return err == nil
}

// The guide's steps for a node that serves two keyrings: node-approle.sh runs
// once per keyring, on a node where the credential directory does not exist
// yet (an HAProxy node has no installer that creates it). The second run must
// add its keyring to the node's role, not replace the first.
func TestBootstrapNodeAppRoleTwoKeyrings(t *testing.T) {
	s := vaulttest.Start(t)
	for _, name := range []string{"alpha", "beta", "gamma"} {
		createKeyring(t, s, name)
	}
	dir := filepath.Join(t.TempDir(), "etc", "vault-agent", "ticketkeys")

	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "alpha", "edge-7", dir); err != nil {
		t.Fatalf("node-approle.sh into a directory that does not exist yet: %v", err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("credential directory %s: %v, mode %v; want it created 0700", dir, err, st)
	}
	for _, f := range []string{"role-id", "secret-id"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want a 0600 file", f, err, st)
		}
	}
	first := approleLogin(t, s, dir)
	if !canRead(t, s, first, "alpha") || canRead(t, s, first, "beta") {
		t.Fatalf("after node-approle.sh alpha: want alpha readable and beta forbidden")
	}

	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "beta", "edge-7", dir); err != nil {
		t.Fatal(err)
	}
	second := approleLogin(t, s, dir)
	for name, want := range map[string]bool{"alpha": true, "beta": true, "gamma": false} {
		if got := canRead(t, s, second, name); got != want {
			t.Errorf("after node-approle.sh alpha then beta for one node: read %s allowed=%v, want %v", name, got, want)
		}
	}
	// Running it again for a keyring the role already has changes nothing.
	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "alpha", "edge-7", dir); err != nil {
		t.Fatal(err)
	}
	role, err := s.Client.Logical().Read("auth/approle/role/ticketkeys-edge-7")
	if err != nil || role == nil {
		t.Fatalf("read role: %v", err)
	}
	got := role.Data["token_policies"].([]any)
	if len(got) != 2 {
		t.Errorf("role ticketkeys-edge-7 policies %v; want exactly the alpha and beta reader policies", got)
	}
}
