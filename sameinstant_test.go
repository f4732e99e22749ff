package ticketkeys

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestRotateInTheSecondOfAnActivation: rotate mode=now (with and without
// purge, once or twice) and mode=scheduled in the very second a key
// activates, or in the same second as another rotation, never leave two keys
// with one not_before nor a key that never encrypts: readers refuse such a
// window. The new key encrypts from max(now, the last kept key's not_before
// + 1s).
func TestRotateInTheSecondOfAnActivation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []map[string]interface{}
	}{
		{"now", []map[string]interface{}{{"mode": "now"}}},
		{"now twice", []map[string]interface{}{{"mode": "now"}, {"mode": "now"}}},
		{"now then scheduled", []map[string]interface{}{{"mode": "now"}, {"mode": "scheduled"}}},
		{"now with purge twice", []map[string]interface{}{{"mode": "now", "purge_previous": true}, {"mode": "now", "purge_previous": true}}},
		{"now, then now with purge", []map[string]interface{}{{"mode": "now"}, {"mode": "now", "purge_previous": true}}},
	} {
		for _, offset := range []time.Duration{0, 999 * time.Millisecond} {
			t.Run(tc.name+"/+"+offset.String(), func(t *testing.T) {
				tb := getBackend(t)
				tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "retain": "12h"})
				tb.clock.Set(testStart.Add(time.Hour + offset)) // the second the next key activates
				tb.tick(t)
				for _, step := range tc.steps {
					tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", step)
				}
				kr, _ := loadKeyring(t.Context(), tb.storage, "web")
				seen := map[time.Time]string{}
				for _, k := range kr.Keys {
					if other, dup := seen[k.NotBefore]; dup {
						t.Errorf("keys %s and %s both have not_before %s", other[:8], k.ID()[:8], k.NotBefore.Format(time.RFC3339))
					}
					seen[k.NotBefore] = k.ID()
					if !k.EncryptUntil.After(k.NotBefore) {
						t.Errorf("key %s never encrypts (not_before = encrypt_until = %s)", k.ID()[:8], k.NotBefore.Format(time.RFC3339))
					}
				}
				_, keys := readWindow(t, tb, "web", "go")
				if keys[0].State != stateCurrent {
					t.Errorf("window %s does not start with its current key", states(keys))
				}
			})
		}
	}
}

// TestInsertRefusesADuplicateActivation: insert, the one place keys enter a
// schedule, refuses a key whose not_before another key has.
func TestInsertRefusesADuplicateActivation(t *testing.T) {
	kr := &keyring{Name: "web", Settings: keyringSettings{RotationPeriod: time.Hour, Retain: time.Hour, PublishAhead: time.Hour, KeySize: 80}}
	if _, err := kr.maintain(testStart, zeroReader{}); err != nil {
		t.Fatal(err)
	}
	dup := *kr.Keys[1]
	if err := kr.insert(&dup); err == nil || !strings.Contains(err.Error(), "not_before") {
		t.Fatalf("insert of a key activating with another: err %v, want a refusal naming not_before", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestPurgingRotationAtTheCap: near the 256-key cap, rotate mode=now
// purge_previous=true is always accepted (it leaves only the new schedule),
// and a refused rotation (scheduled with purge included) names the rotation
// that is accepted instead of the one the operator just tried.
func TestPurgingRotationAtTheCap(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1m", "retain": "251m"})
	for range 5 * 60 {
		tb.clock.Advance(time.Minute)
		tb.tick(t)
	}
	refused := 0
	for i := range 20 {
		tb.clock.Advance(time.Second)
		resp, err := tb.request(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "scheduled", "purge_previous": i%2 == 0})
		if msg := errorText(resp, err); msg != "" {
			refused++
			assertStatus(t, resp, err, 400, "over the cap of 256", "mode=now purge_previous=true")
			if i%2 == 0 && strings.Contains(msg, "rotate with purge_previous=true") {
				t.Fatalf("a purging rotation is refused with advice to rotate with purge_previous=true: %s", msg)
			}
		}
	}
	if refused == 0 {
		t.Fatal("twenty rotations at the cap were all accepted")
	}
	tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now", "purge_previous": true})
}
