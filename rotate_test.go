package ticketkeys

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// published records what readers were shown of a key, which must never move.
type published struct {
	firstSeen           time.Time
	notBefore, notAfter time.Time
	exempt              bool // created by a repair or by rotate mode=now: could not be pre-published
	verifiedGone        bool // storage was checked to hold no material for it after not_after
}

// expiryDue reports whether a key readers saw has passed not_after since the
// last storage check, so the tick that just ran must have destroyed it.
func expiryDue(seen map[string]*published, now time.Time) bool {
	for _, p := range seen {
		if !p.verifiedGone && !now.Before(p.notAfter) {
			return true
		}
	}
	return false
}

func markVerified(seen map[string]*published, now time.Time) {
	for _, p := range seen {
		if !now.Before(p.notAfter) {
			p.verifiedGone = true
		}
	}
}

// TestScheduleSweep drives keyrings through two simulated weeks at one-minute
// steps, with missed periodic ticks, a Vault outage longer than publish_ahead,
// settings changes and rotations, and checks at every step what a reader and
// storage see.
func TestScheduleSweep(t *testing.T) {
	cases := []struct {
		name     string
		settings map[string]interface{}
		changes  map[int]map[string]interface{} // step -> settings update
	}{
		{"defaults", nil, map[int]map[string]interface{}{
			3000: {"rotation_period": "30m"}, 6000: {"retain": "2h"}, 9000: {"rotation_period": "2h", "retain": "24h"},
		}},
		{"short publish_ahead", map[string]interface{}{"rotation_period": "30m", "publish_ahead": "10m", "retain": "3h", "key_size": 48}, map[int]map[string]interface{}{
			4000: {"publish_ahead": "30m"}, 8000: {"publish_ahead": "5m", "rotation_period": "20m"},
		}},
		{"fast", map[string]interface{}{"rotation_period": "5m", "retain": "0s"}, map[int]map[string]interface{}{
			5000: {"rotation_period": "7m", "retain": "11m"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := getBackend(t)
			rng := rand.New(rand.NewPCG(7, 11))
			// The ttl points at the next change: no cap from max_read_ttl here.
			tb.mustRequest(t, logical.UpdateOperation, "config", map[string]interface{}{"max_read_ttl": "24h"})
			tb.mustRequest(t, logical.UpdateOperation, "keys/web", tc.settings)

			const steps = 14 * 24 * 60 // two weeks
			outageStart, outageEnd := 10000, 10000+7*60
			seen := map[string]*published{}
			var lastSig string
			var changeAt time.Time
			capped := false
			for step := 0; step <= steps; step++ {
				now := testStart.Add(time.Duration(step) * time.Minute)
				tb.clock.Set(now)
				if step >= outageStart && step < outageEnd {
					continue // sealed: no ticks and no reads
				}
				afterOutage := step == outageEnd
				if upd, ok := tc.changes[step]; ok {
					tb.mustRequest(t, logical.UpdateOperation, "keys/web", upd)
					changeAt = time.Time{}
				}
				switch {
				case step%2500 == 1200:
					nk := rotateVia(t, tb, "scheduled", false)
					if !nk.NotBefore.After(now) {
						t.Fatalf("step %d: scheduled rotation activates at %v, not after now", step, nk.NotBefore)
					}
					changeAt = time.Time{}
				case step%2500 == 2400:
					nk := rotateVia(t, tb, "now", step%5000 == 2400)
					seen[nk.ID] = &published{firstSeen: now, notBefore: nk.NotBefore, notAfter: nk.NotAfter, exempt: true}
					changeAt = time.Time{}
				}
				if rng.IntN(10) < 7 || afterOutage { // about 30% of ticks are missed
					// Vault runs the periodic function at most once a minute.
					if !afterOutage || rng.IntN(2) == 0 {
						tb.tick(t)
						if expiryDue(seen, now) {
							assertNoExpiredMaterial(t, tb, now)
							markVerified(seen, now)
						}
					}
				}

				resp, keys := readWindow(t, tb, "web", "nginx")
				settings := readSettings(resp)
				currents := 0
				for _, k := range keys {
					if k.State == stateCurrent {
						currents++
					}
					if !now.Before(k.NotAfter) {
						t.Fatalf("step %d: key %s returned at or after its not_after", step, k.ID)
					}
					p, ok := seen[k.ID]
					if !ok {
						p = &published{firstSeen: now, notBefore: k.NotBefore, notAfter: k.NotAfter, exempt: afterOutage && !k.NotBefore.After(now)}
						seen[k.ID] = p
					}
					if !k.NotBefore.Equal(p.notBefore) || !k.NotAfter.Equal(p.notAfter) {
						t.Fatalf("step %d: published key %s moved from [%v, %v] to [%v, %v]", step, k.ID, p.notBefore, p.notAfter, k.NotBefore, k.NotAfter)
					}
					if life := k.NotAfter.Sub(k.NotBefore); life > defaultMaxKeyLifetime {
						t.Fatalf("step %d: key %s decryptable for %v", step, k.ID, life)
					}
					if k.State == stateCurrent && !p.exempt {
						if lead := k.NotBefore.Sub(p.firstSeen); lead < settingsAt(p, settings) {
							t.Fatalf("step %d: key %s was readable only %v before it activated, publish_ahead %v", step, k.ID, lead, settings.PublishAhead)
						}
					}
				}
				if currents != 1 {
					t.Fatalf("step %d: %d current keys (%s)", step, currents, states(keys))
				}
				// ttl: the window stays the same until now+ttl and changes then.
				sig := states(keys) + "|" + ids(keys)
				if !changeAt.IsZero() && !afterOutage {
					if now.Before(changeAt) && sig != lastSig {
						t.Fatalf("step %d: window changed %v before the ttl said", step, changeAt.Sub(now))
					}
					// A ttl of a whole rotation_period may be the cap (while keys of
					// longer, older settings are live) rather than a change.
					if now.Equal(changeAt) && sig == lastSig && !capped {
						t.Fatalf("step %d: ttl promised a change at %v that did not happen", step, changeAt)
					}
				}
				ttl := resp.Data["ttl"].(int64)
				if ttl < 1 {
					t.Fatalf("step %d: ttl %d", step, ttl)
				}
				if changeAt.IsZero() || !now.Before(changeAt) || sig != lastSig {
					changeAt = now.Add(time.Duration(ttl) * time.Second)
					capped = time.Duration(ttl)*time.Second >= settings.RotationPeriod
				}
				lastSig = sig
			}
		})
	}
}

// settingsAt is the publish_ahead a key was promised: keys published before a
// settings change keep the lead they were published with.
func settingsAt(p *published, s keyringSettings) time.Duration {
	return min(s.PublishAhead, p.notBefore.Sub(p.firstSeen))
}

func readSettings(resp *logical.Response) keyringSettings {
	return keyringSettings{
		RotationPeriod: time.Duration(resp.Data["rotation_period"].(int64)) * time.Second,
		Retain:         time.Duration(resp.Data["retain"].(int64)) * time.Second,
		PublishAhead:   time.Duration(resp.Data["publish_ahead"].(int64)) * time.Second,
	}
}

func rotateVia(t *testing.T, tb *testBackend, mode string, purge bool) windowKeyOut {
	t.Helper()
	resp := tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": mode, "purge_previous": purge})
	nb, _ := time.Parse(time.RFC3339, resp.Data["rotated_key_not_before"].(string))
	id := resp.Data["rotated_key_id"].(string)
	for _, k := range decodeKeys(t, resp) {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("rotate response does not list the new key %s (activating %v)", id, nb)
	return windowKeyOut{}
}

// assertNoExpiredMaterial checks storage right after a tick: no key past its
// not_after is left, so its material is gone.
func assertNoExpiredMaterial(t *testing.T, tb *testBackend, now time.Time) {
	t.Helper()
	kr, err := loadKeyring(context.Background(), tb.storage, "web")
	if err != nil || kr == nil {
		t.Fatalf("loading keyring: %v", err)
	}
	for _, k := range kr.Keys {
		if !now.Before(k.NotAfter) {
			t.Fatalf("key %s is past not_after but its material is still in storage after a tick", k.ID())
		}
	}
}
