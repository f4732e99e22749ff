package client

import (
	"context"
	"crypto/tls"
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
