//go:build ttljitterscale

package ticketkeys

import (
	"fmt"
	"os"
	"strconv"
)

// ttlJitterScaleEnv names the variable a ttljitterscale test build reads its
// jitter scale from (a whole number >= 1). Vault passes its own environment
// to the plugin processes it starts, so setting it on one `vault server`
// reaches that server's engine only. The shipped plugin has no such
// variable (ttl_jitter.go: the scale is always 1).
const ttlJitterScaleEnv = "TICKETKEYS_TEST_TTL_JITTER_SCALE"

func init() {
	v := os.Getenv(ttlJitterScaleEnv)
	if v == "" {
		return
	}
	k, err := strconv.Atoi(v)
	if err != nil || k < 1 || k > 1000 {
		panic(fmt.Sprintf("ticketkeys ttljitterscale build: %s=%q must be a whole number from 1 to 1000", ttlJitterScaleEnv, v))
	}
	ttlJitterScale = k
}
