//go:build clockskew

package ticketkeys

import "time"

// clockSkewBuildOffset is the engine clock offset TestClockOffsetOnlyInSkewBuild
// expects with TICKETKEYS_TEST_CLOCK_OFFSET=2m in a clockskew build.
const clockSkewBuildOffset = 2 * time.Minute
