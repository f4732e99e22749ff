//go:build clockskew

package ticketkeys

import (
	"fmt"
	"os"
	"time"
)

// clockOffsetEnv names the variable a clockskew test build reads its clock
// offset from (a Go duration such as "2m"). Vault passes its own environment
// to the plugin processes it starts, so setting it on one `vault server`
// skews that node's engine only.
const clockOffsetEnv = "TICKETKEYS_TEST_CLOCK_OFFSET"

func init() {
	v := os.Getenv(clockOffsetEnv)
	if v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		panic(fmt.Sprintf("ticketkeys clockskew build: %s=%q is not a Go duration (e.g. 2m or -90s): %v", clockOffsetEnv, v, err))
	}
	clockOffset = d
}
