package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// TestWallClockStepForwardAndBack (issue 18 item 11): a node's wall clock
// steps an hour forward (past everything the window covers, so the node is
// exhausted, rightly: its clock is ahead of Vault's) and back a moment later,
// while Vault's clock runs on. The node must be back on the shared keys as
// soon as its clock is: encrypting with the key Vault calls current at once,
// activating the next one at its time, and reading Vault again at the times
// the window asks for (not an hour late).
func TestWallClockStepForwardAndBack(t *testing.T) {
	for _, stepAt := range []time.Duration{10 * time.Second, 45 * time.Second} {
		t.Run("at+"+stepAt.String(), func(t *testing.T) {
			fc := newFakeClock(t0.Add(stepAt))
			// Vault's clock follows the node's monotonic time: it never steps.
			vaultStart := t0.Add(stepAt)
			fv := newFakeVault(t, func() time.Time {
				fc.mu.Lock()
				defer fc.mu.Unlock()
				return vaultStart.Add(fc.elapsed)
			}, t0, period, retain)
			src, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web",
				withClock(fc), withJitter(noJitter), WithLogger(testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = src.Close() })
			cert := testcert.New(t, testcert.ECDSAP256)
			addr := hookedServer(t, cert, src)
			waitParked(t, fc, 0)

			if st := src.Status(); st.Exhausted || st.CurrentID != keyID(0) {
				t.Fatalf("before the step: exhausted=%v current_is_key0=%v", st.Exhausted, st.CurrentID == keyID(0))
			}
			fc.jump(time.Hour)
			c := newCache()
			get(t, cert, addr, c, tls.VersionTLS13) // a handshake at the stepped time
			if st := src.Status(); !st.Exhausted {
				t.Fatal("an hour ahead of Vault the node is not exhausted: the test does not reach the case it is about")
			}
			// A minute at the stepped time: the loop reads Vault there too.
			reads := fv.requests.Load()
			for range 60 {
				fc.step(t, time.Second)
			}
			if fv.requests.Load() == reads {
				t.Fatal("no read while the clock was ahead: the test does not reach the case it is about")
			}
			fc.jump(-time.Hour)

			// From now on the node is on Vault's time again: every second for
			// three periods, the key it encrypts with is the one the schedule
			// says, which needs reads at the window's ttl.
			end := fc.Now().Add(3 * period)
			for first := true; fc.Now().Before(end); first = false {
				want := int64(fc.Now().Sub(t0) / period)
				if st := src.Status(); st.Exhausted || st.CurrentID != keyID(want) {
					t.Fatalf("+%s, %s after the clock stepped back: exhausted=%v current_is_key%d=%v",
						fc.Now().Sub(t0), fc.Now().Sub(end.Add(-3*period)), st.Exhausted, want, st.CurrentID == keyID(want))
				}
				if first {
					c = newCache()
					get(t, cert, addr, c, tls.VersionTLS13)
					ticket, _ := cachedTicket(t, c)
					if id, _ := TicketKeyID(ticket); id != keyID(want) {
						t.Fatalf("after the clock stepped back the ticket does not name the shared key %d", want)
					}
				}
				fc.step(t, time.Second)
			}
		})
	}
}

// TestWallClockStepsGenerated: random histories at production scale (1h
// periods, 12h retain, reads at the engine's ttl) in which the node's wall
// clock steps forward or back by up to 3h at random and comes back to
// Vault's time later, while monotonic time runs on. Invariant: whenever the
// node's clock agrees with Vault's again, the node encrypts with the key the
// schedule names, at once, and keeps doing so for as long as it agrees. A
// failure prints the seed and the history so far.
func TestWallClockStepsGenerated(t *testing.T) {
	const hour = time.Hour
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := mrand.New(mrand.NewPCG(seed, 18))
			start := t0.Add(time.Duration(rng.Int64N(int64(hour))))
			fc := newFakeClock(start)
			fv := newFakeVault(t, func() time.Time {
				fc.mu.Lock()
				defer fc.mu.Unlock()
				return start.Add(fc.elapsed)
			}, t0, hour, 12*hour)
			src, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web",
				withClock(fc), WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = src.Close() })
			waitParked(t, fc, 0)

			var history []string
			offset := time.Duration(0) // node wall clock minus Vault's
			for op := 0; op < 150; op++ {
				switch r := rng.IntN(10); {
				case r < 2 && offset == 0: // step away from Vault's time
					offset = time.Duration(rng.Int64N(int64(6*hour))) - 3*hour
					offset = offset.Truncate(time.Second)
					if offset > -2*time.Second && offset < 2*time.Second {
						offset = 2 * time.Second
					}
					fc.jump(offset)
					history = append(history, fmt.Sprintf("jump %s", offset))
				case r < 4 && offset != 0: // step back to Vault's time
					fc.jump(-offset)
					history = append(history, fmt.Sprintf("jump %s (back in sync)", -offset))
					offset = 0
				default: // time passes, with a handshake-like key lookup
					d := time.Duration(1+rng.Int64N(20*60)) * time.Second
					history = append(history, fmt.Sprintf("run %s", d))
					for d > 0 {
						s := min(d, time.Minute)
						fc.step(t, s)
						d -= s
					}
				}
				settle(t, fc, src)
				if offset != 0 {
					src.Status() // the node's handshakes see the stepped clock
					continue
				}
				want := keyID(int64(fc.Now().Sub(t0) / hour))
				if st := src.Status(); st.Exhausted || st.CurrentID != want {
					w := src.Window()
					t.Logf("window: ttl %s, %d keys, last encrypts until +%s; last refresh +%s, last error %v; next refresh +%s",
						w.TTL, len(w.Keys), w.encryptEnd(len(w.Keys)-1).Sub(t0), st.LastRefresh.Sub(t0), st.LastError, src.nextRefresh().Sub(t0))
					t.Fatalf("seed %d, after op %d (%s) at +%s, in sync with Vault: exhausted=%v, on the scheduled key=%v\nhistory: %s",
						seed, op, history[len(history)-1], fc.Now().Sub(t0), st.Exhausted, st.CurrentID == want, strings.Join(history, "; "))
				}
			}
		})
	}
}

// settle waits (at most 10s) until the Source's loop has taken any kick and
// is parked on a timer, so that a history's next operation does not outrun
// it: in production time does not jump ahead while the loop is runnable.
func settle(t *testing.T, fc *fakeClock, src *Source) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fc.mu.Lock()
		parked := false
		for w := range fc.waiters {
			parked = parked || w.fn == nil // an AfterFunc (a read's cut) is not the loop's timer
		}
		fc.mu.Unlock()
		if parked && len(src.kick) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Source's loop is not parked on a timer after 10s (kick pending: %v)", len(src.kick) > 0)
		}
		time.Sleep(time.Millisecond)
	}
}
