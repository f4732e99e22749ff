package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// serverSession returns a server-side session state from a real handshake
// with a hooked server (the ticket opened with key n).
func serverSession(t *testing.T, cert *testcert.Cert, addr string, n int64) *tls.SessionState {
	t.Helper()
	c := newCache()
	get(t, cert, addr, c, tls.VersionTLS13)
	ticket, _ := cachedTicket(t, c)
	ss, err := OpenTicket(keyID(n), keyMaterial(n), ticket)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

func advanceReasons(rec *recorder) []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []string
	for _, e := range rec.advances {
		out = append(out, e.Reason)
	}
	return out
}

// TestKeySetNeverMovesBackwards: handshakes that read the clock in a
// different order than they reach the Source (one at +120s, then one at a
// moment before) never see an older key set than one already served: no
// spurious key changes, and at exhaustion the one local key keeps
// encrypting, so its tickets keep resuming.
func TestKeySetNeverMovesBackwards(t *testing.T) {
	fv, fc, src, rec := newFakeSource(t, 10*time.Second)
	cert := testcert.New(t, testcert.ECDSAP256)
	addr := hookedServer(t, cert, src)
	ss := serverSession(t, cert, addr, 0)
	fv.setMode("down")

	fc.step(t, 50*time.Second) // +60s: key 1 activates
	fc.advance(-time.Millisecond)
	if st := src.Status(); st.CurrentID != keyID(1) {
		t.Fatalf("a moment before +60s after +60s was served: current_is_key1=%v, want the newer key set", st.CurrentID == keyID(1))
	}
	fc.advance(time.Millisecond)

	fc.step(t, 60*time.Second) // +120s: exhausted, local key
	first, err := src.wrapSession(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatal(err)
	}
	fc.advance(-time.Millisecond) // a handshake that read the clock earlier
	if st := src.Status(); !st.Exhausted {
		t.Fatal("a moment before exhaustion after exhaustion was served: the key set moved backwards")
	}
	fc.advance(2 * time.Millisecond)
	second, err := src.wrapSession(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatal(err)
	}
	if id1, _ := TicketKeyID(first); id1 != func() string { id, _ := TicketKeyID(second); return id }() {
		t.Fatal("a second local key replaced the first one")
	}
	if got, _ := src.unwrapSession(first, tls.ConnectionState{}); got == nil {
		t.Fatal("a ticket of the first local key stopped resuming")
	}
	want := []string{"refresh", "schedule", "exhausted"} // the first read, +60s, +120s
	if got := advanceReasons(rec); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("advance events %v, want %v (no spurious changes)", got, want)
	}
}

