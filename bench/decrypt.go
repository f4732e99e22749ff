package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// MaxWindow is the largest window of the decryption benchmark: 14 keys is a
// day-long window of hourly keys with 12 h retain (current, next and 12
// previous), the engine's defaults.
const MaxWindow = 14

// DecryptFixture is a client.Source holding a window of n keys (the newest
// current, the others previous), wired into a tls.Config by ConfigureServer,
// and a real session ticket made with the oldest key: before tickets carried
// their key's name this was the worst case, every key tried in turn; now the
// name picks the one key. The window is served by a loopback HTTP server
// answering the engine's `go` format read, so the Source is the real one.
type DecryptFixture struct {
	// Window is the number of keys.
	Window int
	cfg    *tls.Config
	ticket []byte
	cs     tls.ConnectionState
	src    *client.Source
}

// NewDecryptFixture makes a window of n random keys behind a Source and a
// real session ticket: one TLS 1.3 handshake over loopback captures a
// genuine tls.SessionState, which client.SealTicket then encrypts under the
// oldest key, in the format the Source issues (key name, then crypto/tls's
// ticket).
func NewDecryptFixture(t testing.TB, n int) (*DecryptFixture, error) {
	return newDecryptFixture(t, n, false)
}

// NewLegacyDecryptFixture is NewDecryptFixture with a ticket in the previous
// release's format (no key name) and a Source that accepts such tickets:
// each key of the window is tried in turn, as every ticket was before key
// names (also the cost of a forged ticket during a rolling upgrade).
func NewLegacyDecryptFixture(t testing.TB, n int) (*DecryptFixture, error) {
	return newDecryptFixture(t, n, true)
}

