package ticketkeys

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// clockChildEnv marks the re-executed test binary of TestClockOffsetOnlyInSkewBuild.
const clockChildEnv = "TICKETKEYS_CLOCK_TEST_CHILD"

// TestClockOffsetOnlyInSkewBuild starts this test binary again with
// TICKETKEYS_TEST_CLOCK_OFFSET=2m set before package init (where the
// clockskew build reads it): a normal build's engine keeps the system clock,
// a clockskew build's runs 2 minutes ahead.
func TestClockOffsetOnlyInSkewBuild(t *testing.T) {
	if os.Getenv(clockChildEnv) != "" {
		b, err := Factory(context.Background(), logical.TestBackendConfig())
		if err != nil {
			t.Fatalf("Factory: %v", err)
		}
		offset := b.(*backend).clock().Sub(time.Now()).Round(time.Second)
		if offset != clockSkewBuildOffset {
			t.Fatalf("engine clock offset %s with TICKETKEYS_TEST_CLOCK_OFFSET=2m; want %s in this build", offset, clockSkewBuildOffset)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestClockOffsetOnlyInSkewBuild$", "-test.count=1")
	cmd.Env = append(os.Environ(), clockChildEnv+"=1", "TICKETKEYS_TEST_CLOCK_OFFSET=2m")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child test binary: %v\n%s", err, out)
	}
}
