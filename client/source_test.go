package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

var (
	// t0 is the fake engine's first activation.
	t0     = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	period = 60 * time.Second
	retain = 120 * time.Second
)

func noJitter(time.Duration) time.Duration { return 0 }

func (fv *fakeVault) setToken(tok string) {
	fv.mu.Lock()
	fv.token = tok
	fv.mu.Unlock()
}

// recorder collects observer events.
type recorder struct {
	mu       sync.Mutex
	refresh  []RefreshEvent
	tickets  []TicketEvent
	advances []AdvanceEvent
}

func (r *recorder) observer() Observer {
	return Observer{
		Refresh: func(e RefreshEvent) { r.mu.Lock(); r.refresh = append(r.refresh, e); r.mu.Unlock() },
		Ticket:  func(e TicketEvent) { r.mu.Lock(); r.tickets = append(r.tickets, e); r.mu.Unlock() },
		Advance: func(e AdvanceEvent) { r.mu.Lock(); r.advances = append(r.advances, e); r.mu.Unlock() },
	}
}

func (r *recorder) lastRefresh(t *testing.T) RefreshEvent {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.refresh) == 0 {
		t.Fatal("no refresh event recorded")
	}
	return r.refresh[len(r.refresh)-1]
}

// testLogger returns a logger into the test log (the package never logs
// key material, so this is safe).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newFakeSource starts a fake engine and a Source on a fake clock set to
// t0+offset.
func newFakeSource(t *testing.T, offset time.Duration, opts ...Option) (*fakeVault, *fakeClock, *Source, *recorder) {
	t.Helper()
	return newFakeSourceWith(t, offset, nil, opts...)
}

// newFakeSourceWith is newFakeSource with setup applied to the fake engine
// before the first read.
func newFakeSourceWith(t *testing.T, offset time.Duration, setup func(*fakeVault), opts ...Option) (*fakeVault, *fakeClock, *Source, *recorder) {
	t.Helper()
	fc := newFakeClock(t0.Add(offset))
	fv := newFakeVault(t, fc.Now, t0, period, retain)
	if setup != nil {
		fv.mu.Lock()
		setup(fv)
		fv.mu.Unlock()
	}
	rec := &recorder{}
	all := append([]Option{withClock(fc), withJitter(noJitter), WithRetryBackoff(time.Second, 4*time.Second),
		WithObserver(rec.observer()), WithLogger(testLogger(t))}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := NewSource(ctx, fv.client(t, fv.token), "ticketkeys", "web", all...)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	// Let the loop park on its first timer before the test moves time.
	deadline := time.Now().Add(10 * time.Second)
	for fc.afterCalls() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the source loop did not start")
		}
		time.Sleep(time.Millisecond)
	}
	return fv, fc, src, rec
}

// serveTLS serves HTTPS with http.Server.ServeTLS (which clones cfg) on a
// free loopback port and returns the address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig:         cfg,
		ReadHeaderTimeout: 5 * time.Second,
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") }),
		ErrorLog:          nil,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// serveTLSListen serves HTTPS through tls.Listen and http.Server.Serve.
