package client

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// fakeClock is a manual clock. Timers fire when advance moves time past
// them. Like a real clock it has a wall reading (Now) and a monotonic one
// (elapsed, which timers follow): jump steps the wall clock alone, as NTP
// or an operator does, and leaves timers where they were.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	elapsed time.Duration // monotonic time since the clock was made
	waiters map[*fakeWaiter]bool
	calls   int // After calls so far
}

type fakeWaiter struct {
	at time.Duration // monotonic deadline
	ch chan time.Time
	fn func() // AfterFunc's function, called instead of sending on ch
}

func newFakeClock(t0 time.Time) *fakeClock {
	return &fakeClock{now: t0, waiters: map[*fakeWaiter]bool{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	w := &fakeWaiter{at: c.elapsed + d, ch: make(chan time.Time, 1)}
	if d <= 0 {
		w.ch <- c.now
		return w.ch, func() {}
	}
	c.waiters[w] = true
	return w.ch, func() {
		c.mu.Lock()
		delete(c.waiters, w)
		c.mu.Unlock()
	}
}

// AfterFunc is After calling f in its own goroutine. It does not count as
// an After call: step's "the loop parked" means a call of After.
func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d <= 0 {
		go f()
		return func() {}
	}
	w := &fakeWaiter{at: c.elapsed + d, fn: f}
	c.waiters[w] = true
	return func() {
		c.mu.Lock()
		delete(c.waiters, w)
		c.mu.Unlock()
	}
}

// loopParked reports whether a loop waits on an After timer (an AfterFunc,
// a read's cut, is not a parked loop).
func (c *fakeClock) loopParked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range c.waiters {
		if w.fn == nil {
			return true
		}
	}
	return false
}

func (c *fakeClock) afterCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// advance moves time by d and fires due timers; it reports whether any fired.
func (c *fakeClock) advance(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.elapsed += d
	fired := false
	for w := range c.waiters {
		if w.at <= c.elapsed {
			if w.fn != nil {
				go w.fn()
			} else {
				w.ch <- c.now
			}
			delete(c.waiters, w)
			fired = true
		}
	}
	return fired
}