// dial makes one TLS handshake offering h2 and http/1.1 and returns the
// connection state or the handshake error.
func dial(cert *testcert.Cert, addr string, cache tls.ClientSessionCache, v uint16) (tls.ConnectionState, error) {
	cfg := cert.ClientConfig()
	cfg.ClientSessionCache = cache
	cfg.MinVersion, cfg.MaxVersion = v, v
	cfg.NextProtos = []string{"h2", "http/1.1"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Read the TLS 1.3 session ticket, which follows the handshake.
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, _ = conn.Read(make([]byte, 1))
	return conn.ConnectionState(), nil
}

// TestTicketsOffKeepsHandshakes: with WithDisableTicketsOnExhaustion, an
// exhausted Source turns tickets off without touching anything else of the
// config crypto/tls serves: the certificate loaded by ServeTLS(certFile,
// keyFile), the "h2" http.Server adds, a caller's GetConfigForClient. Every
// handshake succeeds, none resumes, and after recovery tickets resume again.
func TestTicketsOffKeepsHandshakes(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	certFile, keyFile, _ := cert.WritePEM(t.TempDir())
	cases := []struct {
		name  string
		serve func(t *testing.T, src *Source) string
	}{
		{"ServeTLS with cert files", func(t *testing.T, src *Source) string {
			cfg := &tls.Config{}
			if err := src.ConfigureServer(cfg); err != nil {
				t.Fatal(err)
			}
			return serveTLSFiles(t, cfg, certFile, keyFile)
		}},
		{"Certificates", func(t *testing.T, src *Source) string {
			return hookedServer(t, cert, src)
		}},
		{"caller's GetConfigForClient", func(t *testing.T, src *Source) string {
			cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.TLS, nil }}
			cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
				c := cert.ServerConfig()
				c.NextProtos = []string{"h2", "http/1.1"}
				return c, nil
			}
			if err := src.ConfigureServer(cfg); err != nil {
				t.Fatal(err)
			}
			return serveTLS(t, cfg)
		}},
	}
	for _, tc := range cases {
		for _, v := range versions {
			t.Run(tc.name+"/"+tls.VersionName(v), func(t *testing.T) {
				fv, fc, src, rec := newFakeSource(t, 10*time.Second, WithDisableTicketsOnExhaustion())
				addr := tc.serve(t, src)
				before := newCache()
				if st, err := dial(cert, addr, before, v); err != nil || st.NegotiatedProtocol != "h2" {
					t.Fatalf("before exhaustion: handshake error %v, ALPN %q (want h2)", err, st.NegotiatedProtocol)
				}
				fv.setMode("down")
				fc.step(t, 50*time.Second)
				fc.step(t, 60*time.Second) // +120s: exhausted
				if st := src.Status(); !st.Exhausted || !st.TicketsDisabled {
					t.Fatalf("exhausted=%v tickets_disabled=%v, want both", st.Exhausted, st.TicketsDisabled)
				}
				off := newCache()
				for i := 0; i < 2; i++ {
					st, err := dial(cert, addr, off, v)
					if err != nil {
						t.Fatalf("tickets off, handshake %d: %v", i, err)
					}
					if st.DidResume || st.NegotiatedProtocol != "h2" {
						t.Fatalf("tickets off, handshake %d: resumed=%v ALPN %q, want a full handshake with h2", i, st.DidResume, st.NegotiatedProtocol)
					}
				}
				if st, err := dial(cert, addr, before, v); err != nil || st.DidResume {
					t.Fatalf("tickets off: an earlier ticket: error %v resumed=%v, want a full handshake", err, st.DidResume)
				}

				fv.setMode("ok")
				fc.step(t, rec.lastRefresh(t).NextRefresh)
				if st := src.Status(); st.Exhausted || st.TicketsDisabled {
					t.Fatalf("after recovery: exhausted=%v tickets_disabled=%v", st.Exhausted, st.TicketsDisabled)
				}
				if _, err := dial(cert, addr, off, v); err != nil {
					t.Fatal(err)
				}
				if st, err := dial(cert, addr, off, v); err != nil || !st.DidResume {
					t.Fatalf("after recovery: error %v resumed=%v, want a resumption", err, st.DidResume)
				}
			})
		}
	}
}

// serveTLSFiles serves HTTPS with http.Server.ServeTLS(ln, certFile,
// keyFile): the certificate is loaded into ServeTLS's own clone of cfg.
func serveTLSFiles(t *testing.T, cfg *tls.Config, certFile, keyFile string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: cfg, ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go func() { _ = srv.ServeTLS(ln, certFile, keyFile) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// TestStartupErrorsWrapVaultResponse: Vault's *api.ResponseError stays
// reachable with errors.As, and a 400 ends NewSource at once.
func TestStartupErrorsWrapVaultResponse(t *testing.T) {
	fv := newFakeVault(t, time.Now, time.Now().Truncate(time.Second), period, retain)
	fv.setMode("badrequest")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := NewSource(ctx, fv.client(t, fv.token), "ticketkeys", "web", WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond), WithLogger(slog.New(slog.DiscardHandler)))
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 400 {
		t.Fatalf("400: got %v, want an error wrapping *api.ResponseError 400", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("400: NewSource took %s, want a final error at once", el)
	}
	if !strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), "format") {
		t.Fatalf("400: %v, want the status and Vault's message", err)
	}

}

// TestStartupPermissionDeniedRetries: a 403 at start-up is retried until the
// caller's deadline (a Vault Agent sidecar may not have logged in yet), so a
// Source starts once the token becomes valid; when it never does, the error
// is ErrPermissionDenied wrapping Vault's response.
func TestStartupPermissionDeniedRetries(t *testing.T) {
	fv := newFakeVault(t, time.Now, time.Now().Truncate(time.Second), period, retain)
	fv.setToken("agent-not-ready")
	opts := []Option{WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond), WithLogger(slog.New(slog.DiscardHandler))}
	go func() {
		time.Sleep(300 * time.Millisecond)
		fv.setToken("test-token")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := NewSource(ctx, fv.client(t, "test-token"), "ticketkeys", "web", opts...)
	if err != nil {
		t.Fatalf("403 until the token became valid: %v, want a Source", err)
	}
	src.Close()

	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	_, err = NewSource(short, fv.client(t, "wrong"), "ticketkeys", "web", opts...)
	var re *api.ResponseError
	if !errors.Is(err, ErrPermissionDenied) || !errors.As(err, &re) || re.StatusCode != 403 || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("403 until the deadline: got %v, want ErrPermissionDenied wrapping the 403 and naming the deadline", err)
	}
}