func serveTLSListen(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") }),
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// hookedServer serves HTTPS with src wired in through ConfigureServer.
func hookedServer(t *testing.T, cert *testcert.Cert, src *Source) string {
	t.Helper()
	cfg := cert.ServerConfig()
	if err := src.ConfigureServer(cfg); err != nil {
		t.Fatal(err)
	}
	return serveTLS(t, cfg)
}

// get makes one HTTPS request with the given session cache and reports
// whether the handshake resumed. It fails the test on any error.
func get(t *testing.T, cert *testcert.Cert, addr string, cache tls.ClientSessionCache, version uint16) bool {
	t.Helper()
	cfg := cert.ClientConfig()
	cfg.ClientSessionCache = cache
	cfg.MinVersion, cfg.MaxVersion = version, version
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, _ = io.Copy(io.Discard, br)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return conn.ConnectionState().DidResume
}

func newCache() tls.ClientSessionCache { return tls.NewLRUClientSessionCache(4) }

func cacheHolds(c tls.ClientSessionCache) bool {
	s, ok := c.Get("localhost")
	return ok && s != nil
}

var versions = []uint16{tls.VersionTLS12, tls.VersionTLS13}

// TestNewSourceBlocksUntilFirstWindow: the constructor retries transient
// errors (503) and returns only with a valid window.
func TestNewSourceBlocksUntilFirstWindow(t *testing.T) {
	fv := newFakeVault(t, time.Now, time.Now().Add(-10*time.Second).Truncate(time.Second), period, retain)
	fv.failFirst = 3
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := NewSource(ctx, fv.client(t, fv.token), "/ticketkeys/", "web", WithRetryBackoff(10*time.Millisecond, 40*time.Millisecond), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got := fv.requests.Load(); got != 4 {
		t.Fatalf("requests: got %d, want 4 (3 failures, then the first good window)", got)
	}
	st := src.Status()
	if st.Exhausted || st.CurrentID != keyID(0) || st.Keys[StateCurrent] != 1 || st.Keys[StateNext] != 1 {
		t.Fatalf("status after first window: exhausted=%v current_is_key0=%v keys=%v", st.Exhausted, st.CurrentID == keyID(0), st.Keys)
	}
	if st.RefreshErrors != 3 || st.Refreshes != 1 || st.LastError != nil {
		t.Fatalf("status counters: refreshes=%d errors=%d last_error=%v, want 1, 3, nil", st.Refreshes, st.RefreshErrors, st.LastError)
	}
}

// TestNewSourceErrors: a missing keyring fails at once with a clear error
// (a token without access: TestStartupPermissionDeniedRetries); an
// unreachable engine fails when the context ends; bad arguments are named.
func TestNewSourceErrors(t *testing.T) {
	fv := newFakeVault(t, time.Now, time.Now().Truncate(time.Second), period, retain)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	start := time.Now()
	_, err := NewSource(ctx, fv.client(t, fv.token), "ticketkeys", "nope")
	if !errors.Is(err, ErrKeyringNotFound) || !strings.Contains(err.Error(), "ticketkeys/keys/nope") {
		t.Fatalf("unknown keyring: got %v, want ErrKeyringNotFound naming the path", err)
	}
	_, err = NewSource(ctx, fv.client(t, fv.token), "other", "web")
	if !errors.Is(err, ErrKeyringNotFound) {
		t.Fatalf("unknown mount: got %v, want ErrKeyringNotFound", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("permanent errors took %s, want an immediate failure", el)
	}

	fv.setMode("down")
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	_, err = NewSource(short, fv.client(t, fv.token), "ticketkeys", "web", WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond), WithLogger(slog.New(slog.DiscardHandler)))
	if err == nil || !strings.Contains(err.Error(), "context deadline exceeded") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("engine down: got %v, want the context error and the last error (503)", err)
	}

	for _, tc := range []struct {
		mount, name, want string
	}{
		{"", "web", "mount"},
		{"ticketkeys", "-web", "name"},
		{"ticketkeys", strings.Repeat("a", 129), "name"},
	} {
		if _, err := NewSource(ctx, fv.client(t, fv.token), tc.mount, tc.name); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("NewSource(%q, %q): got %v, want an error naming %s", tc.mount, tc.name, err, tc.want)
		}
	}
	if _, err := NewSource(ctx, nil, "ticketkeys", "web"); err == nil || !strings.Contains(err.Error(), "client") {
		t.Fatalf("nil client: got %v", err)
	}
	if _, err := NewSource(ctx, fv.client(t, fv.token), "ticketkeys", "web", WithRetryBackoff(0, time.Second)); err == nil || !strings.Contains(err.Error(), "WithRetryBackoff") {
		t.Fatalf("bad option: got %v", err)
	}
}

