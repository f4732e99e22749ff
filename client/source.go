package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// Errors of NewSource, Refresh and ConfigureServer. Errors that come from a
// Vault response also wrap Vault's *api.ResponseError, so errors.As gives
// its status code and messages.
var (
	// ErrKeyringNotFound: the mount or the keyring does not exist (HTTP 404).
	// NewSource fails at once with it.
	ErrKeyringNotFound = errors.New("ticketkeys: keyring not found")
	// ErrPermissionDenied: the token may not read the keyring (HTTP 403).
	// NewSource retries it until its context ends (see NewSource).
	ErrPermissionDenied = errors.New("ticketkeys: permission denied")
	// ErrClosed: the Source was closed; Refresh and ConfigureServer return it.
	ErrClosed = errors.New("ticketkeys: source closed")
)

// vaultError is an error of a Vault response: a message of this package that
// wraps the package's sentinel (if any) and Vault's *api.ResponseError.
type vaultError struct {
	msg  string
	errs []error
}

func (e *vaultError) Error() string   { return e.msg }
func (e *vaultError) Unwrap() []error { return e.errs }

var keyringNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Source holds the current ticket-key window of one keyring and keeps it up
// to date. Create it with NewSource and wire it into a server's tls.Config
// with ConfigureServer. All methods are safe for concurrent use.
type Source struct {
	client *api.Client
	mount  string
	name   string
	path   string
	o      options
	log    *slog.Logger

	ks atomic.Pointer[keyset] // keys in use; recomputed when validUntil passes

	mu         sync.Mutex // guards the fields below
	window     *Window
	locals     []*localKey // node-local keys of outages, oldest first; only the last may encrypt
	keyCfgs    map[keyCfgID]*tls.Config
	lastOK     time.Time
	lastChange time.Time
	lastErr    error
	lastErrAt  time.Time
	refreshes  uint64
	refreshErr uint64
	failures   int       // consecutive failed background reads
	refreshAt  time.Time // when the next background read is due
	pending    []notice  // logged and observed by emitNotices outside mu

	// readSlot serialises reads (background and Refresh): a read holds its
	// one slot. A channel, not a mutex, so that a Refresh waiting behind a
	// stuck read gives up when its context ends, and the loop when Close
	// cancels it.
	readSlot chan struct{}
	kick     chan struct{} // Refresh moved refreshAt

	hits    [4]atomic.Uint64 // by stateIndex
	misses  atomic.Uint64
	issued  atomic.Uint64
	updated chan struct{}

	// Tickets of the previous release's format (no key name) that
	// decrypted: see WithLegacyTicketsUntil.
	legacyHits atomic.Uint64
	// decryptAttempts counts ticket decryption attempts (DecryptTicket
	// calls), so that tests bound the cost of a ticket without timing it.
	decryptAttempts atomic.Uint64
	// inert names the undecryptable tickets issued while tickets are
	// disabled; it is never a key's name.
	inert keyName

	closeOnce sync.Once
	closing   chan struct{}
	done      chan struct{}
	// life ends at Close: it cancels the background loop's read and any
	// Refresh's read in flight, so Close never waits for a stuck Vault.
	life   context.Context
	cancel context.CancelFunc
}

// keyCfgID identifies a key's private config: its id and its material, so
// that a window bringing a known id with other material gets a new config.
type keyCfgID struct {
	id       string
	material [goKeySize]byte
}

// notice is a key change recorded under mu, logged and passed to the Advance
// observer by emitNotices once mu is released: a log handler or observer
// that calls Status (or takes a lock a handshake also takes) cannot deadlock.
type notice struct {
	level slog.Level
	msg   string
	attrs []slog.Attr
	ev    AdvanceEvent
}

// encryptingLocal returns the local key that encrypts, or nil.
func (s *Source) encryptingLocal() *localKey {
	if n := len(s.locals); n > 0 && s.locals[n-1].encrypting {
		return s.locals[n-1]
	}
	return nil
}

// localKey is the node-local random key of an exhaustion episode.
type localKey struct {
	name       keyName // random; never in a window
	cfg        *tls.Config
	seed       [32]byte // the key itself, for TicketKeys (keys.go)
	created    time.Time
	encrypting bool
	notAfter   time.Time // set when the episode ends
}

