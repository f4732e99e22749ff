package fleetcheck

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config's zero values.
const (
	DefaultGrace        = 5 * time.Second
	DefaultMatrixFull   = 16
	DefaultMatrixSample = 8
	DefaultConcurrency  = 16
	DefaultTimeout      = 5 * time.Second
	DefaultMaxRetired   = 4
)

// Config says what to check and how hard.
type Config struct {
	// Keyring and Format name the keyring in reports; Format also selects
	// the ticket layout (nginx, haproxy, envoy: OpenSSL; go: package client).
	Keyring string
	Format  string
	// UnnamedTickets (format go only) says the nodes install the window's
	// keys with tls.Config.SetSessionTicketKeys, as Caddy's
	// tls.stek.ticketkeys does: crypto/tls's tickets carry no key name, so
	// the check names each ticket after the key (in the window, or retired)
	// whose material opens it, and crafts its tickets without the name.
	UnnamedTickets bool
	// Read returns the keyring's window (VaultReader, or a fixed window in
	// tests).
	Read WindowReader
	// Nodes are the servers, each addressed directly (not through a load
	// balancer).
	Nodes []Node
	// Versions are the TLS versions every check runs in. If empty, TLS 1.2
	// and TLS 1.3.
	Versions []uint16
	// Grace is the clock skew tolerated around an instant of the schedule:
	// a fresh ticket under the next key within Grace before its activation
	// is on schedule. A node's whole tolerance after an instant (still on
	// the previous key after an activation, still resuming a key retired or
	// purged) is Grace for local nodes and Grace + AgentLag of the window
	// for Agent-fed nodes (Node.Kind). If zero, DefaultGrace (5s).
	Grace time.Duration
	// ReloadAllowance is the time an Agent-fed node takes to use a window
	// Agent has rendered (reload, push, file watch), part of AgentLag. If
	// zero, DefaultReloadAllowance (2s).
	ReloadAllowance time.Duration
	// MaxReadTTL is the engine mount's max_read_ttl: after a purge, every
	// reader drops the purged keys within it (plus its read delay), so a
	// node still resuming one until then is pending, not failing. If zero,
	// DefaultMaxReadTTL (5m, the engine's default).
	MaxReadTTL time.Duration
	// NextGrace is how long after the next key is published a node may still
	// miss it before that is a failure (until then: pending). If zero,
	// publish_ahead/4, at least the node's readiness lag (Grace + the
	// engine's reader lag, or its Agent tolerance if longer), at most 2m,
	// 3/4 of publish_ahead and publish_ahead - Grace.
	NextGrace time.Duration
	// MatrixFull is the largest fleet that gets the full cross-node matrix
	// (every node's ticket offered to every node). Above it, each node's
	// ticket goes to itself and MatrixSample others, rotating each round so
	// that every pair is covered within ceil((n-1)/MatrixSample) rounds.
	// If zero, 16 and 8.
	MatrixFull   int
	MatrixSample int
	// Concurrency bounds the handshakes in flight. If zero, 16.
	Concurrency int
	// Timeout bounds each connection (dial, handshake, first ticket). If
	// zero, 5s.
	Timeout time.Duration
	// RetiredFor is how long after it retires a key is still offered to the
	// nodes (its material held in memory only). If zero, one rotation
	// period, at least 1m. MaxRetired bounds how many are offered per round
	// (if zero, 4): half of them the newest every round (after a purge, the
	// former next and current keys), the other slots rotating through the
	// rest, so every retired key is offered to every node within a few
	// rounds.
	RetiredFor time.Duration
	MaxRetired int
	// PreviousKeys is how many previous keys (newest first) every node must
	// still resume, of those the window says decrypt (the retain promise).
	// If zero, all of them; for format haproxy one (its ring of three holds
	// previous, current and next). An nginx node fed key files holds
	// slots - 2 (docs/nginx.md): set it to that.
	PreviousKeys int
	// MaxPrevious bounds the previous keys offered per round: the newest
	// every round, the others rotating. If zero, 2.
	MaxPrevious int
	// Logger receives one line per round (never material). If nil, nothing
	// is logged.
	Logger *slog.Logger
	// TestJitterScale is for end-to-end tests against a test build of the
	// engine (build tag ttljitterscale, TICKETKEYS_TEST_TTL_JITTER_SCALE=k)
	// whose ttl jitter is the production rule applied to rotation_period*k
	// and publish_ahead*k: the check then applies the same rule to the same
	// settings (AgentLag). Zero (or 1) for every shipped engine; no flag of
	// the command sets it.
	TestJitterScale int
}

