package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// TestCaddyFleetFromTheCommandLine: Caddy installs the window with
// crypto/tls's SetSessionTicketKeys, whose tickets carry no key name; with
// -unnamed-tickets (format go) the command checks such a fleet and exits 0,
// without it every node fails.
func TestCaddyFleetFromTheCommandLine(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	type key struct {
		id, state string
		nb, na    time.Time
		seed      [32]byte
	}
	var keys []key
	for i, state := range []string{"previous", "current", "next"} {
		k := key{state: state, nb: now.Add(time.Duration(i-1)*time.Hour - 30*time.Minute)}
		k.na = k.nb.Add(3 * time.Hour)
		var name [16]byte
		_, _ = rand.Read(name[:])
		_, _ = rand.Read(k.seed[:])
		k.id = hex.EncodeToString(name[:])
		keys = append(keys, k)
	}
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/ticketkeys/keys/web" || r.URL.Query().Get("format") != "go" {
			http.NotFound(w, r)
			return
		}
		var wk []map[string]any
		for _, k := range keys {
			wk = append(wk, map[string]any{"id": k.id, "state": k.state, "not_before": k.nb.Format(time.RFC3339),
				"not_after": k.na.Format(time.RFC3339), "ticket_key": base64.StdEncoding.EncodeToString(k.seed[:])})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"name": "web", "format": "go", "key_size": 80,
			"rotation_period": 3600, "retain": 7200, "publish_ahead": 3600, "ttl": 100, "keys": wk}})
	}))
	defer vault.Close()

	cert := testcert.New(t, testcert.ECDSAP256)
	_, _, ca := cert.WritePEM(t.TempDir())
	var nodes []string
	for range 2 {
		cfg := cert.ServerConfig()
		cfg.SetSessionTicketKeys([][32]byte{keys[1].seed, keys[2].seed, keys[0].seed}) // as Caddy's tls.stek.ticketkeys
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 5 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
		go func() { _ = srv.ServeTLS(ln, "", "") }()
		defer srv.Close()
		nodes = append(nodes, "-node", ln.Addr().String())
	}
	t.Setenv("VAULT_TOKEN", "test-token")
	args := append([]string{"-vault-addr", vault.URL, "-keyring", "web", "-format", "go", "-ca", ca, "-sni", testcert.ServerName}, nodes...)

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append(args, "-unnamed-tickets"), &stdout, &stderr); code != 0 {
		t.Fatalf("-unnamed-tickets on a Caddy fleet: exit %d, want 0\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "OK: keyring web (go)") {
		t.Errorf("no OK line:\n%s", stdout.String())
	}
	stdout.Reset()
	if code := run(context.Background(), args, &stdout, &stderr); code != 1 {
		t.Errorf("named check of a Caddy fleet: exit %d, want 1\n%s", code, stdout.String())
	}
	if code := run(context.Background(), []string{"-vault-addr", "http://127.0.0.1:1", "-keyring", "web", "-format", "nginx", "-node", "127.0.0.1:1", "-unnamed-tickets"}, &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), `unnamed tickets: only crypto/tls's tickets (format go) come without a key name, got format "nginx"`) {
		t.Errorf("-unnamed-tickets with -format nginx: exit %d; stderr %s", code, stderr.String())
	}
}
