package ticketkeys

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// simReader re-reads a keyring the way a real reader follows ttl: Vault Agent
// 1s after it, the Go client up to min(max(ttl/20, 100ms), 5s) after it (here
// always the most), and each read takes readAllowance to arrive.
type simReader struct {
	name string
	next time.Time
	held map[string]time.Time // key id -> when the reader held it
}

func (r *simReader) delay(ttl time.Duration) time.Duration {
	if strings.HasPrefix(r.name, "agent") {
		return agentReadDelay
	}
	return schedule.GoClientDelayMax(ttl)
}

// TestEveryAcceptedSettingKeepsTheWindowPromise sweeps rotation_period and
// publish_ahead. Every setting the engine accepts is run with the largest
// ttl jitter, minute ticks, and two Agents and two Go clients at different
// phases, each re-reading when its ttl runs out: every reader must hold every
// key before it activates. Settings that cannot keep the promise must be
// refused, naming publish_ahead.
func TestEveryAcceptedSettingKeepsTheWindowPromise(t *testing.T) {
	periods := []time.Duration{5 * time.Second, 8 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 24 * time.Hour}
	aheads := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second, 5 * time.Second, 7 * time.Second, 8 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, time.Hour, 24 * time.Hour}
	accepted, refused := 0, 0
	for _, period := range periods {
		for _, ahead := range aheads {
			if ahead > period {
				continue
			}
			name := fmt.Sprintf("period=%s,ahead=%s", fmtDuration(period), fmtDuration(ahead))
			tb := getBackend(t)
			tb.jitter = func(n int64) int64 { return n - 1 } // the largest jitter
			resp, err := tb.request(t, logical.UpdateOperation, "keys/web", map[string]interface{}{
				"rotation_period": int(period / time.Second), "publish_ahead": int(ahead / time.Second), "retain": int(period / time.Second),
			})
			if msg := errorText(resp, err); msg != "" {
				assertStatus(t, resp, err, 400, "publish_ahead must be more than", "got "+fmtDuration(ahead))
				refused++
				continue
			}
			accepted++
			if v := simulateReaders(t, tb, period); v != "" {
				t.Errorf("%s: %s", name, v)
			}
		}
	}
	if accepted < 40 || refused < 20 {
		t.Fatalf("%d settings accepted, %d refused: the sweep does not cover both sides", accepted, refused)
	}
	t.Logf("%d settings accepted and kept the promise, %d refused", accepted, refused)
}

// simulateReaders runs readers against tb for at least four rotations and
// returns the first broken promise, or "".
func simulateReaders(t *testing.T, tb *testBackend, period time.Duration) string {
	t.Helper()
	start := tb.clock.Now()
	end := start.Add(max(4*period, 15*time.Minute))
	readers := []*simReader{
		{name: "agent-a", next: start.Add(300 * time.Millisecond)},
		{name: "agent-b", next: start.Add(770 * time.Millisecond)},
		{name: "go-a", next: start.Add(100 * time.Millisecond)},
		{name: "go-b", next: start.Add(550 * time.Millisecond)},
	}
	notBefore := map[string]time.Time{}
	nextTick := start.Add(time.Minute)
	for {
		now := nextTick
		var who *simReader
		for _, r := range readers {
			if r.next.Before(now) {
				now, who = r.next, r
			}
		}
		if now.After(end) {
			break
		}
		tb.clock.Set(now)
		if who == nil {
			tb.tick(t)
			nextTick = nextTick.Add(time.Minute)
			continue
		}
		resp, keys := readWindow(t, tb, "web", "go")
		if who.held == nil {
			who.held = map[string]time.Time{}
		}
		for _, k := range keys {
			notBefore[k.ID] = k.NotBefore
			if _, ok := who.held[k.ID]; !ok {
				who.held[k.ID] = now.Add(readAllowance)
			}
		}
		ttl := time.Duration(resp.Data["ttl"].(int64)) * time.Second
		who.next = now.Add(ttl + who.delay(ttl))
	}
	for id, nb := range notBefore {
		if !nb.After(start) || nb.After(end.Add(-period)) {
			continue // the first key activates at creation; the last may not be due yet
		}
		for _, r := range readers {
			held, ok := r.held[id]
			if !ok {
				return fmt.Sprintf("%s never held key %s (activating %s)", r.name, id[:8], nb.Sub(start))
			}
			if held.After(nb) {
				return fmt.Sprintf("%s held key %s only %s after it activated (at %s)", r.name, id[:8], held.Sub(nb), nb.Sub(start))
			}
		}
	}
	return ""
}
