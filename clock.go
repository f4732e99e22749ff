package ticketkeys

import "time"

// clockOffset shifts the engine's clock. Only a test build of the plugin
// (build tag clockskew, clock_skew.go) sets it, so that an end-to-end test can
// run one Vault node's plugin with a skewed clock; in the shipped plugin it is
// always 0 and nothing can change it.
var clockOffset time.Duration

// defaultClock is the clock Factory gives the engine: the system clock,
// shifted by clockOffset in a clockskew test build.
func defaultClock() time.Time {
	return time.Now().Add(clockOffset)
}
