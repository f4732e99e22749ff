package client

import (
	"context"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"
)

// newLoggedInSource starts a fake engine with a login endpoint, logs a
// client in with KeepLogin and starts a Source on the same client, all on
// one fake clock at t0+offset.
func newLoggedInSource(t *testing.T, offset time.Duration) (*fakeVault, *fakeClock, *Source, *Login) {
	t.Helper()
	fc := newFakeClock(t0.Add(offset))
	fv := newFakeVault(t, fc.Now, t0, period, retain)
	fv.setToken("")
	c := fv.client(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []Option{withClock(fc), withJitter(noJitter), WithRetryBackoff(time.Second, 4*time.Second), WithLogger(testLogger(t))}
	l, err := KeepLogin(ctx, c, fakeAuth{}, opts...)
	if err != nil {
		t.Fatalf("KeepLogin: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	src, err := NewSource(ctx, c, "ticketkeys", "web", opts...)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	waitParked(t, fc, 0)
	return fv, fc, src, l
}

// TestReloginAfterRevokedToken (issue 18 item 9): the node's token is
// revoked while its login (the secret-id) stays valid. The Source's next
// read is refused (403); it has KeepLogin log in again and keeps the shared
// window: through three periods it never falls to a node-local key, and it
// logs in exactly once more.
func TestReloginAfterRevokedToken(t *testing.T) {
	fv, fc, src, l := newLoggedInSource(t, 10*time.Second)
	if n, _ := l.Logins(); n != 1 {
		t.Fatalf("setup: %d logins, want 1", n)
	}
	fv.setToken("") // the token is revoked: no token is valid until the next login
	end := fc.Now().Add(3 * period)
	for fc.Now().Before(end) {
		fc.step(t, time.Second)
		want := keyNumberAt(fc.Now())
		if st := src.Status(); st.Exhausted || st.CurrentID != keyID(want) {
			t.Fatalf("+%s after the token was revoked: exhausted=%v current_is_key%d=%v (logins %d)",
				fc.Now().Sub(end.Add(-3*period)), st.Exhausted, want, st.CurrentID == keyID(want), fv.logins.Load())
		}
	}
	if n, _ := l.Logins(); n != 2 || fv.logins.Load() != 2 {
		t.Fatalf("logins: %d counted by KeepLogin, %d by Vault; want 2 (one after the revocation)", n, fv.logins.Load())
	}
}

// TestReloginBacksOff (issue 18 item 9): when a new login does not help (the
// role's policy lacks the keyring: every read is refused), the Source keeps
// retrying its reads with its own backoff, but logs in again at most once per
// 30s, backing off: over ten minutes of refused reads, a handful of logins,
// not one per read.
func TestReloginBacksOff(t *testing.T) {
	fv, fc, src, _ := newLoggedInSource(t, 10*time.Second)
	fv.mu.Lock()
	fv.denyKeyring = true
	fv.mu.Unlock()
	reads := fv.requests.Load()
	start := fc.Now()
	for fc.Now().Before(start.Add(10 * time.Minute)) {
		fc.step(t, time.Second)
	}
	refused := fv.requests.Load() - reads - fv.logins.Load() + 1
	relogins := fv.logins.Load() - 1
	t.Logf("%d logins after %d refused reads in 10 minutes", relogins, refused)
	// Gaps of 30s, 1m, 2m, 4m: logins at 0, 30s, 1m30s, 3m30s, 7m30s.
	if relogins < 2 || relogins > 5 {
		t.Fatalf("%d logins after %d refused reads in 10 minutes, want 2 to 5 (at most one per 30s, backing off)", relogins, refused)
	}
	if refused < 50 {
		t.Fatalf("only %d refused reads in 10 minutes: the Source stopped retrying", refused)
	}
	if st := src.Status(); st.LastError == nil {
		t.Fatal("no read error reported while every read was refused")
	}
}

// TestReloginGenerated: random histories at production scale (1h periods,
// 12h retain) of token revocations, periods in which the policy refuses the
// keyring whatever the token, and time passing in steps of up to 15 minutes.
// Invariants: logins after the first are never less than 30s apart (the
// rate limit holds whatever happens), and once the keyring has been readable
// again for 11 minutes (the longest login gap plus retries) the node encrypts
// with the scheduled key. A failure prints the seed and the history.
func TestReloginGenerated(t *testing.T) {
	const hour = time.Hour
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := mrand.New(mrand.NewPCG(seed, 9))
			fc := newFakeClock(t0.Add(time.Duration(rng.Int64N(int64(hour)))))
			fv := newFakeVault(t, fc.Now, t0, hour, 12*hour)
			fv.setToken("")
			c := fv.client(t, "")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			opts := []Option{withClock(fc), WithRetryBackoff(time.Second, 30*time.Second), WithLogger(slog.New(slog.DiscardHandler))}
			l, err := KeepLogin(ctx, c, fakeAuth{}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			src, err := NewSource(ctx, c, "ticketkeys", "web", opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = src.Close() })
			waitParked(t, fc, 0)

			var history []string
			readableSince := fc.Now()
			denied := false
			for op := 0; op < 120; op++ {
				switch r := rng.IntN(10); {
				case r < 2:
					fv.setToken("")
					history = append(history, "revoke")
				case r < 3:
					denied = !denied
					fv.mu.Lock()
					fv.denyKeyring = denied
					fv.mu.Unlock()
					if !denied {
						readableSince = fc.Now()
					}
					history = append(history, fmt.Sprintf("deny=%v", denied))
				default:
					d := time.Duration(1+rng.Int64N(15*60)) * time.Second
					history = append(history, fmt.Sprintf("run %s", d))
					for d > 0 {
						s := min(d, 10*time.Second)
						fc.step(t, s)
						d -= s
					}
				}
				fail := func(format string, args ...any) {
					t.Helper()
					t.Fatalf("seed %d, op %d at +%s: %s\nhistory: %s", seed, op, fc.Now().Sub(t0), fmt.Sprintf(format, args...), strings.Join(history, "; "))
				}
				fv.mu.Lock()
				times := append([]time.Time(nil), fv.loginTimes...)
				fv.mu.Unlock()
				for i := 2; i < len(times); i++ {
					if gap := times[i].Sub(times[i-1]); gap < reloginMinGap {
						fail("logins %d and %d only %s apart, want at least %s", i, i+1, gap, reloginMinGap)
					}
				}
				if !denied && fc.Now().Sub(readableSince) >= 11*time.Minute {
					want := keyID(int64(fc.Now().Sub(t0) / hour))
					if st := src.Status(); st.Exhausted || st.CurrentID != want {
						fail("keyring readable for %s: exhausted=%v on the scheduled key=%v (logins %d, last error %v)",
							fc.Now().Sub(readableSince), st.Exhausted, st.CurrentID == want, len(times), st.LastError)
					}
				}
			}
			t.Logf("seed %d: %d logins over %s of history", seed, fv.logins.Load(), fc.Now().Sub(t0))
		})
	}
}
