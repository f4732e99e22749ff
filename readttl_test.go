package ticketkeys

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestMaxReadTTLValidation(t *testing.T) {
	tb := getBackend(t)
	if got := tb.mustRequest(t, logical.ReadOperation, "config", nil).Data["max_read_ttl"]; got != int64(300) {
		t.Fatalf("default max_read_ttl = %v, want 300 (5m)", got)
	}
	for _, tt := range []struct {
		value  interface{}
		status int
		frag   []string
	}{
		{"4s", 400, []string{"max_read_ttl", "between 5s and 24h", "got 4s"}},
		{"25h", 400, []string{"max_read_ttl", "between 5s and 24h", "got 25h"}},
		{"later", 400, []string{"max_read_ttl", "later"}},
		{"1m", 200, nil},
	} {
		resp, err := tb.request(t, logical.UpdateOperation, "config", map[string]interface{}{"max_read_ttl": tt.value})
		assertStatus(t, resp, err, tt.status, tt.frag...)
	}
	resp := tb.mustRequest(t, logical.ReadOperation, "config", nil)
	if resp.Data["max_read_ttl"] != int64(60) || resp.Data["max_key_lifetime"] != int64(7*24*3600) {
		t.Fatalf("config after setting max_read_ttl=1m: %v", resp.Data)
	}
}

// TestEmergencyRotationReachesReadersWithinMaxReadTTL: after rotate mode=now
// purge_previous=true, every reader following ttl (Agents and Go clients at
// different phases, the largest jitter) has read a window without the purged
// keys within max_read_ttl plus its own delay and the read, even with an
// hourly rotation_period.
func TestEmergencyRotationReachesReadersWithinMaxReadTTL(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config map[string]interface{}
		cap    time.Duration
	}{
		{"default 5m", nil, 5 * time.Minute},
		{"1m", map[string]interface{}{"max_read_ttl": "1m"}, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, jitter := range []func(int64) int64{func(n int64) int64 { return n - 1 }, func(int64) int64 { return 0 }} {
				tb := getBackend(t)
				tb.jitter = jitter
				if tc.config != nil {
					tb.mustRequest(t, logical.UpdateOperation, "config", tc.config)
				}
				tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "retain": "2h"})
				start := tb.clock.Now()
				readers := []*simReader{
					{name: "agent-a", next: start.Add(300 * time.Millisecond)},
					{name: "agent-b", next: start.Add(17*time.Minute + 770*time.Millisecond)},
					{name: "go-a", next: start.Add(100 * time.Millisecond)},
					{name: "go-b", next: start.Add(41*time.Minute + 550*time.Millisecond)},
				}
				rotateAt := start.Add(2*time.Hour + 23*time.Minute + 7*time.Second)
				var purgedAt time.Time
				purged := map[string]bool{}
				clean := map[string]time.Time{} // reader -> when it first held a window without purged keys
				nextTick := start.Add(time.Minute)
				for end := rotateAt.Add(2 * time.Hour); ; {
					now, who := nextTick, (*simReader)(nil)
					for _, r := range readers {
						if r.next.Before(now) {
							now, who = r.next, r
						}
					}
					rotating := purgedAt.IsZero() && !rotateAt.After(now)
					if rotating {
						now, who = rotateAt, nil
					}
					if now.After(end) {
						break
					}
					tb.clock.Set(now)
					switch {
					case rotating:
						_, before := readWindow(t, tb, "web", "nginx")
						tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now", "purge_previous": true})
						for _, k := range before {
							purged[k.ID] = true
						}
						purgedAt = now
					case who == nil:
						tb.tick(t)
						nextTick = nextTick.Add(time.Minute)
					default:
						resp, keys := readWindow(t, tb, "web", "go")
						ttl := time.Duration(resp.Data["ttl"].(int64)) * time.Second
						if ttl > tc.cap {
							t.Fatalf("ttl %s over max_read_ttl %s", ttl, tc.cap)
						}
						who.next = now.Add(ttl + who.delay(ttl))
						if purgedAt.IsZero() || !clean[who.name].IsZero() {
							continue
						}
						stale := false
						for _, k := range keys {
							stale = stale || purged[k.ID]
						}
						if stale {
							t.Fatalf("%s: a read after the purge returned a purged key", who.name)
						}
						clean[who.name] = now.Add(readAllowance)
					}
				}
				bound := tc.cap + goClientMaxDelay + readAllowance
				for _, r := range readers {
					took := clean[r.name].Sub(purgedAt)
					if clean[r.name].IsZero() || took > bound {
						t.Fatalf("%s dropped the purged keys %s after the rotation; the bound is max_read_ttl + 5s + 1s = %s", r.name, took, bound)
					}
					t.Logf("%s: purged keys dropped after %s", r.name, took)
				}
			}
		})
	}
}
