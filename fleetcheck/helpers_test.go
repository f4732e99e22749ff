package fleetcheck

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// newKey makes a key activating at nb, encrypting for period and decrypting
// until na, with material for every format: a random name, AES and HMAC
// keys of keySize's lengths, and a random go key.
func newKey(t testing.TB, keySize int, nb, na time.Time) *Key {
	t.Helper()
	k := &Key{NotBefore: nb.UTC().Truncate(time.Second), NotAfter: na.UTC().Truncate(time.Second)}
	n := (keySize - keyNameLen) / 2
	k.aes, k.hmac, k.gok = make([]byte, n), make([]byte, n), make([]byte, goKeyLen)
	for _, b := range [][]byte{k.name[:], k.aes, k.hmac, k.gok} {
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
	}
	k.ID = hex.EncodeToString(k.name[:])
	return k
}

// clone copies a key with its own material, as a new read would.
func (k *Key) clone() *Key {
	c := *k
	c.aes, c.hmac, c.gok = append([]byte(nil), k.aes...), append([]byte(nil), k.hmac...), append([]byte(nil), k.gok...)
	return &c
}

// material renders a key in an engine format (docs/api.md).
func (k *Key) material(format string) []byte {
	switch {
	case format == FormatGo:
		return append([]byte(nil), k.gok...)
	case format == FormatHAProxy || (format == FormatNginx && len(k.aes) == 16):
		return append(append(append([]byte(nil), k.name[:]...), k.aes...), k.hmac...)
	default:
		return append(append(append([]byte(nil), k.name[:]...), k.hmac...), k.aes...)
	}
}

// schedule is a test keyring: keys every period, the first activating at start.
type schedule struct {
	format  string
	keySize int
	period  time.Duration
	publish time.Duration
	mu      sync.Mutex
	keys    []*Key
	err     error
}

// newSchedule makes n keys, key i activating at start + i*period and
// decrypting until period + retain after that.
func newSchedule(t testing.TB, format string, keySize, n int, start time.Time, period, retain time.Duration) *schedule {
	s := &schedule{format: format, keySize: keySize, period: period, publish: period}
	for i := 0; i < n; i++ {
		nb := start.Add(time.Duration(i) * period)
		s.keys = append(s.keys, newKey(t, keySize, nb, nb.Add(period+retain)))
	}
	return s
}

// window returns what the engine would return at now: keys published and
// not past not_after, each a fresh copy.
func (s *schedule) window(now time.Time) *Window {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &Window{Keyring: "test", Format: s.format, KeySize: s.keySize, RotationPeriod: s.period, PublishAhead: s.publish, ReadAt: now}
	for _, k := range s.keys {
		if now.Before(k.NotBefore.Add(-s.publish)) || !now.Before(k.NotAfter) {
			continue
		}
		c := k.clone()
		switch {
		case !now.Before(c.NotBefore):
			c.State = "previous"
		default:
			c.State = "next"
		}
		w.Keys = append(w.Keys, c)
	}
	if cur := w.KeyAt(now); cur != nil {
		cur.State = "current"
	}
	return w
}

func (s *schedule) reader() WindowReader {
	return func(context.Context) (*Window, error) {
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return s.window(time.Now()), nil
	}
}

// remove drops a key from the schedule (a purge).
func (s *schedule) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range s.keys {
		if k.ID == id {
			s.keys = append(s.keys[:i], s.keys[i+1:]...)
			return
		}
	}
}

// goServer is an in-process Go TLS server whose tickets carry the key name
// in front of crypto/tls's EncryptTicket output (the go format's wire
// layout). Its keys can be replaced to make it stale or wrong.
type goServer struct {
	addr string
	mu   sync.Mutex
	enc  *Key   // encrypts
	dec  []*Key // decrypt (enc included)
}

func startGoServer(t testing.TB, cert *testcert.Cert, enc *Key, dec ...*Key) *goServer {
	t.Helper()
	g := &goServer{}
	g.set(enc, dec...)
	cfg := cert.ServerConfig()
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		g.mu.Lock()
		k := g.enc
		g.mu.Unlock()
		return sealGo(&session{gos: ss}, k)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		g.mu.Lock()
		keys := g.dec
		g.mu.Unlock()
		for _, k := range keys {
			if s, err := openTicket(FormatGo, identity, k); err == nil {
				return s.gos, nil
			}
		}
		return nil, nil
	}
	g.addr = serveTLS(t, cfg)
	return g
}

// serveTLS serves "ok" over TLS with cfg on a loopback port until the test
// ends and returns the address.
func serveTLS(t testing.TB, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// set replaces the server's keys: enc encrypts, enc and dec decrypt.
func (g *goServer) set(enc *Key, dec ...*Key) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.enc = enc
	g.dec = append([]*Key{enc}, dec...)
}

// haproxyLines renders keys as HAProxy tls-ticket-keys lines.
func haproxyLines(keys ...*Key) string {
	var out string
	for _, k := range keys {
		out += base64.StdEncoding.EncodeToString(k.material(FormatHAProxy)) + "\n"
	}
	return out
}

// nodesOf returns the test nodes for addrs with cert's CA.
func nodesOf(cert *testcert.Cert, addrs ...string) []Node {
	var out []Node
	for _, a := range addrs {
		out = append(out, Node{Addr: a, ServerName: testcert.ServerName, RootCAs: cert.Pool})
	}
	return out
}

// vaultStub serves the schedule's window the way Vault does
// (GET /v1/ticketkeys/keys/test?format=F, the engine's JSON in "data"), for
// real client.Sources and for VaultReader.
func vaultStub(t testing.TB, s *schedule) *api.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		format := r.URL.Query().Get("format")
		if r.URL.Path != "/v1/ticketkeys/keys/test" || !slices.Contains(Formats, format) {
			http.Error(rw, `{"errors":["no handler for route"]}`, http.StatusNotFound)
			return
		}
		w := s.window(time.Now())
		var keys []map[string]any
		for _, k := range w.Keys {
			keys = append(keys, map[string]any{"id": k.ID, "state": k.State,
				"not_before": k.NotBefore.Format(time.RFC3339), "not_after": k.NotAfter.Format(time.RFC3339),
				"ticket_key": base64.StdEncoding.EncodeToString(k.material(format))})
		}
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(map[string]any{"data": map[string]any{
			"name": "test", "format": format, "key_size": s.keySize, "rotation_period": int64(s.period / time.Second),
			"retain": int64(time.Hour / time.Second), "publish_ahead": int64(s.publish / time.Second), "ttl": 3000, "keys": keys,
		}})
	}))
	t.Cleanup(srv.Close)
	cfg := api.DefaultConfig()
	cfg.Address = srv.URL
	cfg.MaxRetries = 0
	vc, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken("test")
	return vc
}

// startSourceNode runs a Go TLS server whose tickets come from a real
// client.Source reading vc.
func startSourceNode(t testing.TB, cert *testcert.Cert, vc *api.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := client.NewSource(ctx, vc, "ticketkeys", "test", client.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	cfg := cert.ServerConfig()
	if err := src.ConfigureServer(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
