// Package ctxend tells whether a context has ended by the clock as well as
// by its own state.
//
// A dial, handshake or read bounded by a context's deadline fails with
// "i/o timeout" as soon as the deadline passes, while the context's own
// timer, which sets Err, may fire later: on a busy machine measurably so.
// Code that sorts failures into "cut by the end of the run" and "real"
// by ctx.Err() alone counts such failures as real ones (the benchmark's
// time-to-first-byte load and the fleet check's rounds both did). Err
// closes that gap.
package ctxend

import (
	"context"
	"time"
)

// Err returns ctx.Err() once ctx is done, or context.DeadlineExceeded once
// now has reached ctx's deadline; nil while neither.
func Err(ctx context.Context, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !now.Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}
