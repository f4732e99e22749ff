package ticketkeys

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// jitterChildEnv marks the re-executed test binary of
// TestTTLJitterScaleOnlyInTestBuild.
const jitterChildEnv = "TICKETKEYS_JITTER_TEST_CHILD"

// TestTTLJitterScaleOnlyInTestBuild starts this test binary again with
// TICKETKEYS_TEST_TTL_JITTER_SCALE=10 set before package init (where the
// ttljitterscale build reads it): a normal build's engine keeps the
// production jitter at a 1-minute period (3s) and the publish_ahead it
// accepts; a ttljitterscale build's applies the production rule to settings
// ten times longer (30s, production-sized), and the window promise follows:
// publish_ahead 30s is then refused, 60s accepted.
func TestTTLJitterScaleOnlyInTestBuild(t *testing.T) {
	if os.Getenv(jitterChildEnv) != "" {
		if _, err := Factory(context.Background(), logical.TestBackendConfig()); err != nil {
			t.Fatalf("Factory: %v", err)
		}
		s := keyringSettings{RotationPeriod: time.Minute, PublishAhead: time.Minute, Retain: 2 * time.Minute, KeySize: 80}
		if got := ttlJitterMax(s); got != ttlJitterScaleBuildJitter {
			t.Fatalf("ttl jitter at rotation_period 1m, publish_ahead 1m with %s=10: %s; want %s in this build", "TICKETKEYS_TEST_TTL_JITTER_SCALE", got, ttlJitterScaleBuildJitter)
		}
		s.PublishAhead = 30 * time.Second
		if err := checkPublishAhead(s); (err != nil) != ttlJitterScaleBuildRefuses30s {
			t.Fatalf("publish_ahead 30s at rotation_period 1m: %v; want refused=%v in this build", err, ttlJitterScaleBuildRefuses30s)
		}
		s.PublishAhead = time.Minute
		if err := checkPublishAhead(s); err != nil {
			t.Fatalf("publish_ahead 1m at rotation_period 1m refused: %v", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTTLJitterScaleOnlyInTestBuild$", "-test.count=1")
	cmd.Env = append(os.Environ(), jitterChildEnv+"=1", "TICKETKEYS_TEST_TTL_JITTER_SCALE=10")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child test binary: %v\n%s", err, out)
	}
}

// TestTTLJitterIsTheScheduleRule: in the shipped plugin (scale 1) the
// engine's jitter, reader lag and lead cap are exactly the schedule
// package's production rule, for settings from 10s to 24h (the e2e periods
// to the longest), the ones every reader (the fleet check, the Go client)
// computes its own tolerance from.
func TestTTLJitterIsTheScheduleRule(t *testing.T) {
	if ttlJitterScale != 1 {
		t.Skipf("a ttljitterscale build with scale %d", ttlJitterScale)
	}
	periods := []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 24 * time.Hour}
	for _, rp := range periods {
		for _, pa := range periods {
			s := keyringSettings{RotationPeriod: rp, PublishAhead: pa}
			if got, want := ttlJitterMax(s), schedule.TTLJitterMax(rp, pa); got != want {
				t.Errorf("rotation_period %s, publish_ahead %s: jitter %s, schedule rule %s", rp, pa, got, want)
			}
			if got, want := readerLag(s), schedule.ReaderLag(rp, pa); got != want {
				t.Errorf("rotation_period %s, publish_ahead %s: reader lag %s, schedule rule %s", rp, pa, got, want)
			}
		}
	}
	if got := ttlJitterMax(keyringSettings{RotationPeriod: time.Minute, PublishAhead: time.Minute}); got != 3*time.Second {
		t.Errorf("jitter at 1m/1m: %s; want 3s (a twentieth of the period)", got)
	}
	if got := ttlJitterMax(keyringSettings{RotationPeriod: time.Hour, PublishAhead: time.Hour}); got != 30*time.Second {
		t.Errorf("jitter at 1h/1h: %s; want 30s (the cap)", got)
	}
}