// jump steps the wall clock by d (forward or back) without moving the
// monotonic clock: no timer fires and none moves.
func (c *fakeClock) jump(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// step advances the clock by d and, if that woke the Source's loop, waits
// until the loop has done its work and parked on a new timer.
//
// Time moves only while the loop is parked: a Source's loop that is busy
// (a read, a kick taken) is waited for (at most 1s, then time moves anyway,
// for a Source that has no loop any more), as time does not jump ahead of a
// runnable loop in production.
func (c *fakeClock) step(t *testing.T, d time.Duration) {
	t.Helper()
	for wait := time.Now().Add(time.Second); !c.loopParked() && time.Now().Before(wait); {
		time.Sleep(time.Millisecond)
	}
	before := c.afterCalls()
	if !c.advance(d) {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.afterCalls() == before || !c.loopParked() {
		if time.Now().After(deadline) {
			t.Fatal("fake clock: the source loop did not park again within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeVault serves GET /v1/<mount>/keys/<name>?format=go like the engine
// does: keys every period from t0, published publishAhead before activation,
// returned until not_after = not_before + period + retain.
type fakeVault struct {
	t      *testing.T
	srv    *httptest.Server
	token  string
	mount  string
	name   string
	clock  func() time.Time
	mu     sync.Mutex
	t0     time.Time
	period time.Duration
	retain time.Duration
	ahead  time.Duration
	// mode: "ok", "down" (503), "malformed" (not JSON), "twocurrent",
	// "shortkey", "nokeys", "purged" (only the current key is returned),
	// "badrequest" (400, as an engine without the go format answers),
	// "rekey" (the same ids with other material)
	mode string
	// ttl, if set, replaces the computed ttl; reportPeriod, if set, is the
	// rotation_period the window reports (a setting changed after the keys
	// were made); noEncryptUntil leaves encrypt_until out (an older engine).
	ttl            time.Duration
	reportPeriod   time.Duration
	noEncryptUntil bool
	failFirst      int64 // answer 503 to this many first requests
	requests       atomic.Int64
	// block, if set, holds every keyring read until it is closed or the
	// request is cancelled; each read sends on entered first (if set).
	block   chan struct{}
	entered chan struct{}
	blocked atomic.Int64 // reads held in the handler right now
	// clientTimeout, if set, replaces the 5s timeout of client().
	clientTimeout time.Duration
	// logins counts logins at auth/fake/login; each issues a new token
	// that becomes the only valid one. denyKeyring refuses keyring reads
	// (403) whatever the token, as a policy that lacks the keyring does.
	logins      atomic.Int64
	loginTimes  []time.Time // by fv.clock, under mu
	denyKeyring bool
}

func newFakeVault(t *testing.T, clock func() time.Time, t0 time.Time, period, retain time.Duration) *fakeVault {
	fv := &fakeVault{t: t, token: "test-token", mount: "ticketkeys", name: "web", clock: clock,
		t0: t0, period: period, retain: retain, ahead: period, mode: "ok"}
	fv.srv = httptest.NewServer(http.HandlerFunc(fv.serve))
	t.Cleanup(fv.srv.Close)
	return fv
}

func (fv *fakeVault) setMode(m string) {
	fv.mu.Lock()
	fv.mode = m
	fv.mu.Unlock()
}

// client returns a vault/api client for the fake with token tok and no
// retries (the Source does its own).
func (fv *fakeVault) client(t *testing.T, tok string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = fv.srv.URL
	cfg.MaxRetries = 0
	cfg.Timeout = 5 * time.Second
	fv.mu.Lock()
	if fv.clientTimeout > 0 {
		cfg.Timeout = fv.clientTimeout
	}
	fv.mu.Unlock()
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	return c
}

// keyMaterial and keyID derive deterministic test keys from the key number.
func keyMaterial(n int64) []byte {
	s := sha256.Sum256([]byte(fmt.Sprintf("test ticket key %d", n)))
	return s[:]
}

func keyID(n int64) string {
	s := sha256.Sum256([]byte(fmt.Sprintf("test ticket id %d", n)))
	return hex.EncodeToString(s[:16])
}

type fakeKey struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	NotBefore    string `json:"not_before"`
	EncryptUntil string `json:"encrypt_until,omitempty"`
	NotAfter     string `json:"not_after"`
	TicketKey    string `json:"ticket_key"`
}

// window computes the engine's answer at now.
func (fv *fakeVault) window(now time.Time) map[string]any {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	curN := int64(now.Sub(fv.t0) / fv.period)
	if now.Before(fv.t0) {
		curN = 0
	}
	key := func(n int64, state string) fakeKey {
		nb := fv.t0.Add(time.Duration(n) * fv.period)
		material := keyMaterial(n)
		if fv.mode == "rekey" {
			material = keyMaterial(n + 1000)
		}
		k := fakeKey{
			ID: keyID(n), State: state,
			NotBefore: nb.UTC().Format(time.RFC3339),
			NotAfter:  nb.Add(fv.period + fv.retain).UTC().Format(time.RFC3339),
			TicketKey: base64.StdEncoding.EncodeToString(material),
		}
		if !fv.noEncryptUntil {
			k.EncryptUntil = nb.Add(fv.period).UTC().Format(time.RFC3339)
		}
		return k
	}
	keys := []fakeKey{key(curN, "current")}
	change := fv.t0.Add(time.Duration(curN+1) * fv.period) // next activation
	for n := curN + 1; ; n++ {
		nb := fv.t0.Add(time.Duration(n) * fv.period)
		pub := nb.Add(-fv.ahead)
		if pub.After(now) {
			if pub.Before(change) {
				change = pub
			}
			break
		}
		keys = append(keys, key(n, "next"))
	}
	if fv.mode != "purged" {
		for n := curN - 1; n >= 0; n-- {
			na := fv.t0.Add(time.Duration(n)*fv.period + fv.period + fv.retain)
			if !na.After(now) {
				break
			}
			if na.Before(change) {
				change = na
			}
			keys = append(keys, key(n, "previous"))
		}
	}
	ttl := int64((change.Sub(now) + time.Second - 1) / time.Second)
	ttl = max(ttl, 1)
	if fv.ttl > 0 {
		ttl = int64(fv.ttl / time.Second)
	}
	reported := fv.period
	if fv.reportPeriod > 0 {
		reported = fv.reportPeriod
	}
	switch fv.mode {
	case "twocurrent":
		keys = append(keys, keys[0])
		keys[len(keys)-1].State = "current"
		keys[len(keys)-1].ID = keyID(999)
		keys[len(keys)-1].TicketKey = base64.StdEncoding.EncodeToString(keyMaterial(999))
		keys[len(keys)-1].NotBefore = fv.t0.Add(time.Duration(curN)*fv.period + time.Second).UTC().Format(time.RFC3339)
	case "shortkey":
		keys[0].TicketKey = base64.StdEncoding.EncodeToString(make([]byte, 48))
	case "nokeys":
		keys = nil
	}
	return map[string]any{
		"name": fv.name, "format": "go", "key_size": 80,
		"rotation_period": int64(reported / time.Second), "retain": int64(fv.retain / time.Second),
		"publish_ahead": int64(fv.ahead / time.Second), "ttl": ttl, "keys": keys,
	}
}

func (fv *fakeVault) serve(w http.ResponseWriter, r *http.Request) {
	n := fv.requests.Add(1)
	w.Header().Set("Content-Type", "application/json")
	fail := func(code int, msg string) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
	}
	if r.URL.Path == "/v1/auth/fake/login" && r.Method != http.MethodGet {
		tok := fmt.Sprintf("login-%d", fv.logins.Add(1))
		fv.setToken(tok)
		fv.mu.Lock()
		fv.loginTimes = append(fv.loginTimes, fv.clock())
		fv.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{
			"client_token": tok, "lease_duration": 3600, "renewable": false,
		}})
		return
	}
	if r.Method != http.MethodGet {
		fail(405, "method")
		return
	}
	fv.mu.Lock()
	mode := fv.mode
	token := fv.token
	failFirst := fv.failFirst
	fv.mu.Unlock()
	if mode == "down" || n <= failFirst {
		fail(503, "Vault is sealed")
		return
	}
	if mode == "badrequest" {
		fail(400, `format: must be one of nginx, haproxy, envoy; got "go"`)
		return
	}
	fv.mu.Lock()
	deny := fv.denyKeyring
	fv.mu.Unlock()
	if r.Header.Get("X-Vault-Token") != token || deny {
		fail(403, "permission denied")
		return
	}
	want := "/v1/" + fv.mount + "/keys/"
	if !strings.HasPrefix(r.URL.Path, want) {
		fail(404, "no handler for route")
		return
	}
	if strings.TrimPrefix(r.URL.Path, want) != fv.name {
		w.WriteHeader(404)
		_, _ = w.Write([]byte(`{"errors":[]}`))
		return
	}
	if f := r.URL.Query().Get("format"); f != "go" {
		fail(400, fmt.Sprintf("format: must be nginx, haproxy, envoy or go, got %q", f))
		return
	}
	fv.mu.Lock()
	block, entered := fv.block, fv.entered
	fv.mu.Unlock()
	if block != nil {
		fv.blocked.Add(1)
		if entered != nil {
			select {
			case entered <- struct{}{}:
			case <-r.Context().Done():
			}
		}
		select {
		case <-block:
		case <-r.Context().Done():
		}
		fv.blocked.Add(-1)
	}
	if mode == "malformed" {
		_, _ = w.Write([]byte(`{"data": {"name": "web", "keys": [`))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"request_id": "x", "lease_duration": 0, "renewable": false, "data": fv.window(fv.clock())})
}