// activeKey is one key in use at a given time.
type activeKey struct {
	state    KeyState
	id       string  // empty for the local key
	name     keyName // in front of every ticket this key makes
	cfg      *tls.Config
	notAfter time.Time
}

// keyset is the immutable set of keys in use during [computedAt, validUntil).
type keyset struct {
	computedAt       time.Time
	validUntil       time.Time
	current          *activeKey             // encrypts (the local key while exhausted); nil only while tickets are disabled
	decrypt          []*activeKey           // current, next by activation, previous newest first, local
	byName           map[keyName]*activeKey // the decrypt keys by name
	exhausted        bool
	ticketsDisabled  bool
	currentNotBefore time.Time
	encryptUntil     time.Time
	nextActivation   time.Time
	counts           map[KeyState]int
}

func stateIndex(s KeyState) int {
	switch s {
	case StateCurrent:
		return 0
	case StateNext:
		return 1
	case StatePrevious:
		return 2
	default:
		return 3
	}
}

// NewSource reads the keyring name at mount (for example "ticketkeys")
// through c in the `go` format, and returns once it holds a first valid
// window. It retries transient errors (network, 5xx, malformed windows) with
// backoff until ctx ends, and fails at once when retrying cannot help: a
// missing mount or keyring (ErrKeyringNotFound) or a request Vault refuses
// (HTTP 400, for example an engine without the go format).
//
// A 403 (ErrPermissionDenied) is retried too, until ctx ends: a Vault Agent
// or Proxy sidecar often starts after the server and answers 403 until its
// auto-auth has logged in, and a token set by KeepLogin may arrive late. A
// token that truly lacks the policy therefore fails NewSource only when ctx
// ends, with an error that wraps ErrPermissionDenied, Vault's response and
// the context's error; give ctx a deadline (each retry is logged at Warn).
// When KeepLogin keeps c logged in, a refused read first has it log in again
// (rate-limited; see KeepLogin), at start-up as later.
//
// Authentication is the caller's: c carries the token (set it directly, use
// KeepLogin with an auth method, or point c at a local Vault Agent or Proxy,
// for example with VAULT_AGENT_ADDR, which api.DefaultConfig reads). c must
// not be changed to another Vault by the caller afterwards.
//
// ctx bounds only the first read; the Source then refreshes in the
// background until Close.
func NewSource(ctx context.Context, c *api.Client, mount, name string, opts ...Option) (*Source, error) {
	if c == nil {
		return nil, errors.New("ticketkeys: client: required, got nil")
	}
	mount = strings.Trim(mount, "/")
	if mount == "" {
		return nil, errors.New(`ticketkeys: mount: required, got ""`)
	}
	if !keyringNameRE.MatchString(name) {
		return nil, fmt.Errorf("ticketkeys: name: must be 1-128 characters of A-Z a-z 0-9 _ - . starting with a letter or digit, got %q", name)
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	s := &Source{
		client:   c,
		mount:    mount,
		name:     name,
		path:     mount + "/keys/" + name,
		o:        o,
		log:      o.logger.With(slog.String("component", "ticketkeys"), slog.String("keyring", mount+"/"+name)),
		keyCfgs:  map[keyCfgID]*tls.Config{},
		updated:  make(chan struct{}, 1),
		kick:     make(chan struct{}, 1),
		readSlot: make(chan struct{}, 1),
		inert:    randomName(),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	if lu := o.legacyUntil; !lu.IsZero() {
		if now := o.clock.Now(); lu.After(now.Add(maxKeyLifetime)) {
			return nil, fmt.Errorf("ticketkeys: WithLegacyTicketsUntil: must be at most %s after now (%s; every ticket of the previous release has expired by then), got %s; set it to the end of the rolling upgrade",
				maxKeyLifetime, now.UTC().Format(time.RFC3339), lu.UTC().Format(time.RFC3339))
		}
	}

	var lastErr error
	noWindow := func() error {
		return fmt.Errorf("ticketkeys: no valid window from %s before the context ended (%w); last error: %w", s.path, ctx.Err(), lastErr)
	}
	for attempt := 1; ; attempt++ {
		start := s.o.clock.Now()
		w, err := s.fetchLoggedIn(ctx)
		if err == nil {
			now := s.o.clock.Now()
			wait := s.refreshWait(w, now)
			s.swap(w, now, wait)
			s.notifyRefresh(RefreshEvent{Time: now, Duration: now.Sub(start), Changed: true, NextRefresh: wait})
			s.log.Info("first ticket-key window read", slog.Int("keys", len(w.Keys)), slog.Duration("next_refresh", wait))
			s.life, s.cancel = context.WithCancel(context.Background())
			go s.loop(s.life)
			return s, nil
		}
		if ctx.Err() != nil && lastErr != nil {
			// This read was cut by the caller's deadline: the error worth
			// reporting is the last one Vault actually gave.
			return nil, noWindow()
		}
		lastErr = err
		s.recordError(err, s.o.clock.Now())
		if errors.Is(err, ErrKeyringNotFound) || isBadRequest(err) {
			return nil, err
		}
		wait := s.backoff(attempt)
		msg := "first read of the ticket-key window failed; retrying"
		if errors.Is(err, ErrPermissionDenied) {
			msg = "first read of the ticket-key window refused (HTTP 403); retrying until the start-up deadline, in case a Vault Agent or login is not ready yet"
		}
		s.log.Warn(msg, slog.Int("attempt", attempt), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
		ch, stop := s.o.clock.After(wait)
		select {
		case <-ctx.Done():
			stop()
			return nil, noWindow()
		case <-ch:
		}
	}
}

func isBadRequest(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest
}

// fetch reads and validates one window.
func (s *Source) fetch(ctx context.Context) (*Window, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.fetchTimeout)
	defer cancel()
	sec, err := s.client.Logical().ReadWithDataWithContext(ctx, s.path, map[string][]string{"format": {"go"}})
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) {
			detail := strings.Join(re.Errors, "; ")
			switch re.StatusCode {
			case http.StatusForbidden:
				return nil, &vaultError{fmt.Sprintf("%v: reading %s: the token may not read it (HTTP 403: %s)", ErrPermissionDenied, s.path, detail),
					[]error{ErrPermissionDenied, re}}
			case http.StatusNotFound:
				return nil, &vaultError{fmt.Sprintf("%v: %s (HTTP 404)", ErrKeyringNotFound, s.path), []error{ErrKeyringNotFound, re}}
			}
			return nil, &vaultError{fmt.Sprintf("ticketkeys: reading %s: HTTP %d: %s", s.path, re.StatusCode, detail), []error{re}}
		}
		return nil, fmt.Errorf("ticketkeys: reading %s: %w", s.path, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("%w: %s (no data: unknown mount or keyring)", ErrKeyringNotFound, s.path)
	}
	raw, err := json.Marshal(sec.Data)
	if err != nil {
		return nil, fmt.Errorf("ticketkeys: reading %s: re-encoding response data: %v", s.path, err)
	}
	w, err := decodeWindow(raw)
	clear(raw)
	if err != nil {
		return nil, fmt.Errorf("ticketkeys: reading %s: invalid %w", s.path, err)
	}
	if w.Name != s.name {
		return nil, fmt.Errorf("ticketkeys: reading %s: invalid window: name: must be %q, got %q", s.path, s.name, w.Name)
	}
	return w, nil
}

// fetchLoggedIn is fetch, and when the read is refused (HTTP 403) and a
// KeepLogin keeps the Source's client logged in, a new login (rate-limited
// by the Login) and a second read: a revoked token is replaced at the first
// refused read, before the Source gives up the read and, in time, the
// shared keys.
func (s *Source) fetchLoggedIn(ctx context.Context) (*Window, error) {
	w, err := s.fetch(ctx)
	if err == nil || !errors.Is(err, ErrPermissionDenied) {
		return w, err
	}
	l := loginFor(s.client)
	if l == nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, s.o.fetchTimeout)
	ok := l.reloginAfterDenied(lctx)
	cancel()
	if !ok {
		return nil, err
	}
	s.log.Info("logged in again after a refused keyring read; reading again")
	return s.fetch(ctx)
}

