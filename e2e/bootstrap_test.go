//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	ticketkeys "github.com/ticketkeys/vault-plugin-secrets-ticketkeys"
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
//
// It runs on every server (vaulttest.ForEachServer): Vault and OpenBao.
func TestBootstrapNodeAppRoleTwoKeyrings(t *testing.T) {
	vaulttest.ForEachServer(t, testBootstrapNodeAppRoleTwoKeyrings)
}

func testBootstrapNodeAppRoleTwoKeyrings(t *testing.T, kind vaulttest.Kind) {
	s := vaulttest.Start(t, vaulttest.WithServer(kind))
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
	if len(got) != 3 {
		t.Errorf("role ticketkeys-edge-7 policies %v; want exactly the alpha and beta reader policies and ticketkeys-token-self", got)
	}
}

// node-approle.sh issues node tokens without Vault's `default` policy (Vault
// re-parses its templated paths on every request, about a third of a read's
// CPU in Vault) and with exactly what a node does with its own token: Vault
// Agent and client.KeepLogin look it up, renew it and revoke it.
//
// It runs on every server (vaulttest.ForEachServer): Vault and OpenBao.
func TestBootstrapNodeTokenWithoutDefaultPolicy(t *testing.T) {
	vaulttest.ForEachServer(t, testBootstrapNodeTokenWithoutDefaultPolicy)
}

func testBootstrapNodeTokenWithoutDefaultPolicy(t *testing.T, kind vaulttest.Kind) {
	s := vaulttest.Start(t, vaulttest.WithServer(kind))
	createKeyring(t, s, "web")
	dir := filepath.Join(t.TempDir(), "creds")
	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "web", "web-1", dir); err != nil {
		t.Fatal(err)
	}
	token := approleLogin(t, s, dir)
	node := s.ClientWithToken(t, token)

	self, err := node.Auth().Token().LookupSelf()
	if err != nil {
		t.Fatalf("a node token must look itself up (Vault Agent does): %v", err)
	}
	policies, err := self.TokenPolicies()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(policies)
	if want := []string{"ticketkeys-reader-web", "ticketkeys-token-self"}; !slices.Equal(policies, want) {
		t.Errorf("node token policies %v; want %v (no `default`)", policies, want)
	}
	if _, err := node.Auth().Token().RenewSelf(0); err != nil {
		t.Errorf("a node token must renew itself (Agent and client.KeepLogin do): %v", err)
	}
	if !canRead(t, s, token, "web") {
		t.Errorf("node token cannot read its keyring")
	}
	// What `default` would grant and a node does not need stays closed.
	if _, err := node.Logical().Write("cubbyhole/x", map[string]any{"v": "1"}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("write cubbyhole/x with a node token: %v; want 403 (no default policy)", err)
	}
	if err := node.Auth().Token().RevokeSelf(""); err != nil {
		t.Errorf("a node token must revoke itself on shutdown: %v", err)
	}
	if _, err := s.Client.Auth().Token().Lookup(token); err == nil {
		t.Errorf("the node token still exists after revoke-self")
	}
}

// register.sh mounts the engine so that audit logs show key ids, states and
// times in clear while key material stays HMAC'd, and keeps the non-HMAC
// keys an operator added when it runs again.
//
// It runs on every server (vaulttest.ForEachServer): Vault and OpenBao.
func TestBootstrapRegisterAuditFields(t *testing.T) {
	vaulttest.ForEachServer(t, testBootstrapRegisterAuditFields)
}

