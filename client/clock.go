package client

import "time"

// clock is the source of time for activation, retirement and refresh
// scheduling. Tests replace it with a fake to move time by hand.
type clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a function
	// that releases the timer early.
	After(d time.Duration) (<-chan time.Time, func())
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}
