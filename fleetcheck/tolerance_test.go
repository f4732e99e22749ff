package fleetcheck

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	sched "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
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

// TestNextGraceCoversAgentJitter: a healthy Agent-fed node fetches a key
// published at an activation as late as it switches (its tolerance lag).
// Where that lag is more than half of publish_ahead (30s of jitter at
// publish_ahead 60s: a test build of the engine, Config.TestJitterScale, or
// a short publish_ahead), the grace before a missing next key fails is the
// lag, still a quarter of publish_ahead before the activation; it was half of
// publish_ahead, and every such node was reported not ready at every
// publication. Elsewhere the default is unchanged.
func TestNextGraceCoversAgentJitter(t *testing.T) {
	cfg := Config{Format: FormatHAProxy, Grace: DefaultGrace, ReloadAllowance: DefaultReloadAllowance, TestJitterScale: 10}
	c := &Checker{cfg: cfg}
	agentNode, localNode := Node{Kind: KindAgent}, Node{Kind: KindLocal}
	lag := c.switchLag(agentNode, time.Minute, time.Minute)
	if want := DefaultGrace + time.Second + 30*time.Second + time.Second + time.Second + DefaultReloadAllowance; lag != want {
		t.Fatalf("Agent-fed tolerance at 1m/1m with the jitter scaled 10 times: %s; want %s (30s of jitter, the production rule at 10m/10m)", lag, want)
	}
	if got := (&Checker{cfg: Config{Grace: DefaultGrace, ReloadAllowance: DefaultReloadAllowance}}).switchLag(agentNode, time.Minute, time.Minute); got != 13*time.Second {
		t.Errorf("Agent-fed tolerance at 1m/1m, shipped engine: %s; want 13s (3s of jitter)", got)
	}
	if got := c.switchLag(localNode, time.Minute, time.Minute); got != DefaultGrace {
		t.Errorf("local tolerance with the jitter scaled: %s; want the grace %s (local nodes do not wait for a ttl)", got, DefaultGrace)
	}
	w := &Window{RotationPeriod: time.Minute, PublishAhead: time.Minute}
	// Readiness: every kind fetches the next key following ttl: 30s of jitter, the reader delay
	// (3.2s at 1m/1m), the rounding and the read, plus the grace; Agent-fed nodes no less than their
	// switch tolerance.
	ready := DefaultGrace + time.Second + 30*time.Second + 3200*time.Millisecond + time.Second
	for _, n := range []Node{agentNode, localNode} {
		if got := c.nextGrace(w, n); got != ready {
			t.Errorf("next grace of a %s node at publish_ahead 1m with 30s of jitter: %s; want its readiness lag %s", n.Kind, got, ready)
		}
	}
	// Production settings, a shipped engine: 10m period, publish_ahead 30s (3s of jitter). A Go node
	// reads up to 1s + 3s + 5s (its delay) + 1s after the publication: the grace is that plus the
	// skew, 15s, where it was a quarter of publish_ahead (7.5s) and healthy Go nodes were failed.
	prod := &Checker{cfg: Config{Grace: DefaultGrace, ReloadAllowance: DefaultReloadAllowance}}
	if got := prod.nextGrace(&Window{RotationPeriod: 10 * time.Minute, PublishAhead: 30 * time.Second}, localNode); got != 15*time.Second {
		t.Errorf("next grace of a Go node at 10m / publish_ahead 30s: %s; want 15s (grace + reader lag)", got)
	}
	for _, tc := range []struct {
		publishAhead, lag, want time.Duration
	}{
		{10 * time.Second, 10 * time.Second, 5 * time.Second},  // e2e periods: publish_ahead - Grace, as before
		{time.Minute, 13 * time.Second, 15 * time.Second},      // a quarter of publish_ahead, as before
		{5 * time.Minute, 40 * time.Second, 75 * time.Second},  // production: a quarter, as before
		{time.Hour, 40 * time.Second, 2 * time.Minute},         // the 2-minute cap, as before
		{time.Minute, 50 * time.Second, 45 * time.Second},      // never later than a quarter before the activation
		{40 * time.Second, 20 * time.Second, 20 * time.Second}, // the lag: half of publish_ahead is no cap
	} {
		if got := nextGrace(Config{Grace: DefaultGrace}, tc.publishAhead, tc.lag); got != tc.want {
			t.Errorf("nextGrace(publish_ahead %s, lag %s) = %s; want %s", tc.publishAhead, tc.lag, got, tc.want)
		}
	}
	if _, err := New(Config{Format: FormatGo, Read: func(context.Context) (*Window, error) { return nil, nil }, Nodes: []Node{{Addr: "127.0.0.1:1"}}, TestJitterScale: -1}); err == nil || !strings.Contains(err.Error(), "test_jitter_scale") {
		t.Errorf("New with TestJitterScale -1: %v; want refused, naming test_jitter_scale", err)
	}
}

// TestAgentJitterIsTheEngineRule: the check's jitter is the engine's
// (schedule.TTLJitterMax), for the e2e periods up to a day.
func TestAgentJitterIsTheEngineRule(t *testing.T) {
	for _, rp := range []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 24 * time.Hour} {
		for _, pa := range []time.Duration{10 * time.Second, time.Minute, 5 * time.Minute, time.Hour} {
			want := min(rp/20, pa/10, 30*time.Second).Truncate(time.Second)
			if got := AgentJitter(rp, pa); got != want || got != sched.TTLJitterMax(rp, pa) {
				t.Errorf("AgentJitter(%s, %s) = %s; want %s = schedule.TTLJitterMax %s", rp, pa, got, want, sched.TTLJitterMax(rp, pa))
			}
		}
	}
}
