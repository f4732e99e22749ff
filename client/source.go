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
)

// Errors the constructor returns for problems that retrying cannot fix.
var (
	// ErrKeyringNotFound: the mount or the keyring does not exist (HTTP 404).
	ErrKeyringNotFound = errors.New("ticketkeys: keyring not found")
	// ErrPermissionDenied: the token may not read the keyring (HTTP 403).
	ErrPermissionDenied = errors.New("ticketkeys: permission denied")
	// ErrClosed: the Source was closed.
	ErrClosed = errors.New("ticketkeys: source closed")
)

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
	local      *localKey
	keyCfgs    map[string]*tls.Config
	lastOK     time.Time
	lastChange time.Time
	lastErr    error
	lastErrAt  time.Time
	refreshes  uint64
	refreshErr uint64
	pending    []AdvanceEvent // emitted by emitAdvances outside mu

	hits    [4]atomic.Uint64 // by stateIndex
	misses  atomic.Uint64
	issued  atomic.Uint64
	updated chan struct{}

	closeOnce sync.Once
	closing   chan struct{}
	done      chan struct{}
	cancel    context.CancelFunc
}

// localKey is the node-local random key of an exhaustion episode.
type localKey struct {
	cfg        *tls.Config
	seed       [32]byte // the key itself, for TicketKeys (keys.go)
	created    time.Time
	encrypting bool
	notAfter   time.Time // set when the episode ends
}

// activeKey is one key in use at a given time.
type activeKey struct {
	state    KeyState
	id       string // empty for the local key
	cfg      *tls.Config
	notAfter time.Time
}