// refreshWait is the wait after a good read at now. The window only changes
// after its ttl, so the Source reads at the ttl plus a small positive jitter;
// but also, whatever the ttl, ahead of the end of the schedule it holds (the
// last published key's encrypt_until), by half the publish_ahead before it
// (the next key is readable from publish_ahead before that instant), minus a
// jitter. The wait is capped by WithMaxRefreshInterval, minus a jitter, so a
// fleet started together does not read in lockstep. Every jitter is drawn up
// to schedule.GoClientDelayMax, the delay the engine's publish_ahead check
// counts on.
func (s *Source) refreshWait(w *Window, now time.Time) time.Duration {
	jit := func(d time.Duration) time.Duration {
		return s.o.jitter(schedule.GoClientDelayMax(d))
	}
	wait := w.TTL + jit(w.TTL)
	if len(w.Keys) > 0 {
		end := w.encryptEnd(len(w.Keys) - 1)
		ahead := end.Add(-w.PublishAhead / 2).Sub(now)
		if ahead >= time.Second && ahead < wait {
			wait = max(ahead-jit(ahead), time.Second)
		}
	}
	if wait > s.o.maxRefresh {
		wait = s.o.maxRefresh - jit(s.o.maxRefresh)
	}
	return max(wait, 0)
}

// backoff is the wait after the attempt-th consecutive failure: capped
// exponential with jitter over its upper half.
func (s *Source) backoff(attempt int) time.Duration {
	d := s.o.backoffMin
	for i := 1; i < attempt && d < s.o.backoffMax; i++ {
		d *= 2
	}
	d = min(d, s.o.backoffMax)
	return d/2 + s.o.jitter(d/2)
}

func randomJitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return time.Duration(mrand.Int64N(int64(max) + 1))
}

// loop reads the keyring when the next refresh is due (see refreshWait; or
// backs off on errors) and advances the keys in use at every activation and
// retirement time, until Close. Refresh moves the next refresh and kicks the
// loop.
func (s *Source) loop(ctx context.Context) {
	defer close(s.done)
	for {
		now := s.o.clock.Now()
		ks := s.keysetAt(now)
		wait := max(min(ks.validUntil.Sub(now), s.nextRefresh().Sub(now)), 0)
		ch, stop := s.o.clock.After(wait)
		select {
		case <-s.closing:
			stop()
			return
		case <-s.kick:
			stop()
			continue
		case <-ch:
		}
		if now := s.o.clock.Now(); !now.Before(s.nextRefresh()) {
			// A read never holds the loop past the next local key change: a read held up (a Vault Agent
			// or Proxy that retries while Vault is down) is cut there, by the Source's clock, so the keys
			// switch at the published instant, and the read is retried after the switch.
			rctx, cancel := context.WithCancel(ctx)
			stopCut := func() {}
			if d := s.keysetAt(now).validUntil.Sub(now); d > 0 {
				stopCut = s.o.clock.AfterFunc(d, cancel)
			}
			err := s.read(rctx, false)
			stopCut()
			cancel()
			if err != nil && ctx.Err() != nil {
				return
			}
		}
		s.keysetAt(s.o.clock.Now())
	}
}

func (s *Source) nextRefresh() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshAt
}

