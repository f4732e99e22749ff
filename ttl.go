package ticketkeys

import (
	"fmt"
	"math"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// The window promise: a reader that re-reads when the ttl of its last read
// runs out holds every key before it activates. These are the delays such a
// reader adds after the ttl, which publish_ahead must cover. They are the
// schedule package's, which the Go client draws its own delay from.
const (
	// agentReadDelay: Vault Agent (consul-template) re-reads a non-leased
	// secret 1s after its ttl.
	agentReadDelay = schedule.AgentReadDelay
	// goClientMaxDelay: the Go client (client/source.go refreshWait) re-reads
	// up to min(max(ttl/20, 100ms), 5s) after the ttl.
	goClientMaxDelay = schedule.GoClientMaxDelay
	goClientMinDelay = schedule.GoClientMinDelay
	// readAllowance is the time a read itself may take (Vault round trip).
	readAllowance = schedule.ReadAllowance
	// ttlRounding: ttl is whole seconds, rounded up.
	ttlRounding = schedule.TTLRounding
	// maxTTLJitter caps the spread added to ttl.
	maxTTLJitter = schedule.MaxTTLJitter
)

// ttlJitterMax is the largest jitter added to a ttl
// (schedule.TTLJitterMax): a twentieth of rotation_period and a tenth of
// publish_ahead, at most 30s, in whole seconds. A ttljitterscale test build
// applies the rule to settings ttlJitterScale times longer (ttl_jitter.go).
func ttlJitterMax(s keyringSettings) time.Duration {
	k := time.Duration(ttlJitterScale)
	return schedule.TTLJitterMax(s.RotationPeriod*k, s.PublishAhead*k)
}

// readerDelay is the longest a reader following ttl waits after the ttl ran
// out: Vault Agent's 1s or the Go client's delay for the longest ttl a read
// hands out (rotation_period plus rounding and jitter, see ttlSeconds).
func readerDelay(s keyringSettings) time.Duration {
	maxTTL := s.RotationPeriod + ttlRounding + ttlJitterMax(s)
	return max(agentReadDelay, schedule.GoClientDelayMax(maxTTL))
}

// readerLag is the longest a reader following ttl takes, after the window
// changed, to hold the new window (schedule.ReaderLag, with this engine's
// ttlJitterMax): the ttl rounding, its jitter, readerDelay and the read
// itself.
func readerLag(s keyringSettings) time.Duration {
	return ttlRounding + ttlJitterMax(s) + readerDelay(s) + readAllowance
}

// leadTTLCap is the longest ttl a read may hand out so that its reader holds
// the next window within publish_ahead of the read: ttl + reader delay + the
// read <= publish_ahead. Every key is published at least publish_ahead
// before it activates (by the schedule, a scheduled rotation or a settings
// change), so with this cap a reader that read before the key was published
// is back with it before it activates, whatever was published in between:
// the rule holds for keys no ttl could foresee (a scheduled rotation at any
// second), where "until the next change" alone did not. checkPublishAhead
// keeps it at least 1s + the jitter.
//
// Capping the ttl was chosen over delaying a scheduled rotation's activation
// past the longest ttl handed out: the activation stays now + publish_ahead
// as documented, and the cost, more reads, only falls on keyrings whose
// publish_ahead is shorter than max_read_ttl (which already caps the ttl of
// every other keyring).
func leadTTLCap(s keyringSettings) time.Duration {
	return (s.PublishAhead - readerDelay(s) - readAllowance).Truncate(time.Second)
}

// checkPublishAhead enforces the window promise for settings s: publish_ahead
// must be longer than the reader lag.
func checkPublishAhead(s keyringSettings) error {
	if lag := readerLag(s); s.PublishAhead <= lag {
		return fmt.Errorf("publish_ahead must be more than %s with rotation_period %s, so that every reader following ttl holds the next key before it activates (ttl rounding 1s + ttl jitter %s + reader delay up to %s + 1s for the read); got %s",
			fmtDuration(lag), fmtDuration(s.RotationPeriod), fmtDuration(ttlJitterMax(s)), fmtDuration(lag-2*time.Second-ttlJitterMax(s)), fmtDuration(s.PublishAhead))
	}
	return nil
}

// ttlSeconds is how long a reader may keep this window: until it next
// changes, rounded up, plus a small random jitter so that a fleet does not
// re-read at one instant. It is never longer than rotation_period (plus
// rounding and jitter), even while keys of older, longer settings are live,
// and never longer than maxTTL nor leadTTLCap: past either the jitter is
// taken off instead, so every reader re-reads within it. It is never below
// 1 (0 would make consul-template spin).
func ttlSeconds(kr *keyring, now time.Time, maxTTL time.Duration, jitter func(n int64) int64) int64 {
	period := kr.Settings.RotationPeriod
	until := period
	if t, ok := kr.nextChange(now); ok && t.Sub(now) < period {
		until = t.Sub(now)
	}
	ttl := int64(math.Ceil(until.Seconds()))
	ttl += jitter(int64(ttlJitterMax(kr.Settings)/time.Second) + 1)
	limit := min(maxTTL, leadTTLCap(kr.Settings))
	if capped := int64(limit / time.Second); ttl > capped {
		spread := min(limit/10, maxTTLJitter).Truncate(time.Second)
		ttl = capped - jitter(int64(spread/time.Second)+1)
	}
	return max(ttl, 1)
}
