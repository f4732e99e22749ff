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
	legacyUntil       time.Time
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

// LegacyTicketKeys is the most keys a ticket without a key name is tried
// against while WithLegacyTicketsUntil accepts such tickets: the current key,
// the next one (a node of the previous release whose clock runs a little
// ahead) and the newest previous keys. A forged ticket therefore costs at
// most this many decryption attempts whatever the window's size, and at most
// five times that per TLS 1.3 ClientHello (crypto/tls tries at most five
// identities). A ticket of the previous release made under an older key gets
// a full handshake instead of resuming.
const LegacyTicketKeys = 4

// WithLegacyTicketsUntil makes the Source accept, until deadline, session
// tickets in the format of the previous release (v0.1.0: crypto/tls's ticket
// with no key name in front), so that a rolling upgrade from it costs no
// resumption. Such a ticket is tried against at most LegacyTicketKeys keys
// (see there). If not given, or zero, those tickets are never accepted: a
// client holding one makes one full handshake.
//
// deadline is an absolute instant, so that it is the same on every node and
// a restart does not extend it: set it once, in the fleet's configuration,
// to the end of the upgrade plus the tickets' useful life (for example the
// upgrade's start plus 24h), and remove the option in a later deployment.
// NewSource refuses a deadline more than 168h ahead (the longest key
// lifetime: every ticket a node of the previous release issued is dead by
// then), so a forgotten option cannot keep legacy tickets open for ever.
// Status reports LegacyUntil while they are accepted and counts them in
// Tickets.Legacy: once that count stops growing, no node of the previous
// release issues tickets any more.
//
// Servers fed by TicketKeys (Caddy, for example) make tickets in that format
// too: they resume on a server wired with ConfigureServer only while this
// option accepts them.
func WithLegacyTicketsUntil(deadline time.Time) Option {
	return func(o *options) { o.legacyUntil = deadline.Round(0) }
}

// withClock replaces the clock (tests only).
func withClock(c clock) Option { return func(o *options) { o.clock = c } }

// withJitter replaces the random jitter (tests only).
func withJitter(f func(max time.Duration) time.Duration) Option {
	return func(o *options) { o.jitter = f }
}
