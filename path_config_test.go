package ticketkeys

import (
	"testing"
	"time"

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

// TestLowerMaxKeyLifetimeShortensLiveKeys: keys published under a long
// retain must not outlive a lower max_key_lifetime (issue 9 item 4).
func TestLowerMaxKeyLifetimeShortensLiveKeys(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"retain": "160h"})
	for range 4 { // four rotations under retain=160h
		tb.clock.Advance(time.Hour)
		tb.tick(t)
	}
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"retain": "1h"})
	tb.mustRequest(t, logical.UpdateOperation, "config", map[string]interface{}{"max_key_lifetime": "2h"})

	now := tb.clock.Now()
	_, keys := readWindow(t, tb, "web", "nginx")
	for _, k := range keys {
		if life := k.NotAfter.Sub(k.NotBefore); life > 2*time.Hour {
			t.Fatalf("key %s (%s) still decrypts %s after it activated; max_key_lifetime is 2h", k.ID, k.State, life)
		}
		if !now.Before(k.NotAfter) {
			t.Fatalf("key %s returned past its shortened not_after", k.ID)
		}
	}
	kr, _ := loadKeyring(t.Context(), tb.storage, "web")
	for _, k := range kr.Keys {
		if k.NotAfter.Sub(k.NotBefore) > 2*time.Hour || !now.Before(k.NotAfter) {
			t.Fatalf("storage holds key %s with not_after %s past the cap", k.ID(), k.NotAfter)
		}
	}
	expired := 0
	for _, d := range kr.Destroyed {
		if d.Reason == reasonExpired {
			expired++
		}
	}
	if expired < 2 {
		t.Fatalf("%d keys destroyed; the keys more than 2h old must be gone", expired)
	}
	if states(keys) != "current,next,previous" { // the keys of 0h, 1h and 2h are gone at 4h
		t.Fatalf("window after the cap: %s", states(keys))
	}
}

// TestPeriodicAppliesMaxKeyLifetime: a cap written elsewhere (replicated, or a
// config write that stopped half way) is applied by the next tick.
func TestPeriodicAppliesMaxKeyLifetime(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"retain": "100h"})
	entry, _ := logical.StorageEntryJSON(configStorageKey, &mountConfig{MaxKeyLifetime: 3 * time.Hour})
	if err := tb.storage.Put(t.Context(), entry); err != nil {
		t.Fatal(err)
	}
	tb.tick(t)
	kr, _ := loadKeyring(t.Context(), tb.storage, "web")
	for _, k := range kr.Keys {
		if k.NotAfter.Sub(k.NotBefore) > 3*time.Hour {
			t.Fatalf("after a tick key %s still decrypts %s after it activates", k.ID(), k.NotAfter.Sub(k.NotBefore))
		}
	}
}