// keyset is the immutable set of keys in use during [computedAt, validUntil).
type keyset struct {
	computedAt       time.Time
	validUntil       time.Time
	current          *activeKey   // encrypts (the local key while exhausted); never nil
	decrypt          []*activeKey // current, next by activation, previous newest first, local
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
// backoff until ctx ends; it fails at once with ErrKeyringNotFound or
// ErrPermissionDenied (wrapped) when retrying cannot help.
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
		client:  c,
		mount:   mount,
		name:    name,
		path:    mount + "/keys/" + name,
		o:       o,
		log:     o.logger.With(slog.String("component", "ticketkeys"), slog.String("keyring", mount+"/"+name)),
		keyCfgs: map[string]*tls.Config{},
		updated: make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}

	var lastErr error
	noWindow := func() error {
		return fmt.Errorf("ticketkeys: no valid window from %s before the context ended (%v); last error: %w", s.path, ctx.Err(), lastErr)
	}
	for attempt := 1; ; attempt++ {
		start := s.o.clock.Now()
		w, err := s.fetch(ctx)
		if err == nil {
			now := s.o.clock.Now()
			wait := s.refreshWait(w)
			s.swap(w, now)
			s.notifyRefresh(RefreshEvent{Time: now, Duration: now.Sub(start), Changed: true, NextRefresh: wait})
			s.log.Info("first ticket-key window read", slog.Int("keys", len(w.Keys)), slog.Duration("next_refresh", wait))
			loopCtx, cancel := context.WithCancel(context.Background())
			s.cancel = cancel
			go s.loop(loopCtx, now.Add(wait))
			return s, nil
		}
		if ctx.Err() != nil && lastErr != nil {
			// This read was cut by the caller's deadline: the error worth
			// reporting is the last one Vault actually gave.
			return nil, noWindow()
		}
		lastErr = err
		s.recordError(err, s.o.clock.Now())
		if errors.Is(err, ErrKeyringNotFound) || errors.Is(err, ErrPermissionDenied) || isBadRequest(err) {
			return nil, err
		}
		wait := s.backoff(attempt)
		s.log.Warn("first read of the ticket-key window failed; retrying", slog.Int("attempt", attempt), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
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
			switch re.StatusCode {
			case http.StatusForbidden:
				return nil, fmt.Errorf("%w: reading %s: the token may not read it (HTTP 403)", ErrPermissionDenied, s.path)
			case http.StatusNotFound:
				return nil, fmt.Errorf("%w: %s (HTTP 404)", ErrKeyringNotFound, s.path)
			}
			return nil, fmt.Errorf("ticketkeys: reading %s: HTTP %d: %s", s.path, re.StatusCode, strings.Join(re.Errors, "; "))
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

// refreshWait is the wait after a good read: the window's ttl plus a small
// positive jitter (the window only changes after ttl), capped.
func (s *Source) refreshWait(w *Window) time.Duration {
	j := w.TTL / 20
	j = min(max(j, 100*time.Millisecond), 5*time.Second)
	return min(w.TTL+s.o.jitter(j), s.o.maxRefresh)
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

// loop refreshes at the window's ttl (or backs off on errors) and advances
// the keys in use at every activation and retirement time, until Close.
func (s *Source) loop(ctx context.Context, refreshAt time.Time) {
	defer close(s.done)
	failures := 0
	for {
		now := s.o.clock.Now()
		ks := s.keysetAt(now)
		wait := max(min(ks.validUntil.Sub(now), refreshAt.Sub(now)), 0)
		ch, stop := s.o.clock.After(wait)
		select {
		case <-s.closing:
			stop()
			return
		case <-ch:
		}
		now = s.o.clock.Now()
		if !now.Before(refreshAt) {
			start := now
			w, err := s.fetch(ctx)
			now = s.o.clock.Now()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				failures++
				s.recordError(err, now)
				wait := s.backoff(failures)
				refreshAt = now.Add(wait)
				s.log.Error("ticket-key window refresh failed; keeping the last good window",
					slog.Int("consecutive_failures", failures), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
				s.notifyRefresh(RefreshEvent{Time: now, Duration: now.Sub(start), Err: err, NextRefresh: wait})
			} else {
				if failures > 0 {
					s.log.Info("ticket-key window refresh recovered", slog.Int("failed_attempts", failures))
				}
				failures = 0
				wait := s.refreshWait(w)
				refreshAt = now.Add(wait)
				changed := s.swap(w, now)
				if changed {
					s.log.Info("ticket-key window changed", slog.Int("keys", len(w.Keys)), slog.Duration("next_refresh", wait))
				} else {
					s.log.Debug("ticket-key window unchanged", slog.Duration("next_refresh", wait))
				}
				s.notifyRefresh(RefreshEvent{Time: now, Duration: now.Sub(start), Changed: changed, NextRefresh: wait})
			}
		}
		s.keysetAt(s.o.clock.Now())
	}
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
// did. The status is updated either way.
func (s *Source) swap(w *Window, now time.Time) bool {
	s.mu.Lock()
	s.lastOK = now
	s.lastErr = nil
	s.refreshes++
	if s.window.sameKeys(w) {
		s.window.TTL = w.TTL
		s.mu.Unlock()
		return false
	}
	s.window = w
	s.lastChange = now
	// Drop private configs of keys that left the window.
	live := make(map[string]bool, len(w.Keys))
	for _, k := range w.Keys {
		live[k.ID] = true
	}
	for id := range s.keyCfgs {
		if !live[id] {
			delete(s.keyCfgs, id)
		}
	}
	s.recomputeLocked(now, "refresh")
	s.mu.Unlock()
	s.emitAdvances()
	return true
}

// emitAdvances calls the Advance observer for changes recorded under mu, so
// that an observer may call Status without deadlocking.
func (s *Source) emitAdvances() {
	if s.o.observer.Advance == nil {
		return
	}
	s.mu.Lock()
	evs := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, ev := range evs {
		s.o.observer.Advance(ev)
	}
}

// keysetAt returns the keys in use at now, recomputing them when a key's
// activation, end of encryption or not_after has passed since the last
// computation. This check on every handshake is what guarantees that no key
// is used past its not_after even if the timer goroutine runs late.
func (s *Source) keysetAt(now time.Time) *keyset {
	if ks := s.ks.Load(); ks != nil && now.Before(ks.validUntil) && !now.Before(ks.computedAt) {
		return ks
	}
	s.mu.Lock()
	if ks := s.ks.Load(); ks != nil && now.Before(ks.validUntil) && !now.Before(ks.computedAt) {
		s.mu.Unlock()
		return ks
	}
	ks := s.recomputeLocked(now, "schedule")
	s.mu.Unlock()
	s.emitAdvances()
	return ks
}

// keyConfigLocked returns the private tls.Config holding only k, which is
// used for its EncryptTicket/DecryptTicket.
func (s *Source) keyConfigLocked(k *Key) *tls.Config {
	if c, ok := s.keyCfgs[k.ID]; ok {
		return c
	}
	c := &tls.Config{}
	c.SetSessionTicketKeys([][32]byte{k.material})
	s.keyCfgs[k.ID] = c
	return c
}

// recomputeLocked derives the keys in use at now from the held window, the
// way every node does, so all nodes switch at the same instants without
// talking to Vault.
func (s *Source) recomputeLocked(now time.Time, reason string) *keyset {
	w := s.window
	prev := s.ks.Load()
	ks := &keyset{computedAt: now, validUntil: now.Add(24 * time.Hour), counts: map[KeyState]int{}}
	soonest := func(t time.Time) {
		if t.After(now) && t.Before(ks.validUntil) {
			ks.validUntil = t
		}
	}

	// The encrypting key: the latest activated key whose encryption period
	// covers now.
	cur := -1
	for i := range w.Keys {
		k := &w.Keys[i]
		end := w.encryptEnd(i)
		soonest(k.NotBefore)
		soonest(k.NotAfter)
		soonest(end)
		if !k.NotBefore.After(now) && now.Before(end) && now.Before(k.NotAfter) {
			cur = i
		}
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
		ks.current = &activeKey{state: StateCurrent, id: k.ID, cfg: s.keyConfigLocked(k), notAfter: k.NotAfter}
		ks.decrypt = append(ks.decrypt, ks.current)
		ks.currentNotBefore = k.NotBefore
		ks.encryptUntil = w.encryptEnd(cur)
	}
	// Next keys by activation, then previous keys newest first.
	for i := range w.Keys {
		k := &w.Keys[i]
		if i != cur && k.NotBefore.After(now) && now.Before(k.NotAfter) {
			ks.decrypt = append(ks.decrypt, &activeKey{state: StateNext, id: k.ID, cfg: s.keyConfigLocked(k), notAfter: k.NotAfter})
			if ks.nextActivation.IsZero() {
				ks.nextActivation = k.NotBefore
			}
		}
	}
	for i := len(w.Keys) - 1; i >= 0; i-- {
		k := &w.Keys[i]
		if i != cur && !k.NotBefore.After(now) && now.Before(k.NotAfter) {
			ks.decrypt = append(ks.decrypt, &activeKey{state: StatePrevious, id: k.ID, cfg: s.keyConfigLocked(k), notAfter: k.NotAfter})
		}
	}

	// Exhaustion: no published key may encrypt.
	ks.exhausted = cur < 0
	if ks.exhausted {
		if s.local == nil || !s.local.encrypting {
			var seed [32]byte
			if _, err := rand.Read(seed[:]); err != nil {
				panic("ticketkeys: crypto/rand failed: " + err.Error())
			}
			c := &tls.Config{}
			c.SetSessionTicketKeys([][32]byte{seed})
			s.local = &localKey{cfg: c, seed: seed, created: now, encrypting: true}
			clear(seed[:])
		}
		lk := &activeKey{state: StateLocal, cfg: s.local.cfg, notAfter: s.local.created.Add(maxKeyLifetime)}
		soonest(lk.notAfter)
		if s.o.disableTickets {
			ks.ticketsDisabled = true
			// WrapSession only runs if a caller's config bypassed the hook's
			// GetConfigForClient; its tickets are then never accepted.
			ks.current = lk
		} else {
			ks.current = lk
			ks.decrypt = append(ks.decrypt, lk)
		}
	} else if s.local != nil {
		if s.local.encrypting {
			s.local.encrypting = false
			s.local.notAfter = now.Add(w.Retain)
			if lim := s.local.created.Add(maxKeyLifetime); s.local.notAfter.After(lim) {
				s.local.notAfter = lim
			}
		}
		if now.Before(s.local.notAfter) && !s.o.disableTickets {
			ks.decrypt = append(ks.decrypt, &activeKey{state: StateLocal, cfg: s.local.cfg, notAfter: s.local.notAfter})
			soonest(s.local.notAfter)
		} else if !now.Before(s.local.notAfter) {
			s.local = nil
		}
	}
	for _, k := range ks.decrypt {
		ks.counts[k.state]++
	}
	s.ks.Store(ks)

	// Report transitions (states and counts only).
	if prev == nil || prev.exhausted != ks.exhausted || curID(prev) != curID(ks) || !sameDecrypt(prev, ks) {
		switch {
		case ks.exhausted && (prev == nil || !prev.exhausted):
			reason = "exhausted"
			if s.o.disableTickets {
				s.log.Error("ticket-key schedule exhausted: no published key may encrypt and Vault could not be read; session tickets are disabled until it can")
			} else {
				s.log.Error("ticket-key schedule exhausted: no published key may encrypt and Vault could not be read; using a node-local random key (resumption stays on this node)")
			}
		case !ks.exhausted && prev != nil && prev.exhausted:
			reason = "recovered"
			s.log.Info("ticket-key schedule recovered: published keys encrypt again")
		case reason == "schedule":
			s.log.Info("ticket keys advanced on schedule", slog.Int("current", ks.counts[StateCurrent]),
				slog.Int("next", ks.counts[StateNext]), slog.Int("previous", ks.counts[StatePrevious]), slog.Int("local", ks.counts[StateLocal]))
		}
		select {
		case s.updated <- struct{}{}:
		default:
		}
		if s.o.observer.Advance != nil {
			counts := make(map[KeyState]int, len(ks.counts))
			for k, v := range ks.counts {
				counts[k] = v
			}
			s.pending = append(s.pending, AdvanceEvent{Time: now, Reason: reason, Exhausted: ks.exhausted, Keys: counts})
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

// Close stops the background refresh and timers. The keys in use stay
// usable by servers still running (they are derived from the last window and
// the clock), so Close can run before the server shuts down. Close is
// idempotent and always returns nil.
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