// TestRefreshFollowsTTL: the Source reads again exactly when the window's ttl
// says it changes (jitter zeroed), swaps the new window, and skips a swap
// when a read changes nothing.
func TestRefreshFollowsTTL(t *testing.T) {
	fv, fc, src, rec := newFakeSource(t, 10*time.Second, WithMaxRefreshInterval(25*time.Second))
	if n := fv.requests.Load(); n != 1 {
		t.Fatalf("requests after NewSource: %d, want 1", n)
	}
	first := src.Status().LastChange

	// ttl is 50s, capped at 25s: a read at +35s that changes nothing.
	fc.step(t, 24*time.Second)
	if n := fv.requests.Load(); n != 1 {
		t.Fatalf("requests before the refresh time: %d, want 1", n)
	}
	fc.step(t, time.Second)
	if n := fv.requests.Load(); n != 2 {
		t.Fatalf("requests at the refresh cap: %d, want 2", n)
	}
	if ev := rec.lastRefresh(t); ev.Err != nil || ev.Changed {
		t.Fatalf("unchanged read: err=%v changed=%v, want nil, false", ev.Err, ev.Changed)
	}
	if st := src.Status(); !st.LastChange.Equal(first) || st.Refreshes != 2 {
		t.Fatalf("unchanged read: last change moved (%v -> %v) or refreshes=%d", first, st.LastChange, st.Refreshes)
	}

	// The window's ttl at +35s is 25s (k1 activates and k2 is published at +60s).
	fc.step(t, 24*time.Second)
	if n := fv.requests.Load(); n != 2 {
		t.Fatalf("requests before ttl: %d, want 2", n)
	}
	fc.step(t, time.Second)
	if n := fv.requests.Load(); n != 3 {
		t.Fatalf("requests at ttl: %d, want 3", n)
	}
	ev := rec.lastRefresh(t)
	if ev.Err != nil || !ev.Changed {
		t.Fatalf("read at ttl: err=%v changed=%v, want nil, true", ev.Err, ev.Changed)
	}
	st := src.Status()
	if st.CurrentID != keyID(1) || st.Keys[StatePrevious] != 1 || st.Keys[StateNext] != 1 {
		t.Fatalf("after the rotation: current_is_key1=%v keys=%v", st.CurrentID == keyID(1), st.Keys)
	}
	if w := src.Window(); w == nil || len(w.Keys) != 3 || w.Keys[0].material != ([32]byte{}) {
		t.Fatal("Window() must return the keys without material")
	}
}

// TestKeepLastGood: failed reads and every kind of invalid window leave the
// last good window in use, are reported with the failing field, back off
// exponentially up to the cap, and the Source recovers by itself.
func TestKeepLastGood(t *testing.T) {
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			fv, fc, src, rec := newFakeSource(t, 10*time.Second)
			cert := testcert.New(t, testcert.ECDSAP256)
			addr := hookedServer(t, cert, src)
			cache := newCache()
			if get(t, cert, addr, cache, v) {
				t.Fatal("first connection resumed")
			}

			// Reach the refresh time (+60s) with the engine failing in turn.
			fc.step(t, 50*time.Second) // the read at +60s succeeds: key 1 current, key 2 next
			// The failures below run from +120s (the next ttl), where key 2
			// activates locally, to about +130s.
			cases := []struct{ mode, want string }{
				{"down", "503"},
				{"malformed", "reading ticketkeys/keys/web"},
				{"twocurrent", "exactly one key"},
				{"shortkey", "must decode to 32 bytes"},
				{"nokeys", "at least one key"},
				{"token", "permission denied"},
			}
			var waits []time.Duration
			for _, tc := range cases {
				if tc.mode == "token" {
					fv.setMode("ok")
					fv.setToken("rotated-away")
				} else {
					fv.setMode(tc.mode)
				}
				// Force a read now: advance to the pending refresh time.
				ev := rec.lastRefresh(t)
				fc.step(t, ev.NextRefresh)
				ev = rec.lastRefresh(t)
				if ev.Err == nil || !strings.Contains(ev.Err.Error(), tc.want) {
					t.Fatalf("mode %s: refresh error %v, want one containing %q", tc.mode, ev.Err, tc.want)
				}
				for n := int64(0); n < 4; n++ {
					if strings.Contains(ev.Err.Error(), keyID(n)) {
						t.Fatalf("mode %s: error carries a key id", tc.mode)
					}
				}
				waits = append(waits, ev.NextRefresh)
				st := src.Status()
				if st.CurrentID != keyID(2) || st.LastError == nil || st.Keys[StatePrevious] != 2 {
					t.Fatalf("mode %s: last good window lost (current_is_key2=%v, keys %v) or error not reported", tc.mode, st.CurrentID == keyID(2), st.Keys)
				}
				if !get(t, cert, addr, cache, v) {
					t.Fatalf("mode %s: resumption failed while keeping the last good window", tc.mode)
				}
			}
			// Backoff with zero jitter is half the step: 0.5s, 1s, 2s, then capped at 2s.
			want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second, 2 * time.Second, 2 * time.Second}
			for i := range want {
				if waits[i] != want[i] {
					t.Fatalf("backoff waits: got %v, want %v", waits, want)
				}
			}
			if st := src.Status(); st.RefreshErrors != uint64(len(cases)) {
				t.Fatalf("refresh errors: got %d, want %d", st.RefreshErrors, len(cases))
			}

			fv.setToken("test-token")
			fc.step(t, rec.lastRefresh(t).NextRefresh)
			if ev := rec.lastRefresh(t); ev.Err != nil {
				t.Fatalf("after recovery: %v", ev.Err)
			}
			if st := src.Status(); st.LastError != nil || st.CurrentID != keyID(2) || st.Keys[StateNext] != 1 {
				t.Fatalf("after recovery: last error %v", st.LastError)
			}
		})
	}
}

