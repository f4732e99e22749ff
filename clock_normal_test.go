//go:build !clockskew

package ticketkeys

import "time"

// clockSkewBuildOffset is the engine clock offset TestClockOffsetOnlyInSkewBuild
// expects with TICKETKEYS_TEST_CLOCK_OFFSET=2m: none in a normal build.
const clockSkewBuildOffset time.Duration = 0
