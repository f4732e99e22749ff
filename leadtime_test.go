package ticketkeys

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// worstReaderReturn is when a reader that read at r and got ttl holds its
// next window at the latest: Vault Agent 1s after the ttl, the Go client
// min(max(ttl/20, 100ms), 5s) after it, and the read itself.
func worstReaderReturn(r time.Time, ttl time.Duration) time.Time {
	goDelay := min(max(ttl/20, goClientMinDelay), goClientMaxDelay)
	return r.Add(ttl + max(agentReadDelay, goDelay) + readAllowance)
}

// TestScheduledRotationWaitsForEveryTTL: a scheduled rotation right after a
// read (1s, 300ms, or within the same second) must activate its key only
// after the reader following that read's ttl holds it, at any
// rotation_period and publish_ahead, with the largest jitter and any
// max_read_ttl. The review measured 1h / publish_ahead=2m: activation 120s
// after a read whose ttl said come back after 270-296s.
func TestScheduledRotationWaitsForEveryTTL(t *testing.T) {
	cases := []struct{ period, ahead, maxTTL string }{
		{"1h", "2m", "5m"}, {"1h", "1h", "5m"}, {"1h", "1h", "24h"}, {"24h", "10m", "1h"},
		{"5m", "30s", "5m"}, {"1m", "1m", "5m"}, {"10s", "10s", "5m"}, {"30s", "10s", "5s"},
	}
	for _, c := range cases {
		for _, gap := range []time.Duration{time.Second, 300 * time.Millisecond, 0} {
			for _, offset := range []time.Duration{0, 250 * time.Millisecond, 17*time.Minute + 600*time.Millisecond} {
				name := fmt.Sprintf("%s/%s/max_read_ttl=%s/rotate+%s/read+%s", c.period, c.ahead, c.maxTTL, gap, offset)
				tb := getBackend(t)
				tb.jitter = func(n int64) int64 { return n - 1 }
				tb.mustRequest(t, logical.UpdateOperation, "config", map[string]interface{}{"max_read_ttl": c.maxTTL})
				tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": c.period, "publish_ahead": c.ahead, "retain": c.period})
				tb.clock.Advance(offset)
				tb.tick(t)
				read := tb.clock.Now()
				resp, _ := readWindow(t, tb, "web", "go")
				ttl := time.Duration(resp.Data["ttl"].(int64)) * time.Second
				tb.clock.Advance(gap)
				rot := tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "scheduled"})
				nb, _ := time.Parse(time.RFC3339, rot.Data["rotated_key_not_before"].(string))
				if back := worstReaderReturn(read, ttl); back.After(nb) {
					t.Errorf("%s: the new key activates %s after the read, whose ttl %s brings the reader back with it only %s after the read",
						name, nb.Sub(read), ttl, back.Sub(read))
				}
			}
		}
	}
}

// TestLowerMaxKeyLifetimeKeepsTheScheduleWhole: lowering max_key_lifetime
// below the span of a key that still encrypts (published under a longer
// rotation_period) must neither leave a gap for a repair key to fill nor let
// any key outlive the cap: every key within the cap, every key that
// activates after the change published ahead, the schedule gap-free. A cap
// the keys cannot meet is refused, naming the keyring.
func TestLowerMaxKeyLifetimeKeepsTheScheduleWhole(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "24h", "retain": "0s"})
	tb.clock.Advance(time.Hour)
	tb.tick(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "30m", "retain": "30m"})
	before, _ := loadKeyring(context.Background(), tb.storage, "web")
	changed := tb.clock.Now()
	resp, err := tb.request(t, logical.UpdateOperation, "config", map[string]interface{}{"max_key_lifetime": "1h"})
	refused := errorText(resp, err)
	if refused != "" && (!strings.Contains(refused, `"web"`) || !strings.Contains(refused, "max_key_lifetime")) {
		t.Fatalf("refusal does not name the keyring and the field: %s", refused)
	}
	cfg, _ := loadConfig(context.Background(), tb.storage)
	old := map[string]bool{}
	for _, k := range before.Keys {
		old[k.ID()] = true
	}
	for step := range 30 * 24 { // 30 days of minute ticks, checked every 2 minutes
		tb.clock.Advance(time.Minute)
		tb.tick(t)
		if step%2 == 1 {
			continue
		}
		now := tb.clock.Now()
		readWindow(t, tb, "web", "go")
		kr, _ := loadKeyring(context.Background(), tb.storage, "web")
		for i, k := range kr.Keys {
			if life := k.NotAfter.Sub(k.NotBefore); life > cfg.MaxKeyLifetime {
				t.Fatalf("at +%s key %s decrypts %s after it activates; max_key_lifetime is %s", now.Sub(changed), k.ID()[:8], life, cfg.MaxKeyLifetime)
			}
			if !old[k.ID()] && k.NotBefore.After(changed) && k.NotBefore.Sub(k.PublishAt) < kr.Settings.PublishAhead {
				t.Fatalf("at +%s key %s activates %s after it was published; publish_ahead is %s", now.Sub(changed), k.ID()[:8], k.NotBefore.Sub(k.PublishAt), kr.Settings.PublishAhead)
			}
			if i > 0 && kr.Keys[i-1].EncryptUntil.After(now) && !kr.Keys[i-1].EncryptUntil.Equal(k.NotBefore) {
				t.Fatalf("at +%s the schedule has a gap or overlap: key %s encrypts until %s, key %s from %s", now.Sub(changed),
					kr.Keys[i-1].ID()[:8], kr.Keys[i-1].EncryptUntil.Format(time.RFC3339), k.ID()[:8], k.NotBefore.Format(time.RFC3339))
			}
		}
	}
	t.Logf("config write: %q", refused)
}
