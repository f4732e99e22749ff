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