func newDecryptFixture(t testing.TB, n int, legacy bool) (*DecryptFixture, error) {
	if n < 1 || n > 1024 {
		return nil, fmt.Errorf("decrypt fixture: window: must be 1..1024, got %d", n)
	}
	ss, cs, err := captureSession(t)
	if err != nil {
		return nil, err
	}
	w, err := newFixtureWindow(n, time.Now())
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	vcfg := api.DefaultConfig()
	vcfg.Address = srv.URL
	vcfg.MaxRetries = 0
	vc, err := api.NewClient(vcfg)
	if err != nil {
		return nil, fmt.Errorf("decrypt fixture: vault client: %w", err)
	}
	vc.SetToken("bench")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []client.Option{client.WithLogger(slog.New(slog.DiscardHandler))}
	if !legacy {
		opts = append(opts, client.WithLegacyTickets(0))
	}
	src, err := client.NewSource(ctx, vc, "ticketkeys", "bench", opts...)
	if err != nil {
		return nil, fmt.Errorf("decrypt fixture: %w", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	f := &DecryptFixture{Window: n, cs: cs, src: src, cfg: &tls.Config{}}
	if err := src.ConfigureServer(f.cfg); err != nil {
		return nil, fmt.Errorf("decrypt fixture: %w", err)
	}
	oldest := w.keys[0]
	f.ticket, err = client.SealTicket(oldest.ID, oldest.material, ss)
	if err != nil {
		return nil, fmt.Errorf("decrypt fixture: %w", err)
	}
	if legacy {
		f.ticket = f.ticket[client.TicketKeyNameSize:]
	}
	return f, nil
}

// Decrypt runs the ticket through the server config's UnwrapSession (the
// Source's hook) and returns the session, or an error when the ticket did not
// decrypt.
func (f *DecryptFixture) Decrypt() (*tls.SessionState, error) {
	ss, err := f.cfg.UnwrapSession(f.ticket, f.cs)
	if err != nil {
		return nil, err
	}
	if ss == nil {
		return nil, errors.New("decrypt fixture: no key decrypted the ticket")
	}
	return ss, nil
}

// BenchmarkDecrypt is the body of BenchmarkDecryptTicket/window=n, shared
// by `go test -bench` and the harness (through testing.Benchmark).
func BenchmarkDecrypt(b *testing.B, f *DecryptFixture) {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ss, err := f.Decrypt()
		if err != nil || ss == nil {
			b.Fatalf("decrypt, window=%d: %v", f.Window, err)
		}
	}
}

// fixtureKey is one key of the fixture's window, in the engine's wire
// format (schedule.WireKey) with its material.
type fixtureKey struct {
	schedule.WireKey
	material []byte
}

// fixtureWindow answers GET /v1/ticketkeys/keys/bench?format=go with a
// window of hourly keys, oldest first, the newest current since a minute.
type fixtureWindow struct {
	keys []fixtureKey
	body []byte
}

func newFixtureWindow(n int, now time.Time) (*fixtureWindow, error) {
	const period = time.Hour
	retain := time.Duration(n) * period
	w := &fixtureWindow{}
	newest := now.Add(-time.Minute).Truncate(time.Second)
	for i := 0; i < n; i++ {
		var name [16]byte
		m := make([]byte, 32)
		if _, err := rand.Read(name[:]); err != nil {
			return nil, fmt.Errorf("decrypt fixture: random key name: %w", err)
		}
		if _, err := rand.Read(m); err != nil {
			return nil, fmt.Errorf("decrypt fixture: random key: %w", err)
		}
		nb := newest.Add(-time.Duration(n-1-i) * period)
		state := "previous"
		if i == n-1 {
			state = "current"
		}
		w.keys = append(w.keys, fixtureKey{WireKey: schedule.WireKey{ID: hex.EncodeToString(name[:]), State: state,
			NotBefore: nb.UTC().Format(time.RFC3339), NotAfter: nb.Add(period + retain).UTC().Format(time.RFC3339),
			EncryptUntil: nb.Add(period).UTC().Format(time.RFC3339), TicketKey: base64.StdEncoding.EncodeToString(m)}, material: m})
	}
	var err error
	w.body, err = json.Marshal(map[string]any{"data": map[string]any{
		"name": "bench", "format": "go", "key_size": 80, "rotation_period": int64(period / time.Second),
		"retain": int64(retain / time.Second), "publish_ahead": int64(period / time.Second), "ttl": 3000, "keys": w.keys,
	}})
	return w, err
}

func (w *fixtureWindow) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/ticketkeys/keys/bench" || r.URL.Query().Get("format") != "go" {
		http.Error(rw, `{"errors":["no such path"]}`, http.StatusNotFound)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	_, _ = rw.Write(w.body)
}

// captureSession makes one TLS 1.3 handshake on 127.0.0.1 and returns the
// server's session state and connection state as WrapSession saw them.
func captureSession(t testing.TB) (*tls.SessionState, tls.ConnectionState, error) {
	cert := testcert.New(t, testcert.ECDSAP256)
	var (
		gotSS *tls.SessionState
		gotCS tls.ConnectionState
	)
	srvCfg := cert.ServerConfig()
	srvCfg.MinVersion = tls.VersionTLS13
	srvCfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		if gotSS == nil {
			gotSS, gotCS = ss, cs
		}
		return srvCfg.EncryptTicket(cs, ss)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: listen: %w", err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, srvCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			errc <- err
			return
		}
		// Tickets go out right after the handshake; write a byte so the
		// client has something to read after them.
		_, err = tc.Write([]byte{1})
		errc <- err
	}()
	cliCfg := cert.ClientConfig()
	cliCfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: dial: %w", err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	cc := tls.Client(raw, cliCfg)
	if err := cc.HandshakeContext(ctx); err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: client handshake: %w", err)
	}
	if _, err := io.ReadFull(cc, make([]byte, 1)); err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: client read: %w", err)
	}
	if err := <-errc; err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: server: %w", err)
	}
	if gotSS == nil {
		return nil, gotCS, errors.New("decrypt fixture: the server issued no session ticket")
	}
	return gotSS, gotCS, nil
}