// Checker runs rounds of checks against one keyring's fleet and remembers,
// between rounds, the keys it has seen so that it can offer tickets under
// keys once they retire. Its methods are safe for concurrent use; rounds
// run one at a time, and Last never waits for a round.
type Checker struct {
	cfg Config
	// sampleBase shifts the sampled matrix's rotation, drawn from the clock
	// at New: one-shot runs (cron) each make round 1 only, and would
	// otherwise all offer the same pairs.
	sampleBase int
	// groups are the resumption domains (node indices), groupOf each
	// node's domain.
	groups  [][]int
	groupOf []int

	// lastReport is the report of the last whole round, read without mu so
	// that /metrics and /report.json never wait for a round in progress.
	lastReport atomic.Pointer[Report]

	mu    sync.Mutex // held through a round: the state below
	round int
	known map[string]*Key // keys of the last window read
	// lastWindow is the last window read (its keys are those in known).
	lastWindow *Window
	retired    []*retiredKey // newest first (retiredPriority)
}

// New checks cfg and returns a Checker.
func New(cfg Config) (*Checker, error) {
	if !slices.Contains(Formats, cfg.Format) {
		return nil, fmt.Errorf("fleetcheck: format: must be one of %v, got %q", Formats, cfg.Format)
	}
	if cfg.UnnamedTickets && cfg.Format != FormatGo {
		return nil, fmt.Errorf("fleetcheck: unnamed tickets: only crypto/tls's tickets (format %s) come without a key name, got format %q", FormatGo, cfg.Format)
	}
	if cfg.Read == nil {
		return nil, errors.New("fleetcheck: Read: required, got nil")
	}
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("fleetcheck: nodes: at least one node is required, got 0")
	}
	seen := map[string]bool{}
	for i, n := range cfg.Nodes {
		if n.Addr == "" {
			return nil, fmt.Errorf("fleetcheck: nodes[%d].addr: required (host:port), got \"\"", i)
		}
		if seen[n.Addr] {
			return nil, fmt.Errorf("fleetcheck: nodes[%d].addr: must be unique, %q appears twice", i, n.Addr)
		}
		seen[n.Addr] = true
		if n.Kind != "" && !slices.Contains(Kinds, n.Kind) {
			return nil, fmt.Errorf("fleetcheck: nodes[%d].kind: must be one of %v, got %q", i, Kinds, n.Kind)
		}
	}
	if cfg.TestJitterScale < 0 {
		return nil, fmt.Errorf("fleetcheck: test_jitter_scale: must not be negative, got %d", cfg.TestJitterScale)
	}
	if len(cfg.Versions) == 0 {
		cfg.Versions = []uint16{tls.VersionTLS12, tls.VersionTLS13}
	}
	for _, v := range cfg.Versions {
		if v != tls.VersionTLS12 && v != tls.VersionTLS13 {
			return nil, fmt.Errorf("fleetcheck: versions: each must be TLS 1.2 or TLS 1.3, got %#x", v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"grace", cfg.Grace}, {"next_grace", cfg.NextGrace}, {"timeout", cfg.Timeout}, {"retired_for", cfg.RetiredFor}, {"reload_allowance", cfg.ReloadAllowance}, {"max_read_ttl", cfg.MaxReadTTL}} {
		if d.v < 0 {
			return nil, fmt.Errorf("fleetcheck: %s: must not be negative, got %s", d.name, d.v)
		}
	}
	for _, d := range []struct {
		name string
		v    int
	}{{"matrix_full", cfg.MatrixFull}, {"matrix_sample", cfg.MatrixSample}, {"concurrency", cfg.Concurrency}, {"max_retired", cfg.MaxRetired}, {"previous_keys", cfg.PreviousKeys}, {"max_previous", cfg.MaxPrevious}} {
		if d.v < 0 {
			return nil, fmt.Errorf("fleetcheck: %s: must not be negative, got %d", d.name, d.v)
		}
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.MaxReadTTL == 0 {
		cfg.MaxReadTTL = DefaultMaxReadTTL
	}
	if cfg.ReloadAllowance == 0 {
		cfg.ReloadAllowance = DefaultReloadAllowance
	}
	if cfg.MatrixFull == 0 {
		cfg.MatrixFull = DefaultMatrixFull
	}
	if cfg.MatrixSample == 0 {
		cfg.MatrixSample = DefaultMatrixSample
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxPrevious == 0 {
		cfg.MaxPrevious = DefaultMaxPrevious
	}
	if cfg.MaxRetired == 0 {
		cfg.MaxRetired = DefaultMaxRetired
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Checker{cfg: cfg, known: map[string]*Key{}}
	c.groups, c.groupOf = domains(cfg.Nodes)
	if n := len(cfg.Nodes); n > 1 {
		now := time.Now()
		c.sampleBase = rand.New(rand.NewPCG(uint64(now.UnixNano()), uint64(now.Unix()))).IntN(n - 1)
	}
	return c, nil
}

// Last returns the report of the last whole round, or nil. It does not
// wait for a round in progress.
func (c *Checker) Last() *Report {
	return c.lastReport.Load()
}

// Close wipes every key the checker holds.
func (c *Checker) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.known {
		k.wipe()
	}
	for _, r := range c.retired {
		r.key.wipe()
	}
	c.known, c.retired, c.lastWindow = map[string]*Key{}, nil, nil
}

func (c *Checker) nextGrace(w *Window, n Node) time.Duration {
	return nextGrace(c.cfg, w.PublishAhead, c.readyLag(n, w.RotationPeriod, w.PublishAhead))
}

// nextGrace is Config.NextGrace or its default: a quarter of publish_ahead,
// but at least the node's readiness lag (readyLag: every node fetches a
// published key following ttl, up to the engine's reader lag, and an
// Agent-fed one reloads after that), and at most 2
// minutes, three quarters of publish_ahead and publish_ahead - Grace, so
// that a missing key is still reported a quarter of publish_ahead (and at
// least Grace) before it activates. The lag wins over a quarter of
// publish_ahead: a shorter grace would report a healthy Agent-fed node at
// every publication whose ttl jitter is large for its publish_ahead.
func nextGrace(cfg Config, publishAhead, lag time.Duration) time.Duration {
	if cfg.NextGrace > 0 {
		return cfg.NextGrace
	}
	return min(max(publishAhead/4, lag), 2*time.Minute, publishAhead*3/4, publishAhead-cfg.Grace)
}

func (c *Checker) retiredFor(w *Window) time.Duration {
	if c.cfg.RetiredFor > 0 {
		return c.cfg.RetiredFor
	}
	return max(w.RotationPeriod, time.Minute)
}

// targets lists the nodes that node i's ticket is offered to this round:
// above MatrixFull, itself and the MatrixSample nodes at offsets
// 1+sampleBase+round*MatrixSample... (mod n-1), so that consecutive rounds
// cover every pair within ceil((n-1)/MatrixSample) rounds and one-shot runs
// start at a random place.
func (c *Checker) targets(i, n, round int) []int {
	if n <= c.cfg.MatrixFull {
		out := make([]int, n)
		for j := range out {
			out[j] = j
		}
		return out
	}
	s := min(c.cfg.MatrixSample, n-1)
	out := []int{i}
	for m := 0; m < s; m++ {
		off := 1 + (c.sampleBase+round*s+m)%(n-1)
		out = append(out, (i+off)%n)
	}
	return out
}

// parallel runs tasks with at most limit at once.
func parallel(limit int, tasks []func()) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for _, t := range tasks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t()
		}()
	}
	wg.Wait()
}