// TestLocalActivationRetirementExhaustion: with the engine unreachable, keys
// activate and retire locally at their times (fake clock), tickets move
// between states as documented, the schedule then runs out and a local key
// takes over without failed handshakes, and the Source recovers when the
// engine returns.
func TestLocalActivationRetirementExhaustion(t *testing.T) {
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			fv, fc, src, rec := newFakeSource(t, 10*time.Second)
			cert := testcert.New(t, testcert.ECDSAP256)
			addr := hookedServer(t, cert, src)

			a, b, c := newCache(), newCache(), newCache()
			for _, cc := range []tls.ClientSessionCache{a, b, c} {
				if get(t, cert, addr, cc, v) {
					t.Fatal("a first connection resumed")
				}
			}
			if !get(t, cert, addr, a, v) {
				t.Fatal("no resumption under the current key")
			}
			if got := src.Status().Tickets; got.Current != 1 || got.Issued < 4 {
				t.Fatalf("ticket counts: %+v, want 1 current hit and >= 4 issued", got)
			}

			fv.setMode("down")
			// +60s: key 1 activates locally although the read fails.
			fc.step(t, 50*time.Second)
			if ev := rec.lastRefresh(t); ev.Err == nil {
				t.Fatal("the read at +60s should have failed")
			}
			st := src.Status()
			if st.CurrentID != keyID(1) || st.Keys[StatePrevious] != 1 || st.Keys[StateNext] != 0 || st.Exhausted {
				t.Fatalf("+60s: current_is_key1=%v keys=%v exhausted=%v", st.CurrentID == keyID(1), st.Keys, st.Exhausted)
			}
			if !st.CurrentNotBefore.Equal(t0.Add(period)) {
				t.Fatalf("+60s: current not_before %v, want %v", st.CurrentNotBefore, t0.Add(period))
			}
			// a's ticket is now from the previous key: it resumes and is replaced.
			if !get(t, cert, addr, a, v) {
				t.Fatal("+60s: a ticket of the previous key did not resume")
			}
			if got := src.Status().Tickets; got.Previous != 1 {
				t.Fatalf("+60s: previous hits %d, want 1", got.Previous)
			}

			// +120s: key 1's period ends and nothing later is known: exhausted.
			fc.step(t, 60*time.Second)
			st = src.Status()
			if !st.Exhausted || st.CurrentID != "" || st.Keys[StateLocal] != 1 {
				t.Fatalf("+120s: exhausted=%v keys=%v, want exhausted with a local key", st.Exhausted, st.Keys)
			}
			d := newCache()
			if get(t, cert, addr, d, v) || !get(t, cert, addr, d, v) {
				t.Fatal("+120s: the local key does not issue resumable tickets")
			}
			if got := src.Status().Tickets; got.Local != 1 {
				t.Fatalf("+120s: local hits %d, want 1", got.Local)
			}
			// b's ticket (key 0, not_after +180s) still decrypts.
			if !get(t, cert, addr, b, v) {
				t.Fatal("+120s: key 0 stopped decrypting before its not_after")
			}

			// +180s: key 0 reaches not_after: c's ticket must not resume.
			fc.step(t, 60*time.Second)
			misses := src.Status().Tickets.Miss
			if get(t, cert, addr, c, v) {
				t.Fatal("+180s: a ticket of a key past its not_after resumed")
			}
			if got := src.Status().Tickets.Miss; got != misses+1 {
				t.Fatalf("+180s: misses %d, want %d", got, misses+1)
			}

			// The engine returns: the next read recovers (now at key 3).
			fv.setMode("ok")
			fc.step(t, rec.lastRefresh(t).NextRefresh)
			st = src.Status()
			if st.Exhausted || st.CurrentID != keyID(3) || st.LastError != nil {
				t.Fatalf("recovery: exhausted=%v current_is_key3=%v err=%v", st.Exhausted, st.CurrentID == keyID(3), st.LastError)
			}
			// The local key keeps decrypting for retain after the episode.
			if st.Keys[StateLocal] != 1 || !get(t, cert, addr, d, v) {
				t.Fatalf("recovery: local key not kept for decryption (keys %v)", st.Keys)
			}
			// Reasons reported to the observer, in order.
			rec.mu.Lock()
			var reasons []string
			for _, e := range rec.advances {
				reasons = append(reasons, e.Reason)
			}
			rec.mu.Unlock()
			joined := strings.Join(reasons, ",")
			if !strings.Contains(joined, "schedule") || !strings.Contains(joined, "exhausted") || !strings.Contains(joined, "recovered") {
				t.Fatalf("advance reasons %q: want schedule, exhausted and recovered", joined)
			}
		})
	}
}