func testBootstrapRegisterAuditFields(t *testing.T, kind vaulttest.Kind) {
	s := vaulttest.Start(t, vaulttest.WithServer(kind), vaulttest.WithoutPluginRegistration(), vaulttest.WithAuditFile())
	plugin := filepath.Join(s.PluginDir, vaulttest.PluginFile)
	if _, err := eapiScript(t, s, "bootstrap/register.sh", plugin); err != nil {
		t.Fatal(err)
	}
	createKeyring(t, s, "web")
	w := readWindow(t, s, "web", "haproxy")

	// The audit device writes the response entry of that read.
	var entry struct {
		Type    string `json:"type"`
		Request struct {
			Path string `json:"path"`
		} `json:"request"`
		Response struct {
			Data struct {
				Keys []struct {
					ID        string `json:"id"`
					State     string `json:"state"`
					NotBefore string `json:"not_before"`
					TicketKey string `json:"ticket_key"`
				} `json:"keys"`
				TLSTicketKeys []string `json:"tls_ticket_keys"`
			} `json:"data"`
		} `json:"response"`
	}
	found := false
	for _, line := range strings.Split(readAuditLog(t, s), "\n") {
		if !strings.Contains(line, `"type":"response"`) || !strings.Contains(line, `"path":"ticketkeys/keys/web"`) {
			continue
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatal(err)
		}
		if len(entry.Response.Data.Keys) > 0 {
			found = true
		}
	}
	if !found {
		t.Fatal("no audited response of the window read in the audit log")
	}
	data := entry.Response.Data
	if len(data.Keys) != len(w.Keys) {
		t.Fatalf("audit entry has %d keys, the read returned %d", len(data.Keys), len(w.Keys))
	}
	for i, k := range data.Keys {
		if k.ID != w.Keys[i].ID || k.State != w.Keys[i].State {
			t.Errorf("audited key %d: id %q state %q; want them in clear: %q %q", i, k.ID, k.State, w.Keys[i].ID, w.Keys[i].State)
		}
		if _, err := time.Parse(time.RFC3339, k.NotBefore); err != nil {
			t.Errorf("audited key %d: not_before %q is not a clear RFC 3339 time", i, k.NotBefore)
		}
		if !strings.HasPrefix(k.TicketKey, "hmac-sha256:") {
			t.Errorf("audited key %d: ticket_key is not HMAC'd", i)
		}
	}
	for i, line := range data.TLSTicketKeys {
		if !strings.HasPrefix(line, "hmac-sha256:") {
			t.Errorf("audited tls_ticket_keys[%d] is not HMAC'd", i)
		}
	}

	// An operator's own non-HMAC key survives a second register.sh (an upgrade).
	if err := s.Client.Sys().TuneMount("ticketkeys", api.MountConfigInput{AuditNonHMACResponseKeys: []string{"operator_field"}}); err != nil {
		t.Fatal(err)
	}
	out, err := eapiScript(t, s, "bootstrap/register.sh", plugin)
	if err != nil || !strings.Contains(out, "in clear") {
		t.Fatalf("register.sh again: %q, %v; want it to restore the engine's non-HMAC fields", out, err)
	}
	cfg, err := s.Client.Sys().MountConfig("ticketkeys")
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.AuditNonHMACResponseKeys
	for _, k := range append([]string{"operator_field"}, ticketkeys.AuditNonHMACResponseKeys...) {
		if !slices.Contains(got, k) {
			t.Errorf("audit_non_hmac_response_keys %q after register.sh: missing %q", got, k)
		}
	}
}

