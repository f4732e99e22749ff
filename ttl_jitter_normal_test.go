//go:build !ttljitterscale

package ticketkeys

import "time"

// What TestTTLJitterScaleOnlyInTestBuild expects with
// TICKETKEYS_TEST_TTL_JITTER_SCALE=10 in a normal build: the production
// jitter of a 1-minute period (3s), and publish_ahead 30s accepted.
const (
	ttlJitterScaleBuildJitter     = 3 * time.Second
	ttlJitterScaleBuildRefuses30s = false
)
