//go:build ttljitterscale

package ticketkeys

import "time"

// What TestTTLJitterScaleOnlyInTestBuild expects with
// TICKETKEYS_TEST_TTL_JITTER_SCALE=10 in a ttljitterscale build: the
// production rule of 10m/10m, 30s, and publish_ahead 30s refused (reader lag
// 1s + 30s + 4.5s + 1s).
const (
	ttlJitterScaleBuildJitter     = 30 * time.Second
	ttlJitterScaleBuildRefuses30s = true
)
