package ctxend

import (
	"context"
	"testing"
	"time"
)

// A run is over once the clock passes its deadline, even while the
// context's timer has not fired yet: a dial bounded by that deadline fails
// with "i/o timeout" then, and must count as cut by the end of the run.
func TestEndedByClockBeforeTheContextTimer(t *testing.T) {
	deadline := time.Now().Add(time.Hour)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, tc := range []struct {
		now  time.Time
		want bool
	}{
		{deadline.Add(-time.Millisecond), false},
		{deadline, true},
		{deadline.Add(time.Millisecond), true},
	} {
		if got := Err(ctx, tc.now) != nil; got != tc.want {
			t.Errorf("Err at deadline%+v = %v, want %v", tc.now.Sub(deadline), got, tc.want)
		}
	}
	if Err(canceledContext(), time.Now()) == nil {
		t.Error("a canceled run is over")
	}
	if Err(context.Background(), time.Now()) != nil {
		t.Error("a run without deadline is not over")
	}
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
