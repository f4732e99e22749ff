package fleetcheck

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// startHAProxyRing runs a real HAProxy whose tls-ticket-keys file holds
// ring (it encrypts with the penultimate line) and returns its address.
func startHAProxyRing(t *testing.T, cert *testcert.Cert, ring ...*Key) string {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte(haproxyLines(ring...)), 0o600); err != nil {
		t.Fatal(err)
	}
	port := servertest.FreePort(t)
	p := servertest.StartHAProxy(t, fmt.Sprintf(`
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:%d ssl crt %s tls-ticket-keys %s ssl-min-ver TLSv1.2
  http-request return status 200 content-type text/plain string "ok"
`, port, cert.WriteCombinedPEM(dir), keys))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p.WaitListening(t, addr)
	return addr
}

// TestAgentFedNodeSwitchesLate: at 1 h periods an HAProxy node fed by Vault
// Agent switches up to ttl rounding + 30 s jitter + 1 s + the push after an
// activation. 20 s after the activation it still encrypts with the previous
// key: healthy, not off schedule. 60 s after, it is off schedule.
func TestAgentFedNodeSwitchesLate(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	for _, tc := range []struct {
		late time.Duration
		ok   bool
	}{{20 * time.Second, true}, {60 * time.Second, false}} {
		s := newSchedule(t, FormatHAProxy, 80, 4, time.Now().Add(-2*time.Hour-tc.late), time.Hour, 3*time.Hour)
		addr := startHAProxyRing(t, cert, s.keys[0], s.keys[1], s.keys[2]) // before Agent's re-read: encrypts with keys[1]
		r := check(t, newChecker(t, s, cert, []string{addr}, nil))
		n := r.Nodes[0]
		if got := n.Current == StatusOK; got != tc.ok {
			t.Errorf("HAProxy %s after the activation still on the previous key: current %s (%q); want ok=%v:\n%s",
				tc.late, n.Current, n.Versions[0].Current.Detail, tc.ok, table(t, r))
		}
		if tc.ok && !r.OK {
			t.Errorf("%s after the activation: round failed:\n%s", tc.late, table(t, r))
		}
	}
}

// TestToleranceHistories: generated histories at production settings
// (periods 10 min to 6 h, publish_ahead from just above the engine's reader
// lag to one period, 5 s of clock skew). A node that switches as its kind
// does (local: at the instant, within the skew; Agent-fed: after ttl
// rounding, the ttl jitter, Agent's 1 s, the read and the reload) is never
// judged off schedule, and an Agent-fed node later than its tolerance is.
func TestToleranceHistories(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 20))
	c := &Checker{cfg: Config{Format: FormatHAProxy, Grace: DefaultGrace, ReloadAllowance: DefaultReloadAllowance}}
	uniform := func(d time.Duration) time.Duration {
		if d <= 0 {
			return 0
		}
		return time.Duration(rng.Int64N(int64(d)))
	}
	for h := range 2000 {
		period := []time.Duration{10 * time.Minute, time.Hour, 6 * time.Hour}[rng.IntN(3)]
		jitter := AgentJitter(period, period)
		minAhead := agentTTLRounding + jitter + agentReadDelay + agentReadTime + time.Second
		publishAhead := minAhead + uniform(period-minAhead)
		jitter = AgentJitter(period, publishAhead)
		act := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
		prev := &Key{ID: "prev", NotBefore: act.Add(-period), NotAfter: act.Add(12 * time.Hour)}
		cur := &Key{ID: "cur", NotBefore: act, NotAfter: act.Add(13 * time.Hour)}
		next := &Key{ID: "next", NotBefore: act.Add(period), NotAfter: act.Add(14 * time.Hour)}
		w := &Window{RotationPeriod: period, PublishAhead: publishAhead, Keys: []*Key{prev, cur, next}}
		skew := uniform(2*c.cfg.Grace) - c.cfg.Grace

		kind := Kinds[rng.IntN(len(Kinds))]
		switchAt := act.Add(skew)
		if kind == KindAgent {
			switchAt = switchAt.Add(uniform(agentTTLRounding) + time.Duration(rng.Int64N(int64(jitter/time.Second)+1))*time.Second + agentReadDelay + uniform(agentReadTime) + uniform(c.cfg.ReloadAllowance))
		}
		lag := c.switchLag(Node{Kind: kind}, period, publishAhead)
		at := act.Add(uniform(4*time.Minute) - 2*time.Minute)
		key := "prev"
		if !at.Before(switchAt) {
			key = "cur"
		}
		if got := onSchedule(w, key, at, lag, c.cfg.Grace, "?"); got.Status != StatusOK {
			t.Fatalf("history %d: %s node (period %s, publish_ahead %s, switched %s after the activation) on key %s at %s after it: %s %q",
				h, kind, period, publishAhead, switchAt.Sub(act), key, at.Sub(act), got.Status, got.Detail)
		}

		// A late Agent-fed node: it switches beyond its tolerance; between the two it is off schedule.
		lateAt := act.Add(lag + time.Second + uniform(time.Minute))
		at = act.Add(lag + uniform(lateAt.Sub(act)-lag))
		if got := onSchedule(w, "prev", at, lag, c.cfg.Grace, "previous"); got.Status != StatusFail {
			t.Fatalf("history %d: %s node still on the previous key %s after the activation (tolerance %s): %s; want fail", h, kind, at.Sub(act), lag, got.Status)
		}
	}
}