// lockProbe fails the test when a log record or an observer callback runs
// while the Source's lock is held (a handler that calls Status, or takes a
// lock of its own that a handshake also takes, would deadlock).
type lockProbe struct {
	mu       sync.Mutex
	src      *Source
	held     []string
	sawTries int
}

func (p *lockProbe) check(what string) {
	p.mu.Lock()
	src := p.src
	p.mu.Unlock()
	if src == nil {
		return
	}
	ok := src.mu.TryLock()
	if ok {
		src.mu.Unlock()
	}
	p.mu.Lock()
	p.sawTries++
	if !ok {
		p.held = append(p.held, what)
	}
	p.mu.Unlock()
}

func (p *lockProbe) Enabled(context.Context, slog.Level) bool { return true }
func (p *lockProbe) Handle(_ context.Context, r slog.Record) error {
	p.check("log: " + r.Message)
	return nil
}
func (p *lockProbe) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *lockProbe) WithGroup(string) slog.Handler      { return p }

// TestNoLockHeldWhileLoggingOrObserving: key changes on the handshake path
// (activation, exhaustion) and on refresh log and call observers after the
// Source's lock is released.
func TestNoLockHeldWhileLoggingOrObserving(t *testing.T) {
	probe := &lockProbe{}
	obs := Observer{
		Refresh: func(RefreshEvent) { probe.check("observer: refresh") },
		Ticket:  func(TicketEvent) { probe.check("observer: ticket") },
		Advance: func(AdvanceEvent) { probe.check("observer: advance") },
	}
	fv, fc, src, _ := newFakeSource(t, 10*time.Second, WithLogger(slog.New(probe)), WithObserver(obs))
	probe.mu.Lock()
	probe.src = src
	probe.mu.Unlock()
	cert := testcert.New(t, testcert.ECDSAP256)
	addr := hookedServer(t, cert, src)
	c := newCache()
	get(t, cert, addr, c, tls.VersionTLS13)
	fv.setMode("down")
	// Move the clock without waking the loop: the handshake finds the
	// activation (and later the exhaustion) first.
	fc.mu.Lock()
	fc.now = fc.now.Add(50 * time.Second)
	fc.mu.Unlock()
	get(t, cert, addr, c, tls.VersionTLS13)
	fc.mu.Lock()
	fc.now = fc.now.Add(60 * time.Second)
	fc.mu.Unlock()
	get(t, cert, addr, c, tls.VersionTLS13)
	fc.step(t, 0)
	fc.step(t, time.Second)
	fv.setMode("ok")
	fc.step(t, 5*time.Second)
	probe.mu.Lock()
	defer probe.mu.Unlock()
	if len(probe.held) > 0 {
		t.Fatalf("called with the Source's lock held: %v", probe.held)
	}
	if probe.sawTries < 5 {
		t.Fatalf("only %d logs and callbacks seen: the test did not exercise them", probe.sawTries)
	}
}