// readAuditLog returns the audit log of s.
func readAuditLog(t *testing.T, s *vaulttest.Server) string {
	t.Helper()
	b, err := os.ReadFile(s.AuditLogPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// register.sh on a mount whose audit_non_hmac_response_keys already lists a field with key material
// (issue 21: it exited 0, printed "(ticket_key stays HMAC'd)" and left ticket_key in the list) stops before
// changing anything, naming every such field, and leaves the mount as it was; with the list repaired it
// runs. Each field of ticketkeys.KeyMaterialResponseKeys is tried, beside an operator's harmless field.
func TestBootstrapRegisterRefusesKeyMaterialInClear(t *testing.T) {
	s := vaulttest.Start(t, vaulttest.WithoutPluginRegistration())
	plugin := filepath.Join(s.PluginDir, vaulttest.PluginFile)
	if _, err := eapiScript(t, s, "bootstrap/register.sh", plugin); err != nil {
		t.Fatal(err)
	}
	for _, material := range ticketkeys.KeyMaterialResponseKeys {
		list := append([]string{"operator_field", material}, ticketkeys.AuditNonHMACResponseKeys...)
		if err := s.Client.Sys().TuneMount("ticketkeys", api.MountConfigInput{AuditNonHMACResponseKeys: list}); err != nil {
			t.Fatal(err)
		}
		out, err := eapiScript(t, s, "bootstrap/register.sh", plugin)
		if err == nil || !strings.Contains(err.Error(), material) || !strings.Contains(err.Error(), "in clear") {
			t.Errorf("register.sh with %s in audit_non_hmac_response_keys: out %q, err %v; want a failure naming %s", material, out, err, material)
		}
		if strings.Contains(out, "stays HMAC'd") {
			t.Errorf("register.sh with %s in the list printed %q", material, out)
		}
		cfg, err := s.Client.Sys().MountConfig("ticketkeys")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(cfg.AuditNonHMACResponseKeys, material) || len(cfg.AuditNonHMACResponseKeys) != len(list) {
			t.Errorf("after the refusal the mount's list is %q; want it unchanged (%q)", cfg.AuditNonHMACResponseKeys, list)
		}
	}
	// Repaired as the message says (the list without the material fields), register.sh runs again.
	if err := s.Client.Sys().TuneMount("ticketkeys", api.MountConfigInput{AuditNonHMACResponseKeys: append([]string{"operator_field"}, ticketkeys.AuditNonHMACResponseKeys...)}); err != nil {
		t.Fatal(err)
	}
	if out, err := eapiScript(t, s, "bootstrap/register.sh", plugin); err != nil {
		t.Fatalf("register.sh on the repaired mount: %q, %v", out, err)
	}
}

// audit.sh checks the options of a device already enabled at its path instead of accepting it by name: a
// device with log_raw=true (keys in clear) or hmac_accessor=false fails, naming the option; the device
// audit.sh enables itself passes a second run.
func TestBootstrapAuditChecksAnExistingDevice(t *testing.T) {
	s := vaulttest.Start(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		path, option, value string
	}{
		{"raw", "log_raw", "true"},
		{"accessors", "hmac_accessor", "false"},
	} {
		file := filepath.Join(dir, tc.path+".log")
		if err := s.Client.Sys().EnableAuditWithOptions(tc.path, &api.EnableAuditOptions{
			Type: "file", Options: map[string]string{"file_path": file, tc.option: tc.value},
		}); err != nil {
			t.Fatal(err)
		}
		out, err := eapiScript(t, s, "bootstrap/audit.sh", file, tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.option+"="+tc.value) {
			t.Errorf("audit.sh on a device with %s=%s: out %q, err %v; want a failure naming %s=%s", tc.option, tc.value, out, err, tc.option, tc.value)
		}
	}
	file := filepath.Join(dir, "good.log")
	for run := 1; run <= 2; run++ {
		out, err := eapiScript(t, s, "bootstrap/audit.sh", file, "good")
		if err != nil {
			t.Fatalf("audit.sh run %d on its own device: %v", run, err)
		}
		if run == 2 && !strings.Contains(out, "checked") {
			t.Errorf("audit.sh run 2: %q; want it to say the existing device's options were checked", out)
		}
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("audit log %s: %v, mode %v; want 0600", file, err, st)
	}
}

// appRoleLoginWith logs in with role_id and secret_id and returns the error (nil on success).
func appRoleLoginWith(s *vaulttest.Server, roleID, secretID string) error {
	_, err := s.Client.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	return err
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// node-approle.sh gives a node credentials that expire and can be re-issued after a leak (issue 21: the role
// had secret_id_ttl 0, and running the script twice left two valid secret-ids): the role carries a finite
// secret_id_ttl, a secret-id re-issued by a second run is the only valid one (the earlier one is destroyed),
// -c binds the secret-id and the tokens to CIDR blocks (a login from outside them fails), and a never-expiring
// -t 0 is refused.
func TestBootstrapNodeAppRoleCredentialsExpireAndRotate(t *testing.T) {
	s := vaulttest.Start(t)
	createKeyring(t, s, "web")
	dir := filepath.Join(t.TempDir(), "creds")
	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "web", "n1", dir); err != nil {
		t.Fatal(err)
	}
	role, err := s.Client.Logical().Read("auth/approle/role/ticketkeys-n1")
	if err != nil || role == nil {
		t.Fatalf("read role: %v", err)
	}
	if ttl, _ := role.Data["secret_id_ttl"].(json.Number).Int64(); ttl <= 0 || ttl > 90*24*3600 {
		t.Errorf("role secret_id_ttl = %v; want a finite default (30 days)", role.Data["secret_id_ttl"])
	}
	roleID := readTrimmed(t, filepath.Join(dir, "role-id"))
	first := readTrimmed(t, filepath.Join(dir, "secret-id"))
	if err := appRoleLoginWith(s, roleID, first); err != nil {
		t.Fatalf("login with the first secret-id: %v", err)
	}

	// Re-provisioning (after a suspected leak, or for a second keyring) leaves only the new secret-id valid.
	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "web", "n1", dir); err != nil {
		t.Fatal(err)
	}
	second := readTrimmed(t, filepath.Join(dir, "secret-id"))
	if err := appRoleLoginWith(s, roleID, first); err == nil {
		t.Errorf("the first secret-id still logs in after node-approle.sh issued a new one; want it destroyed")
	}
	if err := appRoleLoginWith(s, roleID, second); err != nil {
		t.Errorf("login with the new secret-id: %v", err)
	}
	list, err := s.Client.Logical().List("auth/approle/role/ticketkeys-n1/secret-id")
	if err != nil || list == nil || len(list.Data["keys"].([]any)) != 1 {
		t.Errorf("secret-id accessors of the role: %v, %v; want exactly one", list, err)
	}

	// CIDR binding: from loopback, a role bound to 10.0.0.0/8 cannot log in; bound to 127.0.0.1/32 it can,
	// and its tokens carry the binding.
	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "-c", "10.0.0.0/8", "web", "n1", dir); err != nil {
		t.Fatal(err)
	}
	if err := appRoleLoginWith(s, roleID, readTrimmed(t, filepath.Join(dir, "secret-id"))); err == nil {
		t.Errorf("login from 127.0.0.1 with a secret-id bound to 10.0.0.0/8 succeeded")
	}
	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "-c", "127.0.0.1/32", "web", "n1", dir); err != nil {
		t.Fatal(err)
	}
	if err := appRoleLoginWith(s, roleID, readTrimmed(t, filepath.Join(dir, "secret-id"))); err != nil {
		t.Errorf("login from 127.0.0.1 bound to 127.0.0.1/32: %v", err)
	}
	role, _ = s.Client.Logical().Read("auth/approle/role/ticketkeys-n1")
	for _, f := range []string{"secret_id_bound_cidrs", "token_bound_cidrs"} {
		// Vault stores a /32 token binding as the bare address.
		if got := fmt.Sprint(role.Data[f]); got != "[127.0.0.1/32]" && got != "[127.0.0.1]" {
			t.Errorf("role %s = %s; want [127.0.0.1/32]", f, got)
		}
	}
	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "-t", "0", "web", "n1", dir); err == nil || !strings.Contains(err.Error(), "-t TTL '0'") {
		t.Errorf("node-approle.sh -t 0: %v; want a refusal naming -t", err)
	}
}

