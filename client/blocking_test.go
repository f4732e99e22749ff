package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// blockReads makes every later keyring read of fv hang in the handler until
// the returned release is called (or the request is cancelled); entered
// receives once per read that reached the handler. release is idempotent and
// also runs at cleanup, before the fake server closes.
func (fv *fakeVault) blockReads(t *testing.T) (entered <-chan struct{}, release func()) {
	t.Helper()
	block, ent := make(chan struct{}), make(chan struct{}, 16)
	fv.mu.Lock()
	fv.block, fv.entered = block, ent
	fv.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(block) }) }
	t.Cleanup(release)
	return ent, release
}

// awaitEntered waits (at most 10s) until a read reached the blocked handler.
func awaitEntered(t *testing.T, entered <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no read reached the fake Vault within 10s", what)
	}
}

// noClientTimeout lifts the fake client's own 5s timeout, so that only the
// Source's 30s fetch timeout bounds a stuck read, as with a default client.
func noClientTimeout(fv *fakeVault) { fv.clientTimeout = time.Minute }

// stuckLimit bounds how long a test waits for a call that must return while
// a read is stuck: far beyond what the call should take (it does not wait
// for the read at all), far below the 30s fetch timeout it used to wait for.
const stuckLimit = 10 * time.Second

// TestRefreshHonoursContextBehindAStuckRead: while a background read hangs
// (a Vault that accepted the connection and never answers), Refresh with a
// 200ms context returns the context's error without waiting for that read,
// and the hung read is still hanging when it does.
func TestRefreshHonoursContextBehindAStuckRead(t *testing.T) {
	fv, fc, src, _ := newFakeSourceWith(t, 10*time.Second, noClientTimeout)
	entered, release := fv.blockReads(t)
	fc.advance(src.nextRefresh().Sub(fc.Now())) // the background read is due
	awaitEntered(t, entered, "background read")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Refresh(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Refresh behind a stuck read: got %v, want an error wrapping context.DeadlineExceeded", err)
		}
		if fv.blocked.Load() != 1 {
			t.Fatalf("reads held in the fake Vault when Refresh returned: %d, want the stuck background read", fv.blocked.Load())
		}
	case <-time.After(stuckLimit):
		release()
		t.Fatalf("Refresh with a 200ms context did not return within %s while another read was stuck", stuckLimit)
	}
}

// TestCloseReturnsWhileAReadIsStuck: Close returns while a Refresh's read
// hangs in Vault and the background loop waits behind it; the in-flight
// Refresh is cancelled and returns ErrClosed, still before the hung handler
// is released.
func TestCloseReturnsWhileAReadIsStuck(t *testing.T) {
	fv, fc, src, _ := newFakeSourceWith(t, 10*time.Second, noClientTimeout)
	entered, release := fv.blockReads(t)
	refreshed := make(chan error, 1)
	go func() { refreshed <- src.Refresh(context.Background()) }()
	awaitEntered(t, entered, "Refresh")
	// The background read falls due and waits for the Refresh's read.
	fc.advance(src.nextRefresh().Sub(fc.Now()))
	time.Sleep(50 * time.Millisecond)

	closed := make(chan struct{})
	go func() { _ = src.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(stuckLimit):
		release()
		t.Fatalf("Close did not return within %s while a read was stuck in Vault", stuckLimit)
	}
	select {
	case err := <-refreshed:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Refresh cut by Close: got %v, want ErrClosed", err)
		}
	case <-time.After(stuckLimit):
		release()
		t.Fatalf("Refresh did not return within %s of Close while its read was stuck", stuckLimit)
	}
}

// TestActivationCutsAHeldRead: a read held up in Vault (a Vault Agent or
// Proxy retrying while Vault is down holds it for minutes) never holds the
// Source's loop past the next key activation. The loop cuts the read at the
// activation (by the Source's clock), advances the keys in use at the
// published instant, and reads again after the switch. Before, an Agent-fed
// server that learns of key changes from the loop (Caddy) kept encrypting
// with the old key until the read returned.
func TestActivationCutsAHeldRead(t *testing.T) {
	// A ttl that brings the read before the activation, as the engine's
	// cap does for a reader behind an Agent.
	fv, fc, src, rec := newFakeSourceWith(t, 10*time.Second, func(fv *fakeVault) {
		noClientTimeout(fv)
		fv.ttl = 20 * time.Second
	})
	activation := t0.Add(period)
	due := src.nextRefresh()
	if !due.Before(activation) {
		t.Fatalf("the first background read is due at %v, not before the activation at %v", due, activation)
	}
	entered, release := fv.blockReads(t)
	fc.advance(due.Sub(fc.Now()))
	awaitEntered(t, entered, "background read")

	rec.mu.Lock()
	before := len(rec.advances)
	rec.mu.Unlock()
	fc.advance(activation.Sub(fc.Now()))
	deadline := time.Now().Add(stuckLimit)
	for {
		rec.mu.Lock()
		var got *AdvanceEvent
		for _, e := range rec.advances[before:] {
			if e.Reason == "schedule" {
				got = &e
				break
			}
		}
		rec.mu.Unlock()
		if got != nil {
			if !got.Time.Equal(activation) {
				t.Fatalf("the keys advanced at %v, want the activation %v", got.Time, activation)
			}
			break
		}
		if time.Now().After(deadline) {
			release()
			t.Fatalf("no advance at the activation within %s while a read was held (reads held: %d)", stuckLimit, fv.blocked.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := src.Status(); st.CurrentID != keyID(1) {
		t.Fatal("after the activation the current key is not key 1")
	}
	// The loop reads again after the switch (the fake still holds it).
	awaitEntered(t, entered, "the read after the switch")
}