// keyByID finds a key the checker holds: in the window, or retired.
func (c *Checker) keyByID(w *Window, id string) *Key {
	if w != nil {
		if k := w.ByID(id); k != nil {
			return k
		}
	}
	if r := c.retiredByID(id); r != nil {
		return r.key
	}
	return nil
}

// checkCurrent compares the key of a fresh ticket with the schedule.
func (c *Checker) checkCurrent(w *Window, n Node, f *freshTicket, vr *VersionReport) Check {
	if f.keyIDErr != nil {
		if errors.Is(f.keyIDErr, ErrTicketUnknownKey) {
			return Check{Status: StatusFail, Detail: f.keyIDErr.Error()}
		}
		return Check{Status: StatusFail, Detail: "malformed ticket: " + f.keyIDErr.Error()}
	}
	vr.TicketKeyID = f.keyID
	if w == nil {
		vr.TicketKeyState = "unknown"
		return Check{Status: StatusNone, Detail: "window unknown (Vault read failed)"}
	}
	expected := w.KeyAt(f.at)
	k := w.ByID(f.keyID)
	switch {
	case k == nil && c.retiredByID(f.keyID) != nil:
		r := c.retiredByID(f.keyID)
		vr.TicketKeyState = "retired"
		k = r.key
	case k == nil:
		vr.TicketKeyState = "unknown"
	case k == expected:
		vr.TicketKeyState = "current"
	case k.NotBefore.After(f.at):
		vr.TicketKeyState = "next"
	default:
		vr.TicketKeyState = "previous"
	}
	if k != nil {
		s, err := openTicket(c.cfg.Format, f.named, k)
		if err != nil {
			return Check{Status: StatusFail, Detail: fmt.Sprintf("its ticket names key %s but does not decrypt with that key's material: %v", f.keyID, err)}
		}
		s.wipe()
	}
	if pc, ok := c.propagatingCurrent(w, n, f.keyID, f.at); ok && vr.TicketKeyState == "retired" {
		return pc
	}
	return onSchedule(w, f.keyID, f.at, c.switchLag(n, w.RotationPeriod, w.PublishAhead), c.cfg.Grace, vr.TicketKeyState)
}