// TestKeyConfigFollowsMaterial: a window that brings a known key id with
// other material is used with the new material (the private config cache
// is keyed by id and material).
func TestKeyConfigFollowsMaterial(t *testing.T) {
	fv, fc, src, rec := newFakeSource(t, 10*time.Second, WithMaxRefreshInterval(5*time.Second))
	cert := testcert.New(t, testcert.ECDSAP256)
	addr := hookedServer(t, cert, src)
	ss := serverSession(t, cert, addr, 0)
	fv.setMode("rekey")
	fc.step(t, 5*time.Second)
	if ev := rec.lastRefresh(t); ev.Err != nil || !ev.Changed {
		t.Fatalf("re-keyed window: err=%v changed=%v, want a swap", ev.Err, ev.Changed)
	}
	ticket, err := src.wrapSession(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTicket(keyID(0), keyMaterial(1000), ticket); err != nil {
		t.Fatalf("the ticket is not under the window's new material for key 0: %v", err)
	}
}

// TestRefreshJitterWhenCapped: when WithMaxRefreshInterval caps the wait,
// the wait still carries jitter (below the cap), so a fleet started together
// does not read Vault in lockstep.
func TestRefreshJitterWhenCapped(t *testing.T) {
	w := &Window{TTL: 50 * time.Second, Keys: []Key{{NotBefore: t0, EncryptUntil: t0.Add(time.Hour), NotAfter: t0.Add(2 * time.Hour)}}}
	for _, tc := range []struct {
		name   string
		jitter func(time.Duration) time.Duration
		want   func(time.Duration) bool
	}{
		{"no jitter", noJitter, func(d time.Duration) bool { return d == 25*time.Second }},
		{"full jitter", func(m time.Duration) time.Duration { return m }, func(d time.Duration) bool { return d < 25*time.Second && d >= 20*time.Second }},
	} {
		o, err := buildOptions([]Option{WithMaxRefreshInterval(25 * time.Second), withJitter(tc.jitter), withClock(newFakeClock(t0))})
		if err != nil {
			t.Fatal(err)
		}
		s := &Source{o: o}
		if got := s.refreshWait(w, t0); !tc.want(got) {
			t.Errorf("%s: capped wait %s", tc.name, got)
		}
	}
}

// TestEncryptUntilFromEngine: the last published key stops encrypting at the
// encrypt_until the engine stored, even when the keyring's rotation_period
// changed since (here 60s keys, rotation_period now 600s); an engine that
// does not publish encrypt_until gets today's computation from
// rotation_period.
func TestEncryptUntilFromEngine(t *testing.T) {
	for _, tc := range []struct {
		name           string
		noEncryptUntil bool
		until          time.Duration // key 1's end of encryption, from t0
	}{
		{"published encrypt_until", false, 120 * time.Second},
		// key 1's not_before + 600s, capped at its not_after (+240s)
		{"older engine (computed)", true, 240 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fv, fc, src, _ := newFakeSourceWith(t, 10*time.Second, func(fv *fakeVault) {
				fv.reportPeriod = 600 * time.Second
				fv.noEncryptUntil = tc.noEncryptUntil
			})
			fv.setMode("down")
			fc.step(t, 50*time.Second) // +60s: key 1 current, the last key known
			st := src.Status()
			if st.CurrentID != keyID(1) || !st.EncryptUntil.Equal(t0.Add(tc.until)) {
				t.Fatalf("+60s: current_is_key1=%v encrypt_until=%s, want %s", st.CurrentID == keyID(1), st.EncryptUntil, t0.Add(tc.until))
			}
			fc.step(t, 60*time.Second) // +120s
			if got, want := src.Status().Exhausted, !tc.noEncryptUntil; got != want {
				t.Fatalf("+120s: exhausted=%v, want %v", got, want)
			}
		})
	}
}

// TestReadsBeforeScheduleRunsOut: whatever the ttl says (here an hour), the
// Source reads again before the last published key stops encrypting: half
// the publish_ahead before its encrypt_until, when the next key is readable.
func TestReadsBeforeScheduleRunsOut(t *testing.T) {
	fv, fc, src, rec := newFakeSourceWith(t, 10*time.Second, func(fv *fakeVault) { fv.ttl = time.Hour })
	// Key 1 is the last key known and encrypts until +120s; publish_ahead is 60s.
	if got := rec.lastRefresh(t).NextRefresh; got != 80*time.Second {
		t.Fatalf("next refresh in %s, want 80s (at +90s: 120s - 60s/2)", got)
	}
	fc.step(t, 80*time.Second)
	if n := fv.requests.Load(); n != 2 {
		t.Fatalf("reads by +90s: %d, want 2", n)
	}
	fc.step(t, 30*time.Second) // +120s
	if st := src.Status(); st.Exhausted || st.CurrentID != keyID(2) {
		t.Fatalf("+120s: exhausted=%v current_is_key2=%v, want key 2 read ahead", st.Exhausted, st.CurrentID == keyID(2))
	}
}