// TestDisableTicketsOnExhaustion: with the option, an exhausted Source makes
// the server issue no tickets, and handshakes still succeed.
func TestDisableTicketsOnExhaustion(t *testing.T) {
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			fv, fc, src, _ := newFakeSource(t, 10*time.Second, WithDisableTicketsOnExhaustion())
			cert := testcert.New(t, testcert.ECDSAP256)
			addr := hookedServer(t, cert, src)
			fv.setMode("down")
			fc.step(t, 50*time.Second)
			fc.step(t, 60*time.Second) // +120s: exhausted
			st := src.Status()
			if !st.Exhausted || !st.TicketsDisabled {
				t.Fatalf("exhausted=%v tickets_disabled=%v, want both", st.Exhausted, st.TicketsDisabled)
			}
			c := newCache()
			issued := src.Status().Tickets.Issued
			if get(t, cert, addr, c, v) || get(t, cert, addr, c, v) {
				t.Fatal("resumed with tickets disabled")
			}
			// What the client holds (if anything) is an inert ticket that
			// names no key; no ticket was encrypted.
			if cacheHolds(c) {
				ticket, _ := cachedTicket(t, c)
				id, _ := TicketKeyID(ticket)
				for n := int64(0); n < 4; n++ {
					if id == keyID(n) {
						t.Fatal("a ticket under a window key was issued while tickets are disabled")
					}
				}
			}
			if got := src.Status().Tickets.Issued; got != issued {
				t.Fatalf("tickets issued while disabled: %d", got-issued)
			}
		})
	}
}

// TestCloneServeTLS: through http.Server.ServeTLS (which clones the config)
// and tls.Listen, three servers, each with its own Source on the same keyring, resume each
// other's tickets; also through a caller's GetConfigForClient that returns a
// config of its own. Servers with crypto/tls's own keys do not: the control
// shows the check can fail.
func TestCloneServeTLS(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	fc := newFakeClock(t0.Add(10 * time.Second))
	fv := newFakeVault(t, fc.Now, t0, period, retain)
	var addrs []string
	for i := 0; i < 3; i++ {
		src, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web", withClock(fc), WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = src.Close() })
		cfg := &tls.Config{}
		if i == 2 {
			// A caller that picks the certificate per client with its own config.
			cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
				return cert.ServerConfig(), nil
			}
			// http.Server.ServeTLS wants a certificate source on cfg itself.
			cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.TLS, nil }
		} else {
			cfg = cert.ServerConfig()
		}
		if err := src.ConfigureServer(cfg); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			addrs = append(addrs, serveTLSListen(t, cfg))
		} else {
			addrs = append(addrs, serveTLS(t, cfg))
		}
	}
	plain := []string{serveTLS(t, cert.ServerConfig()), serveTLS(t, cert.ServerConfig())}

	for _, v := range versions {
		cache := newCache()
		get(t, cert, addrs[0], cache, v)
		for i := 0; i < 6; i++ {
			if !get(t, cert, addrs[(i+1)%3], cache, v) {
				t.Fatalf("%s: a ticket from server %d did not resume on server %d", tls.VersionName(v), i%3, (i+1)%3)
			}
		}
		get(t, cert, plain[0], cache, v)
		if get(t, cert, plain[1], cache, v) {
			t.Fatalf("%s control: servers with their own keys resumed each other's ticket", tls.VersionName(v))
		}
	}
}

