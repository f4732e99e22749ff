//go:build e2e

package vaulttest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	ticketkeys "github.com/ticketkeys/vault-plugin-secrets-ticketkeys"
)

func TestMain(m *testing.M) { Main(m) }

// TestHarness proves what the other end-to-end tests rely on: a real,
// initialised, unsealed server with the plugin from this checkout registered
// by sha256 and version and mounted; tokens, policies and AppRole; an audit
// device; Restart keeping storage and mounts; an Agent that authenticates
// and renders; and Stop leaving no process behind. It runs on every server
// (ForEachServer): Vault and OpenBao.
func TestHarness(t *testing.T) { ForEachServer(t, testHarness) }

func testHarness(t *testing.T, kind Kind) {
	s := Start(t, WithServer(kind), WithAuditFile())

	if !strings.HasPrefix(s.Addr, "http://127.0.0.1:") {
		t.Fatalf("Addr = %q, want a 127.0.0.1 address", s.Addr)
	}
	h, err := s.Client.Sys().Health()
	if err != nil || !h.Initialized || h.Sealed || h.Standby {
		t.Fatalf("health = %+v, %v; want initialised, unsealed, active", h, err)
	}
	if h.Version != kind.Version() {
		t.Errorf("%s server version = %q, want %s", kind.Title(), h.Version, kind.Version())
	}

	// The catalog entry is this checkout's binary, by sha256 and version.
	p, err := s.Client.Sys().GetPlugin(&api.GetPluginInput{Name: PluginName, Type: api.PluginTypeSecrets, Version: ticketkeys.Version})
	if err != nil {
		t.Fatalf("read catalog entry: %v", err)
	}
	if p.SHA256 != s.PluginSHA256 || p.Command != PluginFile || p.Version != ticketkeys.Version {
		t.Errorf("catalog entry = sha256 %s command %q version %q; want %s %q %q", p.SHA256, p.Command, p.Version, s.PluginSHA256, PluginFile, ticketkeys.Version)
	}
	if sum, err := fileSHA256(pluginBinary(t)); err != nil || sum != s.PluginSHA256 {
		t.Errorf("installed plugin sha256 %s differs from the build %s (%v)", s.PluginSHA256, sum, err)
	}
	checkMount(t, s)
	if b, _ := os.ReadFile(s.LogPath); !strings.Contains(string(b), "cluster_listen_address="+s.clusterAddr) {
		t.Errorf("server log does not show the cluster listener on the chosen free port %s", s.clusterAddr)
	}

	// Tokens and policies.
	s.WritePolicy(t, "read-config", `path "ticketkeys/config" { capabilities = ["read"] }`)
	tok := s.NewToken(t, "read-config")
	c := s.ClientWithToken(t, tok)
	if _, err := c.Logical().Read("ticketkeys/config"); err != nil {
		t.Errorf("token with read-config cannot read ticketkeys/config: %v", err)
	}
	if _, err := c.Logical().Write("ticketkeys/config", map[string]any{"max_key_lifetime": "24h"}); !isForbidden(err) {
		t.Errorf("token with read-config wrote ticketkeys/config: err = %v, want 403", err)
	}

	// AppRole gives working credentials.
	roleID, secretID := s.EnableAppRole(t, "harness", "read-config")
	login, err := s.Client.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil || login.Auth == nil || !contains(login.Auth.Policies, "read-config") {
		t.Fatalf("approle login: %v (auth %+v)", err, login)
	}

	// The audit device records requests.
	if _, err := s.Client.Logical().Read("ticketkeys/config"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(s.AuditLogPath); err != nil || !strings.Contains(string(b), `"path":"ticketkeys/config"`) {
		t.Errorf("audit log %s has no entry for ticketkeys/config (%d bytes, %v)", s.AuditLogPath, len(b), err)
	}

	// Restart: same address, storage, token and mount.
	oldPID, oldAddr := s.Proc.PID, s.Addr
	s.Restart(t)
	if s.Proc.PID == oldPID || s.Addr != oldAddr {
		t.Errorf("restart: pid %d -> %d, addr %s -> %s; want a new pid on the same address", oldPID, s.Proc.PID, oldAddr, s.Addr)
	}
	if !processGone(oldPID) {
		t.Errorf("restart: old server pid %d still exists", oldPID)
	}
	if _, err := c.Logical().Read("ticketkeys/config"); err != nil {
		t.Errorf("after restart, the token cannot read ticketkeys/config: %v", err)
	}
	checkMount(t, s)

	// Agent: AppRole auto-auth and a template from the token's own lookup.
	dir := t.TempDir()
	roleFile, secretFile, out := filepath.Join(dir, "role-id"), filepath.Join(dir, "secret-id"), filepath.Join(dir, "out.txt")
	writeFile(t, roleFile, roleID)
	writeFile(t, secretFile, secretID)
	agent := StartAgent(t, s, fmt.Sprintf(`
vault { address = %q }
auto_auth {
  method "approle" {
    config = {
      role_id_file_path                   = %q
      secret_id_file_path                 = %q
      remove_secret_id_file_after_reading = false
    }
  }
}
template {
  contents    = "{{ with secret \"auth/token/lookup-self\" }}{{ .Data.display_name }}{{ end }}"
  destination = %q
}
`, s.Addr, roleFile, secretFile, out))
	agent.WaitFor(t, 30*time.Second, "rendered "+out, func() bool {
		b, err := os.ReadFile(out)
		return err == nil && strings.TrimSpace(string(b)) == "approle"
	})
	agent.Stop()
	if !processGone(agent.PID) {
		t.Errorf("agent pid %d still exists after Stop", agent.PID)
	}

	// Stop leaves neither the server nor a plugin process.
	pid := s.Proc.PID
	s.Stop()
	if !processGone(pid) {
		t.Errorf("server pid %d still exists after Stop", pid)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still has members after Stop (kill -0: %v)", pid, err)
	}
}

// checkMount asserts that ticketkeys/ is this plugin at ticketkeys.Version
// and that it answers.
func checkMount(t *testing.T, s *Server) {
	t.Helper()
	m, err := s.Client.Sys().GetMount(MountPath)
	if err != nil {
		t.Fatalf("read mount %s/: %v", MountPath, err)
	}
	if m.Type != PluginName || m.RunningVersion != ticketkeys.Version || m.RunningSha256 != s.PluginSHA256 {
		t.Errorf("mount %s/ = type %q running %q sha256 %s; want %q %q %s", MountPath, m.Type, m.RunningVersion, m.RunningSha256, PluginName, ticketkeys.Version, s.PluginSHA256)
	}
	if _, err := s.Client.Logical().Read(MountPath + "/config"); err != nil {
		t.Errorf("read %s/config: %v", MountPath, err)
	}
}

func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

// processGone reports whether pid no longer exists (it has been reaped).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
