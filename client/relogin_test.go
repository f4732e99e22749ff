package client

import (
	"context"
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
