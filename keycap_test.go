package ticketkeys

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestSettingsOverTheKeyCapAreRefused(t *testing.T) {
	tests := []struct {
		name     string
		create   map[string]interface{}
		update   map[string]interface{}
		wantFrag []string
	}{
		{"5s for a week", map[string]interface{}{"rotation_period": "5s", "retain": "167h"}, nil,
			[]string{"would hold up to 120278 keys", "rotation_period 5s", "retain 167h", "publish_ahead 5s", "cap is 256"}},
		{"1m for three days", map[string]interface{}{"rotation_period": "1m", "retain": "72h"}, nil,
			[]string{"would hold up to 4325 keys", "rotation_period 1m", "retain 72h", "cap is 256"}},
		{"shortening the period of a long keyring", map[string]interface{}{"rotation_period": "1h", "retain": "160h"},
			map[string]interface{}{"rotation_period": "10m"},
			[]string{"would hold up to", "rotation_period 10m", "retain 160h", "with the keys it holds now", "cap is 256"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := getBackend(t)
			data := tt.create
			if tt.update != nil {
				tb.mustRequest(t, logical.UpdateOperation, "keys/web", tt.create)
				data = tt.update
			}
			before, _ := tb.storage.Get(t.Context(), keyringPath("web"))
			resp, err := tb.request(t, logical.UpdateOperation, "keys/web", data)
			assertStatus(t, resp, err, 400, tt.wantFrag...)
			after, _ := tb.storage.Get(t.Context(), keyringPath("web"))
			if (before == nil) != (after == nil) || (before != nil && string(before.Value) != string(after.Value)) {
				t.Fatal("a refused write changed storage")
			}
		})
	}
}

// TestKeyringAtTheCap runs the largest schedule the cap allows for a
// one-minute period through more than a full key lifetime, with the destroyed
// history full, and checks the stored entry and the read response sizes, the
// key count, and that rotations stop at the cap unless they purge.
func TestKeyringAtTheCap(t *testing.T) {
	tb := getBackend(t)
	// steady = (1m publish_ahead + 3m margin + 1m + retain) / 1m <= 256.
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1m", "retain": "251m"})
	resp, err := tb.request(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"retain": "252m"})
	assertStatus(t, resp, err, 400, "would hold up to 257 keys")

	maxKeys, maxEntry := 0, 0
	for range 6 * 60 { // six hours, one tick a minute
		tb.clock.Advance(time.Minute)
		tb.tick(t)
		entry, _ := tb.storage.Get(t.Context(), keyringPath("web"))
		maxEntry = max(maxEntry, len(entry.Value))
		kr, _ := loadKeyring(t.Context(), tb.storage, "web")
		maxKeys = max(maxKeys, len(kr.Keys))
	}
	kr, _ := loadKeyring(t.Context(), tb.storage, "web")
	if len(kr.Destroyed) != destroyedHistoryLimit {
		t.Fatalf("destroyed history holds %d entries, want it full (%d)", len(kr.Destroyed), destroyedHistoryLimit)
	}
	if maxKeys > maxKeysPerKeyring || maxKeys < maxKeysPerKeyring-5 {
		t.Fatalf("the keyring held up to %d keys; want close to the cap %d, never over it", maxKeys, maxKeysPerKeyring)
	}
	if maxEntry > 128<<10 {
		t.Fatalf("stored entry reached %d bytes at %d keys; want at most 128 KiB, far under Consul's 512 KiB", maxEntry, maxKeys)
	}
	for _, f := range formats {
		r, keys := readWindow(t, tb, "web", f)
		body, _ := json.Marshal(r.Data)
		if len(body) > 128<<10 {
			t.Fatalf("format %s: read response is %d bytes with %d keys", f, len(body), len(keys))
		}
	}
	t.Logf("at the cap: %d keys, entry %d bytes", maxKeys, maxEntry)

	// Rotations add keys: once the cap would be passed they are refused and
	// change nothing, except an emergency rotation that purges.
	var refused string
	for i := 0; i < 10 && refused == ""; i++ {
		resp, err := tb.request(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now"})
		if msg := errorText(resp, err); msg != "" {
			assertStatus(t, resp, err, 400, "over the cap of 256", "mode=now purge_previous=true")
			refused = msg
		}
	}
	if refused == "" {
		t.Fatal("ten rotations at the cap were all accepted")
	}
	tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now", "purge_previous": true})
	if _, keys := readWindow(t, tb, "web", "nginx"); states(keys) != "current,next" {
		t.Fatalf("after a purge the window is %s", states(keys))
	}
}

// TestWindowIsLinear reads a window of 250 previous keys with a constant
// number of allocations (prepending each previous key made it quadratic).
func TestWindowIsLinear(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1m", "retain": "250m"})
	for range 260 {
		tb.clock.Advance(time.Minute)
		tb.tick(t)
	}
	kr := tb.cached(t, "web")
	now := tb.clock.Now()
	window := kr.window(now)
	if len(window) < 250 {
		t.Fatalf("window has %d keys, want at least 250", len(window))
	}
	// Order: current, next by activation, previous newest first.
	got := make([]string, len(window))
	for i, k := range window {
		got[i] = k.State
		if i > 1 && k.State == statePrevious && !k.NotBefore.Before(window[i-1].NotBefore) && window[i-1].State == statePrevious {
			t.Fatalf("previous keys are not newest first at %d", i)
		}
	}
	if want := "current,next," + strings.Repeat("previous,", len(window)-2); strings.Join(got, ",")+"," != want {
		t.Fatalf("states %s", strings.Join(got, ","))
	}
	allocs := testing.AllocsPerRun(20, func() { kr.window(now) })
	if allocs > 2 {
		t.Fatalf("window() of %d keys made %.0f allocations, want 1 (linear)", len(window), allocs)
	}
}
