package ticketkeys

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bootstrap/lib/server.sh tells Vault from OpenBao by what `$VAULT status
// -format=json` reports (sealed servers exit 2 and still report), and
// TICKETKEYS_SERVER overrides it. The stub CLI prints the status JSON each
// server's sys/seal-status returns (fields trimmed to those that matter).
func TestBootstrapServerKind(t *testing.T) {
	lib, err := filepath.Abs("bootstrap/lib/server.sh")
	if err != nil {
		t.Fatal(err)
	}
	vault := `{"type":"shamir","initialized":true,"sealed":false,"version":"1.21.0","build_date":"2025-10-21T00:00:00Z","storage_type":"raft"}`
	bao := `{"type":"shamir","initialized":true,"sealed":false,"version":"2.6.2","commit_date":"2026-01-01T00:00:00Z","build_date":"2026-01-01T00:00:00Z"}`
	for _, c := range []struct {
		name, status string
		exit         int
		override     string
		want         string // "" = fails
	}{
		{"vault", vault, 0, "", "vault"},
		{"openbao", bao, 0, "", "openbao"},
		{"sealed openbao", strings.Replace(bao, `"sealed":false`, `"sealed":true`, 1), 2, "", "openbao"},
		{"openbao without commit_date", `{"version":"2.5.0","build_date":"x"}`, 0, "", "openbao"},
		{"override", vault, 0, "openbao", "openbao"},
		{"unreachable", "", 1, "", ""},
		{"no version", `{"type":"shamir"}`, 0, "", ""},
		{"bad override", vault, 0, "consul", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cli := filepath.Join(dir, "cli")
			stub := "#!/bin/sh\n[ \"$1 $2\" = \"status -format=json\" ] || exit 9\ncat <<'JSON'\n" + pretty(c.status) + "\nJSON\nexit " + string(rune('0'+c.exit)) + "\n"
			if err := os.WriteFile(cli, []byte(stub), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("bash", "-c", `. "$1" && server_kind`, "test", lib)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "VAULT=" + cli, "VAULT_ADDR=http://127.0.0.1:1", "TICKETKEYS_SERVER=" + c.override}
			out, err := cmd.Output()
			got := strings.TrimSpace(string(out))
			if c.want == "" {
				if err == nil {
					t.Errorf("server_kind = %q, want a failure", got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("server_kind = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// pretty puts one JSON field per line, as the CLI prints it.
func pretty(j string) string {
	return strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(j, "{", "{\n  "), ",", ",\n  "), "}", "\n}")
}
