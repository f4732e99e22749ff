package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// legacyTicket encrypts ss the way a node of the previous release did (and
// a server fed by TicketKeys does): crypto/tls's own ticket under key n,
// without a key name in front.
func legacyTicket(t *testing.T, ss *tls.SessionState, n int64) []byte {
	t.Helper()
	var m [goKeySize]byte
	copy(m[:], keyMaterial(n))
	ticket, err := keyConfig(m).EncryptTicket(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatal(err)
	}
	return ticket
}

// keyNumberAt is the number of the fake engine's key that encrypts at now.
func keyNumberAt(now time.Time) int64 { return int64(now.Sub(t0) / period) }

// legacyWeek is the period during which legacy tickets used to be accepted
// after each NewSource.
const legacyWeek = 168 * time.Hour

// TestLegacyTicketsNotReopenedByRestart (issue 18 item 6): a rolling upgrade
// starts at +10s; a node restarted a minute before a week has passed must
// not accept tickets without a key name more than a week after the upgrade
// started: a fleet that deploys weekly must leave legacy mode.
//
// Either the fleet's configuration leaves legacy tickets off (the default),
// or it names one deadline, here a week after the upgrade started: the first
// node accepts them, the restarted one too until the deadline, and neither
// after it.
func TestLegacyTicketsNotReopenedByRestart(t *testing.T) {
	start := 10 * time.Second
	for _, tc := range []struct {
		name   string
		opts   []Option
		before bool // legacy tickets resume before the deadline
	}{
		{"default", nil, false},
		{"deadline", []Option{WithLegacyTicketsUntil(t0.Add(start + legacyWeek))}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := func() *tls.SessionState {
				_, _, a, _ := newFakeSource(t, start, tc.opts...)
				cert := testcert.New(t, testcert.ECDSAP256)
				ss := serverSession(t, cert, hookedServer(t, cert, a), 0)
				if got, _ := a.unwrapSession(legacyTicket(t, ss, 0), tls.ConnectionState{}); (got != nil) != tc.before {
					t.Fatalf("first node: a ticket without a key name resumed=%v, want %v", got != nil, tc.before)
				}
				_ = a.Close()
				return ss
			}()
			_, fc, b, _ := newFakeSource(t, start+legacyWeek-time.Minute, tc.opts...) // the restart
			if got, _ := b.unwrapSession(legacyTicket(t, first, keyNumberAt(fc.Now())), tls.ConnectionState{}); (got != nil) != tc.before {
				t.Fatalf("restarted node before the deadline: a ticket without a key name resumed=%v, want %v", got != nil, tc.before)
			}
			fc.step(t, time.Minute) // a week after the upgrade started
			fc.step(t, time.Minute)
			if got, _ := b.unwrapSession(legacyTicket(t, first, keyNumberAt(fc.Now())), tls.ConnectionState{}); got != nil {
				t.Fatalf("a ticket without a key name resumed %s after the upgrade started, on a node restarted at %s",
					fc.Now().Sub(t0.Add(start)), legacyWeek-time.Minute)
			}
			if st := b.Status(); !st.LegacyUntil.IsZero() {
				t.Fatalf("legacy until %v after the deadline, want zero", st.LegacyUntil)
			}
		})
	}
}

// TestLegacyTicketsUntilRefusesFarDeadlines: a deadline more than a week
// ahead (the longest key lifetime) is refused by NewSource, naming the
// option, the rule and the value, so a forgotten option cannot keep legacy
// tickets open for ever; a deadline in the past just means off.
func TestLegacyTicketsUntilRefusesFarDeadlines(t *testing.T) {
	fc := newFakeClock(t0)
	fv := newFakeVault(t, fc.Now, t0, period, retain)
	far := t0.Add(legacyWeek + time.Second)
	_, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web", withClock(fc), WithLegacyTicketsUntil(far))
	if err == nil || !strings.Contains(err.Error(), "WithLegacyTicketsUntil: must be at most 168h0m0s after now") || !strings.Contains(err.Error(), far.Format(time.RFC3339)) {
		t.Fatalf("a deadline a week and a second ahead: got %v, want an error naming the option, the rule and the value", err)
	}
	src, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web", withClock(fc), WithLegacyTicketsUntil(t0.Add(-time.Hour)))
	if err != nil {
		t.Fatalf("a deadline in the past: %v", err)
	}
	defer src.Close()
	if st := src.Status(); !st.LegacyUntil.IsZero() {
		t.Fatalf("a deadline in the past: legacy until %v, want zero (off)", st.LegacyUntil)
	}
}

// TestForgedTicketCostIsCapped (issue 18 item 6): against a 256-key window,
// a forged ticket naming no key (small, or 13 KB) costs at most a few
// decryption attempts however many keys the window holds, and one naming a
// key costs exactly one. Counted through the Source's attempt counter.
//
// A genuine ticket without a key name made under one of the keys the legacy
// path tries resumes; one made under an older key does not (the cap's price).
func TestForgedTicketCostIsCapped(t *testing.T) {
	now := t0.Add(300*period + 10*time.Second)
	_, _, src, _ := newFakeSourceWith(t, now.Sub(t0), func(fv *fakeVault) { fv.retain = 254 * period },
		WithLegacyTicketsUntil(now.Add(time.Hour)))
	if n := len(src.Window().Keys); n != 256 {
		t.Fatalf("setup: window of %d keys, want 256", n)
	}
	cost := func(ticket []byte) uint64 {
		before := src.decryptAttempts.Load()
		if ss, _ := src.unwrapSession(ticket, tls.ConnectionState{}); ss != nil {
			t.Fatal("a forged ticket resumed")
		}
		return src.decryptAttempts.Load() - before
	}
	for _, size := range []int{200, 13 << 10} {
		forged := make([]byte, size)
		if _, err := rand.Read(forged); err != nil {
			t.Fatal(err)
		}
		if got := cost(forged); got > LegacyTicketKeys {
			t.Errorf("a forged %d-byte ticket naming no key cost %d decryption attempts against 256 keys, want at most %d", size, got, LegacyTicketKeys)
		}
		copy(forged, mustName(t, keyID(300-100)))
		if got := cost(forged); got != 1 {
			t.Errorf("a forged %d-byte ticket naming a key cost %d decryption attempts, want 1", size, got)
		}
	}

	cert := testcert.New(t, testcert.ECDSAP256)
	ss := serverSession(t, cert, hookedServer(t, cert, src), 300)
	// Tried: the current key 300, the next key 301, previous keys 299, 298.
	for n, want := range map[int64]bool{300: true, 301: true, 299: true, 298: true, 297: false, 100: false, 302: false} {
		before := src.decryptAttempts.Load()
		got, _ := src.unwrapSession(legacyTicket(t, ss, n), tls.ConnectionState{})
		if (got != nil) != want {
			t.Errorf("a genuine ticket without a key name under key %d resumed=%v, want %v", n, got != nil, want)
		}
		if cost := src.decryptAttempts.Load() - before; cost > LegacyTicketKeys {
			t.Errorf("a ticket without a key name under key %d cost %d attempts, want at most %d", n, cost, LegacyTicketKeys)
		}
	}
	if st := src.Status(); st.Tickets.Legacy != 4 {
		t.Errorf("legacy hits %d, want 4", st.Tickets.Legacy)
	}
}
