package ticketkeys

import (
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestConfig(t *testing.T) {
	tb := getBackend(t)
	resp := tb.mustRequest(t, logical.ReadOperation, "config", nil)
	if resp.Data["max_key_lifetime"] != int64(7*24*3600) {
		t.Fatalf("default max_key_lifetime = %v, want 7 days", resp.Data["max_key_lifetime"])
	}

	tests := []struct {
		name   string
		value  interface{}
		status int
		frag   []string
	}{
		{"too short", "30s", 400, []string{"max_key_lifetime", "between 1m and 168h", "got 30s"}},
		{"over the RFC cap", "169h", 400, []string{"max_key_lifetime", "between 1m and 168h", "got 169h"}},
		{"not a duration", "forever", 400, []string{"max_key_lifetime", "forever"}},
		{"below an existing keyring", "10h", 400, []string{"max_key_lifetime", `keyring "web" needs 13h`, "got 10h"}},
		{"fits every keyring", "13h", 200, nil},
	}
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", nil) // 1h + 12h
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tb.request(t, logical.UpdateOperation, "config", map[string]interface{}{"max_key_lifetime": tt.value})
			assertStatus(t, resp, err, tt.status, tt.frag...)
		})
	}
	if got := tb.mustRequest(t, logical.ReadOperation, "config", nil).Data["max_key_lifetime"]; got != int64(13*3600) {
		t.Fatalf("max_key_lifetime = %v after the accepted update, want 13h", got)
	}
	// The cap now binds keyring settings.
	resp2, err := tb.request(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"retain": "12h30m"})
	assertStatus(t, resp2, err, 400, "rotation_period + retain must not exceed max_key_lifetime (13h", "1h + 12h30m = 13h30m")
}