// TestConfigureServerErrors: a config with its own session hooks, or with
// tickets disabled, is refused and left unchanged.
func TestConfigureServerErrors(t *testing.T) {
	_, _, src, _ := newFakeSource(t, 10*time.Second)
	if err := src.ConfigureServer(nil); err == nil {
		t.Fatal("nil config accepted")
	}
	cfg := &tls.Config{WrapSession: (&tls.Config{}).EncryptTicket}
	if err := src.ConfigureServer(cfg); err == nil || !strings.Contains(err.Error(), "WrapSession") {
		t.Fatalf("got %v, want an error naming WrapSession", err)
	}
	if cfg.UnwrapSession != nil || cfg.GetConfigForClient != nil {
		t.Fatal("a refused config was changed")
	}
	if err := src.ConfigureServer(&tls.Config{SessionTicketsDisabled: true}); err == nil || !strings.Contains(err.Error(), "SessionTicketsDisabled") {
		t.Fatalf("got %v, want an error naming SessionTicketsDisabled", err)
	}
}

// TestClose: Close stops the loop (no more reads), is idempotent, and the
// server keeps working on the last window.
func TestClose(t *testing.T) {
	fv, fc, src, _ := newFakeSource(t, 10*time.Second)
	cert := testcert.New(t, testcert.ECDSAP256)
	addr := hookedServer(t, cert, src)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.done:
	default:
		t.Fatal("loop still running after Close")
	}
	fc.advance(time.Hour)
	time.Sleep(20 * time.Millisecond)
	if n := fv.requests.Load(); n != 1 {
		t.Fatalf("reads after Close: %d, want none beyond the first", n-1)
	}
	c := newCache()
	get(t, cert, addr, c, tls.VersionTLS13)
	if !get(t, cert, addr, c, tls.VersionTLS13) {
		t.Fatal("server stopped resuming after Close")
	}
}

// TestClockBehindVault: a node whose clock is behind the engine's (nothing
// has activated locally yet) encrypts with the key the engine called current.
func TestClockBehindVault(t *testing.T) {
	fc := newFakeClock(t0.Add(-5 * time.Second))
	fv := newFakeVault(t, func() time.Time { return fc.Now().Add(10 * time.Second) }, t0, period, retain)
	src, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web", withClock(fc), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if st := src.Status(); st.Exhausted || st.CurrentID != keyID(0) {
		t.Fatalf("clock behind: exhausted=%v current_is_key0=%v", st.Exhausted, st.CurrentID == keyID(0))
	}
}

// TestNextKeyDecrypts: a node whose clock passed an activation a moment
// before another's encrypts with the new key, and the other node, still on
// the old key, decrypts that ticket with the pre-published next key (and
// the reverse with the previous key): no miss at a rotation.
func TestNextKeyDecrypts(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	early := newFakeClock(t0.Add(period))              // key 1 is current here
	late := newFakeClock(t0.Add(period - time.Second)) // key 0 still current here
	fv := newFakeVault(t, late.Now, t0, period, retain)
	var srcs []*Source
	var addrs []string
	for _, fc := range []*fakeClock{early, late} {
		src, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web", withClock(fc), WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = src.Close() })
		srcs = append(srcs, src)
		addrs = append(addrs, hookedServer(t, cert, src))
	}
	if a, b := srcs[0].Status().CurrentID, srcs[1].Status().CurrentID; a != keyID(1) || b != keyID(0) {
		t.Fatalf("setup: early node on key1=%v, late node on key0=%v", a == keyID(1), b == keyID(0))
	}
	for _, v := range versions {
		c := newCache()
		get(t, cert, addrs[0], c, v) // ticket under key 1
		if !get(t, cert, addrs[1], c, v) {
			t.Fatalf("%s: the late node did not resume a ticket of the next key", tls.VersionName(v))
		}
		c2 := newCache()
		get(t, cert, addrs[1], c2, v) // ticket under key 0
		if !get(t, cert, addrs[0], c2, v) {
			t.Fatalf("%s: the early node did not resume a ticket of the previous key", tls.VersionName(v))
		}
	}
	if got := srcs[1].Status().Tickets; got.Next != 2 || got.Miss != 0 {
		t.Fatalf("late node: next hits %d misses %d, want 2 and 0", got.Next, got.Miss)
	}
	if got := srcs[0].Status().Tickets; got.Previous != 2 || got.Miss != 0 {
		t.Fatalf("early node: previous hits %d misses %d, want 2 and 0", got.Previous, got.Miss)
	}
}