// Refresh reads the keyring now, as the background loop would, and returns
// once the window read is in use (or the read failed: the last good window
// stays in use and the error is returned, wrapping Vault's response if
// any). The next background read is then due after the new window's ttl.
// Use it after an emergency rotation (rotate mode=now purge_previous=true) to
// drop a purged key without waiting for the ttl. It returns ErrClosed after
// Close, and when Close is called while it reads.
//
// Reads are serialised: if another read is in progress (the background one,
// or another Refresh), Refresh waits for it, but never past ctx: when ctx
// ends first it returns an error wrapping ctx.Err() and reads nothing. Give
// ctx a deadline shorter than WithFetchTimeout if a stuck Vault must not
// hold the caller that long.
func (s *Source) Refresh(ctx context.Context) error {
	select {
	case <-s.closing:
		return fmt.Errorf("%w: Refresh: create a new Source", ErrClosed)
	default:
	}
	// The read ends when ctx ends or when Close is called, whichever comes
	// first: Close cancels a Refresh in flight rather than waiting for it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	if err := s.read(ctx, true); err != nil {
		if s.life.Err() != nil {
			return fmt.Errorf("%w: Refresh: the Source was closed during the read (%v)", ErrClosed, err)
		}
		return err
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// read fetches, validates and swaps in one window, serialised with other
// reads so that an older answer never replaces a newer one. A failed
// background read backs off; a failed Refresh leaves the schedule alone.
func (s *Source) read(ctx context.Context, manual bool) error {
	select {
	case s.readSlot <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("ticketkeys: reading %s: gave up waiting for another read of it in progress: %w", s.path, ctx.Err())
	}
	defer func() { <-s.readSlot }()
	start := s.o.clock.Now()
	w, err := s.fetchLoggedIn(ctx)
	now := s.o.clock.Now()
	if err != nil {
		if !manual && ctx.Err() != nil {
			return err // closing
		}
		s.mu.Lock()
		s.lastErr, s.lastErrAt = err, now
		s.refreshErr++
		wait := time.Duration(0)
		if !manual {
			s.failures++
			wait = s.backoff(s.failures)
			s.refreshAt = now.Add(wait)
		}
		failures := s.failures
		s.mu.Unlock()
		if manual {
			s.log.Warn("ticket-key window refresh (Refresh) failed; keeping the last good window", slog.String("error", err.Error()))
		} else {
			s.log.Error("ticket-key window refresh failed; keeping the last good window",
				slog.Int("consecutive_failures", failures), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
		}
		s.notifyRefresh(RefreshEvent{Time: now, Duration: now.Sub(start), Err: err, NextRefresh: s.nextRefresh().Sub(now)})
		return err
	}
	s.mu.Lock()
	failures := s.failures
	s.mu.Unlock()
	if failures > 0 {
		s.log.Info("ticket-key window refresh recovered", slog.Int("failed_attempts", failures))
	}
	wait := s.refreshWait(w, now)
	changed := s.swap(w, now, wait)
	if changed {
		s.log.Info("ticket-key window changed", slog.Int("keys", len(w.Keys)), slog.Duration("next_refresh", wait))
	} else {
		s.log.Debug("ticket-key window unchanged", slog.Duration("next_refresh", wait))
	}
	s.notifyRefresh(RefreshEvent{Time: now, Duration: now.Sub(start), Changed: changed, NextRefresh: wait})
	return nil
}

func (s *Source) recordError(err error, now time.Time) {
	s.mu.Lock()
	s.lastErr = err
	s.lastErrAt = now
	s.refreshErr++
	s.mu.Unlock()
}

func (s *Source) notifyRefresh(ev RefreshEvent) {
	if s.o.observer.Refresh != nil {
		s.o.observer.Refresh(ev)
	}
}

// swap installs w if it differs from the held window and reports whether it
// did. The status and the next refresh (now+wait) are updated either way.
func (s *Source) swap(w *Window, now time.Time, wait time.Duration) bool {
	s.mu.Lock()
	s.lastOK = now
	s.lastErr = nil
	s.refreshes++
	s.failures = 0
	s.refreshAt = now.Add(wait)
	if s.window.sameKeys(w) {
		s.window.TTL = w.TTL
		s.mu.Unlock()
		return false
	}
	s.window = w
	s.lastChange = now
	// Drop private configs of keys that left the window.
	live := make(map[keyCfgID]bool, len(w.Keys))
	for _, k := range w.Keys {
		live[keyCfgID{k.ID, k.material}] = true
	}
	for id := range s.keyCfgs {
		if !live[id] {
			delete(s.keyCfgs, id)
		}
	}
	s.recomputeLocked(now, "refresh")
	s.mu.Unlock()
	s.emitNotices()
	return true
}

// emitNotices logs and reports the key changes recorded under mu, once mu
// is released.
func (s *Source) emitNotices() {
	s.mu.Lock()
	ns := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, n := range ns {
		if n.msg != "" {
			s.log.LogAttrs(context.Background(), n.level, n.msg, n.attrs...)
		}
		if s.o.observer.Advance != nil {
			s.o.observer.Advance(n.ev)
		}
	}
}

// keysetAt returns the keys in use at now, recomputing them when a key's
// activation, end of encryption or not_after has passed since the last
// computation. This check on every handshake is what guarantees that no key
// is used past its not_after even if the timer goroutine runs late.
//
// The key set never moves backwards: a handshake whose clock reading is
// earlier than the instant of the set already in use (it read the clock
// before another handshake that got here first) uses that newer set, so no
// key change is undone and redone, and an exhaustion episode keeps its one
// local key.
//
// A reading earlier than the set's instant by clockStepTolerance or more is
// not such a race but the wall clock stepped back: the keys are recomputed
// at that reading, and the next read of Vault is made at once, so a node
// whose clock was briefly ahead (and perhaps exhausted there) is back on the
// shared keys as soon as its clock is.
func (s *Source) keysetAt(now time.Time) *keyset {
	if ks := s.ks.Load(); ks != nil && ks.covers(now) {
		return ks
	}
	s.mu.Lock()
	ks := s.ks.Load()
	if ks != nil && ks.covers(now) {
		s.mu.Unlock()
		return ks
	}
	steppedBack := ks != nil && clockSteppedBack(now, ks.computedAt)
	if steppedBack && s.refreshAt.After(now) {
		s.refreshAt = now
	}
	ks = s.recomputeLocked(now, "schedule")
	s.mu.Unlock()
	if steppedBack {
		select {
		case s.kick <- struct{}{}: // the loop re-plans: read now
		default:
		}
	}
	s.emitNotices()
	return ks
}

// clockStepTolerance separates a race between handshakes (one read the clock
// a moment before another got the key set) from a step of the wall clock: a
// reading this much earlier than a key set's instant is a step back.
const clockStepTolerance = time.Second

// clockSteppedBack reports whether a reading at now, taken after something
// was computed at then, means that the wall clock stepped back.
func clockSteppedBack(now, then time.Time) bool {
	return now.Before(then.Add(-clockStepTolerance))
}

// covers reports whether ks holds the keys in use at now: now is before its
// validUntil and not so far before its instant that the clock stepped back.
func (ks *keyset) covers(now time.Time) bool {
	return now.Before(ks.validUntil) && !clockSteppedBack(now, ks.computedAt)
}

// keyConfigLocked returns the private tls.Config holding only k, which is
// used for its EncryptTicket/DecryptTicket.
func (s *Source) keyConfigLocked(k *Key) *tls.Config {
	id := keyCfgID{k.ID, k.material}
	if c, ok := s.keyCfgs[id]; ok {
		return c
	}
	c := keyConfig(k.material)
	s.keyCfgs[id] = c
	return c
}

// recomputeLocked derives the keys in use at now from the held window, the
// way every node does, so all nodes switch at the same instants without
// talking to Vault.
func (s *Source) recomputeLocked(now time.Time, reason string) *keyset {
	w := s.window
	prev := s.ks.Load()
	if prev != nil && now.Before(prev.computedAt) && !clockSteppedBack(now, prev.computedAt) {
		now = prev.computedAt // never backwards, unless the clock stepped back (see keysetAt)
	}
	ks := &keyset{computedAt: now, validUntil: now.Add(24 * time.Hour), counts: map[KeyState]int{}}
	soonest := func(t time.Time) {
		if t.After(now) && t.Before(ks.validUntil) {
			ks.validUntil = t
		}
	}

	// The encrypting key, by the schedule package's rule (zero-length keys
	// never encrypt); the set is recomputed at the window's next change.
	sw := w.rules()
	cur := sw.EncryptingAt(now)
	if t, ok := sw.NextChange(now); ok {
		soonest(t)
	}
	if cur < 0 && len(w.Keys) > 0 && now.Before(w.Keys[0].NotBefore) {
		// The local clock is behind Vault's: nothing has activated here yet.
		// Use the key Vault called current, so this node issues tickets the
		// others accept.
		for i := range w.Keys {
			if w.Keys[i].State == StateCurrent && now.Before(w.Keys[i].NotAfter) {
				cur = i
			}
		}
	}

	if cur >= 0 {
		k := &w.Keys[cur]
		ks.current = &activeKey{state: StateCurrent, id: k.ID, name: k.name, cfg: s.keyConfigLocked(k), notAfter: k.NotAfter}
		ks.decrypt = append(ks.decrypt, ks.current)
		ks.currentNotBefore = k.NotBefore
		ks.encryptUntil = sw.EncryptEnd(cur)
	}
	// Next keys by activation, then previous keys newest first.
	for i := range w.Keys {
		k := &w.Keys[i]
		if i != cur && k.NotBefore.After(now) && sw.Decrypts(i, now) {
			ks.decrypt = append(ks.decrypt, &activeKey{state: StateNext, id: k.ID, name: k.name, cfg: s.keyConfigLocked(k), notAfter: k.NotAfter})
			if ks.nextActivation.IsZero() {
				ks.nextActivation = k.NotBefore
			}
		}
	}
	for i := len(w.Keys) - 1; i >= 0; i-- {
		k := &w.Keys[i]
		if i != cur && !k.NotBefore.After(now) && sw.Decrypts(i, now) {
			ks.decrypt = append(ks.decrypt, &activeKey{state: StatePrevious, id: k.ID, name: k.name, cfg: s.keyConfigLocked(k), notAfter: k.NotAfter})
		}
	}

	// Exhaustion: no published key may encrypt.
	ks.exhausted = cur < 0
	switch {
	case ks.exhausted && s.o.disableTickets:
		// No key encrypts or decrypts: see WithDisableTicketsOnExhaustion.
		ks.ticketsDisabled = true
	case ks.exhausted:
		// One local key per outage: it is made once and encrypts until the
		// outage ends (or, past 168h, is replaced by a fresh one).
		if lk := s.encryptingLocal(); lk == nil || !now.Before(lk.created.Add(maxKeyLifetime)) {
			if lk != nil {
				lk.encrypting, lk.notAfter = false, now
			}
			var seed [32]byte
			if _, err := rand.Read(seed[:]); err != nil {
				panic("ticketkeys: crypto/rand failed: " + err.Error())
			}
			c := keyConfig(seed)
			s.locals = append(s.locals, &localKey{name: randomName(), cfg: c, seed: seed, created: now, encrypting: true})
			clear(seed[:])
		}
	default:
		// An outage ended: its local key decrypts for the keyring's retain.
		if lk := s.encryptingLocal(); lk != nil {
			lk.encrypting = false
			lk.notAfter = now.Add(w.Retain)
			if lim := lk.created.Add(maxKeyLifetime); lk.notAfter.After(lim) {
				lk.notAfter = lim
			}
		}
	}
	// Local keys, newest first: the encrypting one, then those of earlier
	// outages until their not_after (a new outage never drops them).
	live := s.locals[:0]
	for _, lk := range s.locals {
		if lk.encrypting || now.Before(lk.notAfter) {
			live = append(live, lk)
		}
	}
	clear(s.locals[len(live):])
	s.locals = live
	for i := len(s.locals) - 1; i >= 0; i-- {
		lk := s.locals[i]
		ak := &activeKey{state: StateLocal, name: lk.name, cfg: lk.cfg, notAfter: lk.notAfter}
		if lk.encrypting {
			ak.notAfter = lk.created.Add(maxKeyLifetime)
			ks.current = ak
		}
		ks.decrypt = append(ks.decrypt, ak)
		soonest(ak.notAfter)
	}
	ks.byName = make(map[keyName]*activeKey, len(ks.decrypt))
	for _, k := range ks.decrypt {
		ks.counts[k.state]++
		ks.byName[k.name] = k
	}
	s.ks.Store(ks)

	// Report transitions (states and counts only), once mu is released.
	if prev == nil || prev.exhausted != ks.exhausted || curID(prev) != curID(ks) || !sameDecrypt(prev, ks) {
		n := notice{level: slog.LevelDebug}
		switch {
		case ks.exhausted && (prev == nil || !prev.exhausted):
			reason = "exhausted"
			n.level = slog.LevelError
			if s.o.disableTickets {
				n.msg = "ticket-key schedule exhausted: no published key may encrypt and Vault could not be read; session tickets are disabled until it can"
			} else {
				n.msg = "ticket-key schedule exhausted: no published key may encrypt and Vault could not be read; using a node-local random key (resumption stays on this node)"
			}
		case !ks.exhausted && prev != nil && prev.exhausted:
			reason = "recovered"
			n.level, n.msg = slog.LevelInfo, "ticket-key schedule recovered: published keys encrypt again"
		case reason == "schedule":
			n.level, n.msg = slog.LevelInfo, "ticket keys advanced on schedule"
			n.attrs = []slog.Attr{slog.Int("current", ks.counts[StateCurrent]), slog.Int("next", ks.counts[StateNext]),
				slog.Int("previous", ks.counts[StatePrevious]), slog.Int("local", ks.counts[StateLocal])}
		}
		select {
		case s.updated <- struct{}{}:
		default:
		}
		counts := make(map[KeyState]int, len(ks.counts))
		for k, v := range ks.counts {
			counts[k] = v
		}
		n.ev = AdvanceEvent{Time: now, Reason: reason, Exhausted: ks.exhausted, Keys: counts}
		if n.msg != "" || s.o.observer.Advance != nil {
			s.pending = append(s.pending, n)
		}
	}
	return ks
}

func curID(ks *keyset) string {
	if ks.current == nil {
		return ""
	}
	if ks.current.state == StateLocal {
		return "local"
	}
	return ks.current.id
}

func sameDecrypt(a, b *keyset) bool {
	if len(a.decrypt) != len(b.decrypt) {
		return false
	}
	for i := range a.decrypt {
		if a.decrypt[i].cfg != b.decrypt[i].cfg || a.decrypt[i].state != b.decrypt[i].state {
			return false
		}
	}
	return true
}

// Updated returns a channel that receives (without blocking the Source,
// coalesced) whenever the keys in use change: a new window, a local
// activation or retirement, exhaustion or recovery.
func (s *Source) Updated() <-chan struct{} { return s.updated }

// Status returns a snapshot of the Source.
func (s *Source) Status() Status {
	now := s.o.clock.Now()
	ks := s.keysetAt(now)
	s.mu.Lock()
	st := Status{
		Now:              now,
		Exhausted:        ks.exhausted,
		TicketsDisabled:  ks.ticketsDisabled,
		CurrentNotBefore: ks.currentNotBefore,
		EncryptUntil:     ks.encryptUntil,
		NextActivation:   ks.nextActivation,
		Keys:             make(map[KeyState]int, len(ks.counts)),
		LastRefresh:      s.lastOK,
		LastChange:       s.lastChange,
		LastError:        s.lastErr,
		LastErrorTime:    s.lastErrAt,
		Refreshes:        s.refreshes,
		RefreshErrors:    s.refreshErr,
	}
	s.mu.Unlock()
	if !ks.exhausted && ks.current != nil {
		st.CurrentID = ks.current.id
	}
	for k, v := range ks.counts {
		st.Keys[k] = v
	}
	st.Tickets = TicketCounts{
		Current:  s.hits[0].Load(),
		Next:     s.hits[1].Load(),
		Previous: s.hits[2].Load(),
		Local:    s.hits[3].Load(),
		Miss:     s.misses.Load(),
		Issued:   s.issued.Load(),
		Legacy:   s.legacyHits.Load(),
	}
	if s.acceptsLegacy(now) {
		st.LegacyUntil = s.o.legacyUntil
	}
	return st
}

// Window returns the last good window (without key material); nil after
// nothing was read, which NewSource never returns.
func (s *Source) Window() *Window {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.window == nil {
		return nil
	}
	w := *s.window
	w.Keys = make([]Key, len(s.window.Keys))
	for i, k := range s.window.Keys {
		k.material = [goKeySize]byte{}
		w.Keys[i] = k
	}
	return &w
}

// Close stops the background refresh and timers, and cancels any read in
// flight (a Refresh in progress returns ErrClosed), so it returns promptly
// even while Vault does not answer. The keys in use stay usable by servers
// still running (they are derived from the last window and the clock), so
// Close can run before the server shuts down. Close is idempotent and always
// returns nil.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		if s.cancel != nil {
			s.cancel()
			<-s.done
		}
	})
	return nil
}