// checkNext judges whether a node resumed a ticket under the next key.
func (c *Checker) checkNext(w *Window, n Node, nxt *Key, res offerResult, now time.Time) Check {
	if res.resumed {
		return Check{Status: StatusOK}
	}
	published := w.publishedAt(nxt)
	why := "does not resume a ticket under the next key " + nxt.ID
	if res.err != nil {
		why = "could not be offered a ticket under the next key " + nxt.ID + ": " + res.err.Error()
	}
	if until, ok := c.propagatingNext(w, n, nxt); ok && now.Before(until) && now.Before(nxt.NotBefore) {
		return Check{Status: StatusPending, Detail: fmt.Sprintf("%s yet (published %s ago, with or after a rotation outside the schedule; readers pick it up at their next read, by %s)",
			why, now.Sub(published).Round(time.Millisecond), until.UTC().Format(time.RFC3339))}
	}
	if g := c.nextGrace(w, n); now.Before(published.Add(g)) {
		return Check{Status: StatusPending, Detail: fmt.Sprintf("%s yet (published %s ago, grace %s)", why, now.Sub(published).Round(time.Millisecond), g)}
	}
	return Check{Status: StatusFail, Detail: fmt.Sprintf("%s, published at %s, activating at %s (in %s)", why,
		published.UTC().Format(time.RFC3339), nxt.NotBefore.UTC().Format(time.RFC3339), nxt.NotBefore.Sub(now).Round(time.Millisecond))}
}

func summarize(w *Window, now time.Time) *WindowSummary {
	s := &WindowSummary{ReadAt: w.ReadAt, RotationPeriod: int64(w.RotationPeriod / time.Second), PublishAhead: int64(w.PublishAhead / time.Second)}
	if k := w.KeyAt(now); k != nil {
		s.Current = k.ID
	}
	if k := w.NextAfter(now); k != nil {
		s.Next, s.NextActivation = k.ID, k.NotBefore
	}
	for _, k := range w.Keys {
		s.Keys = append(s.Keys, KeySummary{ID: k.ID, State: k.State, PublishAt: w.publishedAt(k), NotBefore: k.NotBefore, NotAfter: k.NotAfter})
	}
	return s
}
