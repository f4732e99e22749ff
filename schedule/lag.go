package schedule

import "time"

// The window promise: a reader that re-reads when the ttl of its last read
// runs out holds every key before it activates. These are the delays such a
// reader adds after a window changes, which publish_ahead must cover. The
// engine checks settings against ReaderLag, and the Go client draws its
// re-read delay from GoClientDelayMax: both read them here, so a change to
// one changes the other.
const (
	// AgentReadDelay: Vault Agent (consul-template) re-reads a non-leased
	// secret 1s after its ttl.
	AgentReadDelay = time.Second
	// GoClientMinDelay and GoClientMaxDelay bound the Go client's delay
	// after a ttl (see GoClientDelayMax).
	GoClientMinDelay = 100 * time.Millisecond
	GoClientMaxDelay = 5 * time.Second
	// ReadAllowance is the time a read itself may take (Vault round trip).
	ReadAllowance = time.Second
	// TTLRounding: ttl is whole seconds, rounded up.
	TTLRounding = time.Second
	// MaxTTLJitter caps the spread the engine adds to a ttl.
	MaxTTLJitter = 30 * time.Second
)

// GoClientDelayMax is the largest random delay the Go client adds to a wait
// of d (after a ttl, or before a deadline it reads ahead of):
// min(max(d/20, 100ms), 5s), so a fleet started together does not read in
// lockstep.
func GoClientDelayMax(d time.Duration) time.Duration {
	return min(max(d/20, GoClientMinDelay), GoClientMaxDelay)
}

// TTLJitterMax is the largest jitter the engine adds to a ttl: a twentieth
// of rotation_period and a tenth of publish_ahead, at most MaxTTLJitter, in
// whole seconds. Scaling it with publish_ahead keeps short publish_ahead
// settings inside the promise.
func TTLJitterMax(rotationPeriod, publishAhead time.Duration) time.Duration {
	return min(rotationPeriod/20, publishAhead/10, MaxTTLJitter).Truncate(time.Second)
}

// ReaderLag is the longest a reader following ttl takes, after the window
// changed, to hold the new window: the ttl rounding, its jitter, the
// reader's own delay after the ttl (Agent's or the Go client's, whichever is
// longer) and the read itself. A ttl is never longer than rotation_period
// plus rounding and jitter, which bounds the Go client's delay for short
// periods.
func ReaderLag(rotationPeriod, publishAhead time.Duration) time.Duration {
	jitter := TTLJitterMax(rotationPeriod, publishAhead)
	maxTTL := rotationPeriod + TTLRounding + jitter
	return TTLRounding + jitter + max(AgentReadDelay, GoClientDelayMax(maxTTL)) + ReadAllowance
}