// TestRefreshForcesRead: Refresh reads now (a purged key is dropped at once),
// the background read is then due a ttl later, a failed Refresh returns the
// error and keeps the window, and a closed Source returns ErrClosed.
func TestRefreshForcesRead(t *testing.T) {
	fv, fc, src, rec := newFakeSource(t, 70*time.Second)
	if st := src.Status(); st.Keys[StatePrevious] != 1 {
		t.Fatalf("setup: keys %v, want one previous", st.Keys)
	}
	fv.setMode("purged")
	parked := fc.afterCalls()
	if err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, k := range src.Window().Keys {
		if k.ID == keyID(0) {
			t.Fatal("the purged key is still in the window after Refresh")
		}
	}
	if st := src.Status(); st.Keys[StatePrevious] != 0 {
		t.Fatalf("after Refresh: keys %v, want no previous key", st.Keys)
	}
	waitParked(t, fc, parked)
	// The ttl at +70s is 50s: the background read follows it from the Refresh.
	if got := rec.lastRefresh(t).NextRefresh; got != 50*time.Second {
		t.Fatalf("next refresh %s after Refresh, want 50s", got)
	}
	fc.step(t, 49*time.Second)
	if n := fv.requests.Load(); n != 2 {
		t.Fatalf("reads before the ttl: %d, want 2", n)
	}
	fc.step(t, time.Second)
	if n := fv.requests.Load(); n != 3 {
		t.Fatalf("reads at the ttl: %d, want 3", n)
	}

	fv.setMode("down")
	err := src.Refresh(context.Background())
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 503 {
		t.Fatalf("Refresh with Vault down: got %v, want an error wrapping the 503", err)
	}
	if st := src.Status(); st.LastError == nil || st.CurrentID != keyID(2) {
		t.Fatalf("after a failed Refresh: last error %v, current_is_key2=%v", st.LastError, st.CurrentID == keyID(2))
	}

	src.Close()
	if err := src.Refresh(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Refresh after Close: got %v, want ErrClosed", err)
	}
	if err := src.ConfigureServer(&tls.Config{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("ConfigureServer after Close: got %v, want ErrClosed", err)
	}
}

// waitParked waits until the Source's loop has parked on a new timer after
// the After call count was before.
func waitParked(t *testing.T, fc *fakeClock, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for fc.afterCalls() == before {
		if time.Now().After(deadline) {
			t.Fatal("the source loop did not park again within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLocalKeysOfEarlierOutagesKeepDecrypting: a second outage makes a new
// local key without dropping the first one, which keeps decrypting for the
// keyring's retain after its outage ended.
func TestLocalKeysOfEarlierOutagesKeepDecrypting(t *testing.T) {
	fv, fc, src, rec := newFakeSource(t, 10*time.Second)
	cert := testcert.New(t, testcert.ECDSAP256)
	addr := hookedServer(t, cert, src)
	ss := serverSession(t, cert, addr, 0)

	fv.setMode("down")
	fc.step(t, 50*time.Second)
	fc.step(t, 60*time.Second) // +120s: first outage, local key 1
	first, err := src.wrapSession(tls.ConnectionState{}, ss)
	if err != nil || !src.Status().Exhausted {
		t.Fatalf("+120s: exhausted=%v err=%v", src.Status().Exhausted, err)
	}
	fv.setMode("ok")
	fc.step(t, rec.lastRefresh(t).NextRefresh) // recovered: key 2 current, key 3 next
	if st := src.Status(); st.Exhausted || st.Keys[StateLocal] != 1 {
		t.Fatalf("recovery: exhausted=%v keys=%v", st.Exhausted, st.Keys)
	}
	recoveredAt := fc.Now()

	fv.setMode("down")
	fc.step(t, t0.Add(240*time.Second).Sub(fc.Now())) // +240s: key 3 ends, second outage
	st := src.Status()
	if !st.Exhausted || st.Keys[StateLocal] != 2 {
		t.Fatalf("+240s: exhausted=%v keys=%v, want exhausted with two local keys (first one until %s)", st.Exhausted, st.Keys, recoveredAt.Add(retain))
	}
	second, err := src.wrapSession(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first[:TicketKeyNameSize], second[:TicketKeyNameSize]) {
		t.Fatal("the second outage reused the first outage's local key")
	}
	for i, ticket := range [][]byte{first, second} {
		if got, _ := src.unwrapSession(ticket, tls.ConnectionState{}); got == nil {
			t.Fatalf("a ticket of local key %d did not resume during the second outage", i+1)
		}
	}
}
