package fleetcheck

import (
	"testing"
	"time"
)

// TestEmergencyRotationPendingWhileReadersReread: after rotate mode=now
// purge_previous=true (every key removed, a new current key encrypting at
// once and a new next key, neither published ahead) a fleet following ttl
// is mixed until every node's next read, within max_read_ttl + its read
// delay (docs/api.md, emergency propagation): node 0 has read, node 1 not
// yet. Within that tolerance nothing of node 1 is a failure: its fresh
// ticket under the purged key, its missing next key, and the tickets the
// two nodes cannot exchange are pending (Matrix.Pending), and the round is
// OK; each was a failure before (a healthy fleet reported red at every
// purge). Past the tolerance each is a failure again.
func TestEmergencyRotationPendingWhileReadersReread(t *testing.T) {
	s, servers, cert := goFleet(t, 2)
	c := newChecker(t, s, cert, addrs(servers), nil)
	if r := check(t, c); !r.OK {
		t.Fatalf("before the purge:\n%s", table(t, r))
	}
	oldCur := s.keys[1]

	// The emergency rotation, as the engine makes it.
	now := time.Now().Truncate(time.Second)
	cur := newKey(t, 80, now, now.Add(3*time.Hour))
	next := newKey(t, 80, now.Add(time.Hour), now.Add(4*time.Hour))
	cur.PublishAt, next.PublishAt = now, now
	s.mu.Lock()
	s.keys = []*Key{cur, next}
	s.mu.Unlock()
	servers[0].set(cur, next)
	r := check(t, c)
	n0, n1 := nodeReport(t, r, servers[0].addr), nodeReport(t, r, servers[1].addr)
	if !r.OK || n1.Current != StatusPending || n1.Next != StatusPending || n0.Current != StatusOK || n0.Next != StatusOK || r.Matrix.Pending == 0 || r.Matrix.Failures != 0 {
		t.Fatalf("just after the purge, node 1 not yet re-read: ok %v, node 1 current %s next %s, node 0 current %s next %s, matrix pending %d failures %d; want OK, node 1 pending:\n%s",
			r.OK, n1.Current, n1.Next, n0.Current, n0.Next, r.Matrix.Pending, r.Matrix.Failures, table(t, r))
	}

	// Past the tolerance (max_read_ttl 5m + delays): node 1 still on the purged key fails.
	for _, rk := range c.retired {
		rk.at = time.Now().Add(-6 * time.Minute)
	}
	long := now.Add(-6 * time.Minute)
	cur2 := cur.clone()
	cur2.NotBefore, cur2.PublishAt = long, long
	s.mu.Lock()
	s.keys = []*Key{cur2, next}
	s.mu.Unlock()
	r = check(t, c)
	n1 = nodeReport(t, r, servers[1].addr)
	if r.OK || n1.Current != StatusFail || r.Matrix.Failures == 0 || r.Matrix.Pending != 0 {
		t.Errorf("6 minutes after the purge, node 1 still on purged key %s: ok %v, current %s, matrix failures %d pending %d; want failures:\n%s",
			oldCur.ID, r.OK, n1.Current, r.Matrix.Failures, r.Matrix.Pending, table(t, r))
	}
}

// TestPropagationLagFollowsTheLeadCap: every read's ttl is capped at
// max_read_ttl and at publish_ahead - reader delay - 1s, so a fleet has
// re-read after an emergency rotation within the shorter of the two plus
// the read delay (and the reload, for Agent-fed nodes).
func TestPropagationLagFollowsTheLeadCap(t *testing.T) {
	c := &Checker{cfg: Config{Grace: DefaultGrace, ReloadAllowance: DefaultReloadAllowance, MaxReadTTL: DefaultMaxReadTTL}}
	for _, tc := range []struct {
		kind         string
		rp, pa, want time.Duration
	}{
		{KindLocal, time.Hour, time.Hour, DefaultGrace + DefaultMaxReadTTL + goClientMaxDelay + agentReadTime},
		{KindAgent, time.Hour, time.Hour, DefaultGrace + DefaultMaxReadTTL + agentReadDelay + agentReadTime + DefaultReloadAllowance},
		// 1m/1m: the lead cap is 60s - 3.2s (reader delay) - 1s = 55s, truncated.
		{KindLocal, time.Minute, time.Minute, DefaultGrace + 55*time.Second + goClientMaxDelay + agentReadTime},
		{KindAgent, time.Minute, time.Minute, DefaultGrace + 55*time.Second + agentReadDelay + agentReadTime + DefaultReloadAllowance},
	} {
		w := &Window{RotationPeriod: tc.rp, PublishAhead: tc.pa}
		if got := c.propagationLag(Node{Kind: tc.kind}, w); got != tc.want {
			t.Errorf("%s node at %s/%s: propagation tolerance %s; want %s", tc.kind, tc.rp, tc.pa, got, tc.want)
		}
	}
}