// Response-wrapped delivery, end to end with a real Vault Agent: node-approle.sh -w writes a single-use
// wrapping token (not the secret-id) whose creation path is the role's secret-id path; an Agent configured
// by ticketkeys-agent-config's -secret-id-wrapping-path unwraps it, logs in and reads the keyring; the token
// is then spent (a copy taken on the way is useless), and an Agent expecting another path refuses it.
func TestBootstrapNodeAppRoleWrappedSecretIDWithAgent(t *testing.T) {
	s := vaulttest.Start(t)
	createKeyring(t, s, "web")
	dir := filepath.Join(t.TempDir(), "creds")
	if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "-w", "5m", "web", "n1", dir); err != nil {
		t.Fatal(err)
	}
	wrapping := readTrimmed(t, filepath.Join(dir, "secret-id"))
	info, err := s.Client.Logical().Write("sys/wrapping/lookup", map[string]any{"token": wrapping})
	if err != nil || info == nil {
		t.Fatalf("the secret-id file is not a wrapping token: %v", err)
	}
	wantPath := "auth/approle/role/ticketkeys-n1/secret-id"
	if got := info.Data["creation_path"]; got != wantPath {
		t.Fatalf("wrapping token creation_path %v; want %s", got, wantPath)
	}
	if err := appRoleLoginWith(s, readTrimmed(t, filepath.Join(dir, "role-id")), wrapping); err == nil {
		t.Fatal("the wrapping token itself logs in as a secret-id")
	}

	agentConf := func(sink, wrappingPath string) string {
		return fmt.Sprintf(`
vault { address = %q }
auto_auth {
  method "approle" {
    mount_path = "auth/approle"
    config = {
      role_id_file_path                   = %q
      secret_id_file_path                 = %q
      remove_secret_id_file_after_reading = false
      secret_id_response_wrapping_path    = %q
    }
  }
  sink "file" {
    config = {
      path = %q
      mode = 0600
    }
  }
}
`, s.Addr, filepath.Join(dir, "role-id"), filepath.Join(dir, "secret-id"), wrappingPath, sink)
	}
	// An Agent expecting another creation path refuses the token and leaves it unspent.
	wrongSink := filepath.Join(t.TempDir(), "token")
	wrong := vaulttest.StartAgent(t, s, agentConf(wrongSink, "auth/approle/role/other/secret-id"))
	time.Sleep(3 * time.Second)
	if _, err := os.Stat(wrongSink); err == nil {
		t.Fatal("an Agent expecting another wrapping path logged in")
	}
	wrong.Stop()

	sink := filepath.Join(t.TempDir(), "token")
	agent := vaulttest.StartAgent(t, s, agentConf(sink, wantPath))
	agent.WaitFor(t, 30*time.Second, "Agent's token in its sink", func() bool {
		b, err := os.ReadFile(sink)
		return err == nil && len(b) > 0
	})
	if !canRead(t, s, readTrimmed(t, sink), "web") {
		t.Errorf("the Agent's token cannot read keyring web")
	}
	if _, err := s.Client.Logical().Write("sys/wrapping/lookup", map[string]any{"token": wrapping}); err == nil {
		t.Errorf("the wrapping token is still valid after the Agent unwrapped it")
	}
}
