package client

import (
	"fmt"
	"log/slog"
	"time"
)

// Option configures a Source (and KeepLogin, which uses the logger, the
// retry backoff and nothing else).
type Option func(*options)

type options struct {
	logger            *slog.Logger
	observer          Observer
	disableTickets    bool
	backoffMin        time.Duration
	backoffMax        time.Duration
	fetchTimeout      time.Duration
	maxRefresh        time.Duration
	legacyFor         time.Duration
	clock             clock
	jitter            func(max time.Duration) time.Duration
	invalidOptionErrs []error
}

func defaultOptions() options {
	return options{
		logger:       slog.Default(),
		backoffMin:   500 * time.Millisecond,
		backoffMax:   30 * time.Second,
		fetchTimeout: 30 * time.Second,
		maxRefresh:   time.Hour,
		legacyFor:    maxKeyLifetime,
		clock:        realClock{},
		jitter:       randomJitter,
	}
}

func buildOptions(opts []Option) (options, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if len(o.invalidOptionErrs) > 0 {
		return o, o.invalidOptionErrs[0]
	}
	return o, nil
}

// WithLogger sends the package's logs (refresh errors, exhaustion, window
// changes; never key material or key ids) to l. If not given, or nil, logs go
// to slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithObserver registers hooks for refresh results and ticket decryption
// outcomes, for metrics. The hooks run synchronously (Ticket on the
// handshake path) and must be fast and safe for concurrent use. If not given,
// nothing is called; the counters in Status are kept either way.
func WithObserver(obs Observer) Option {
	return func(o *options) { o.observer = obs }
}

// WithDisableTicketsOnExhaustion makes the server stop accepting session
// tickets, and issue only an inert one that never resumes, while the schedule
// is exhausted (no published key may encrypt any more because Vault could not
// be read), instead of the default: a node-local random key whose tickets
// resume only on this node. The config crypto/tls serves is never replaced,
// so its certificates and ALPN protocols stay as they are. Either way
// handshakes never fail for lack of a key.
func WithDisableTicketsOnExhaustion() Option {
	return func(o *options) { o.disableTickets = true }
}

// WithRetryBackoff sets the bounds of the capped exponential backoff (with
// jitter) between failed reads. If not given, min is 500ms and max 30s.
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *options) {
		if min <= 0 || max < min {
			o.invalidOptionErrs = append(o.invalidOptionErrs,
				fmt.Errorf("ticketkeys: WithRetryBackoff: min must be > 0 and max >= min, got min=%s max=%s", min, max))
			return
		}
		o.backoffMin, o.backoffMax = min, max
	}
}

// WithFetchTimeout bounds one read of the keyring (the caller's api.Client
// timeout applies too). If not given, 30s.
func WithFetchTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.invalidOptionErrs = append(o.invalidOptionErrs,
				fmt.Errorf("ticketkeys: WithFetchTimeout: must be > 0, got %s", d))
			return
		}
		o.fetchTimeout = d
	}
}

// WithMaxRefreshInterval caps the time between two successful reads even
// when the window's ttl is longer, so that a keyring rotated with mode=now is
// picked up in bounded time. If not given, 1h.
func WithMaxRefreshInterval(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.invalidOptionErrs = append(o.invalidOptionErrs,
				fmt.Errorf("ticketkeys: WithMaxRefreshInterval: must be > 0, got %s", d))
			return
		}
		o.maxRefresh = d
	}
}

// WithLegacyTickets sets how long the Source keeps accepting session tickets
// in the format of the previous release (v0.1.0: crypto/tls's ticket with no
// key name in front), so that a rolling upgrade costs no resumption: those
// tickets are tried against every published key of the window, as that
// release did. The period runs from NewSource and starts again whenever such
// a ticket decrypts, so it ends only after no node of the previous release
// has issued a ticket that resumed here for d. If not given, d is 168h (the
// longest key lifetime the engine allows, so every ticket such a node issued
// has expired when it ends). 0 turns legacy tickets off.
//
// While legacy tickets are accepted, a forged ticket whose first 16 bytes
// name no key in use costs one decryption attempt per published key (at most
// five tickets per TLS 1.3 ClientHello); afterwards it costs a map lookup,
// and a ticket naming a key always costs exactly one attempt.
func WithLegacyTickets(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			o.invalidOptionErrs = append(o.invalidOptionErrs,
				fmt.Errorf("ticketkeys: WithLegacyTickets: must be >= 0 (0 turns legacy tickets off), got %s", d))
			return
		}
		o.legacyFor = d
	}
}

// withClock replaces the clock (tests only).
func withClock(c clock) Option { return func(o *options) { o.clock = c } }

// withJitter replaces the random jitter (tests only).
func withJitter(f func(max time.Duration) time.Duration) Option {
	return func(o *options) { o.jitter = f }
}
