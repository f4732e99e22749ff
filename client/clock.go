package client

import "time"

// clock is the source of time for activation, retirement and refresh
// scheduling. Tests replace it with a fake to move time by hand.
type clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a function
	// that releases the timer early.
	After(d time.Duration) (<-chan time.Time, func())
	// AfterFunc calls f in its own goroutine once d has passed, unless the
	// returned function (which releases the timer) was called first.
	AfterFunc(d time.Duration, f func()) func()
}

type realClock struct{}

// Now returns the wall-clock time without its monotonic reading. The
// schedule is wall time (the keys' times come from Vault), and the key set's
// instants are compared with later readings: with monotonic readings on both
// sides those comparisons would follow the monotonic clock, so a node whose
// wall clock was stepped (NTP, an operator) would keep a key set computed at
// the stepped time until the monotonic clock caught up.
func (realClock) Now() time.Time { return time.Now().Round(0) }

func (realClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

func (realClock) AfterFunc(d time.Duration, f func()) func() {
	t := time.AfterFunc(d, f)
	return func() { t.Stop() }
}
