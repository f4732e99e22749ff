package vaultclient

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// vaultStub is an HTTPS server with its own CA answering every request with an empty secret, recording the
// headers; it returns the CA's PEM file.
func vaultStub(t *testing.T) (*httptest.Server, string, *[]http.Header) {
	t.Helper()
	var mu sync.Mutex
	var seen []http.Header
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{"ok":"yes"}}`))
	}))
	cert := testcert.New(t, testcert.ECDSAP256)
	srv.TLS = cert.ServerConfig()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, _, ca := cert.WritePEM(t.TempDir())
	return srv, ca, &seen
}

// TestNewIgnoresTheEnvironment: the environment variables vault/api reads to weaken or reroute TLS change
// nothing. With VAULT_SKIP_VERIFY=true a server the configured roots do not vouch for is still refused;
// with its CA file it is reached directly (not through VAULT_PROXY_ADDR) with no token, namespace or
// header from the environment.
func TestNewIgnoresTheEnvironment(t *testing.T) {
	srv, ca, seen := vaultStub(t)
	_, otherCA, _ := vaultStub(t)
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_CACERT", ca)
	t.Setenv("VAULT_TLS_SERVER_NAME", "elsewhere.invalid")
	t.Setenv("VAULT_PROXY_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "env-token")
	t.Setenv("VAULT_NAMESPACE", "env-ns")
	t.Setenv("VAULT_HEADERS", `{"X-From-Env":"1"}`)

	for _, caFile := range []string{"", otherCA} {
		vc, err := New(Config{Address: srv.URL, CACertFile: caFile})
		if err != nil {
			t.Fatal(err)
		}
		_, err = vc.Logical().Read("ticketkeys/keys/web")
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("CA file %q with VAULT_SKIP_VERIFY=true and VAULT_CACERT set: read err = %v; want a certificate error", caFile, err)
		}
	}
	vc, err := New(Config{Address: srv.URL, CACertFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().Read("ticketkeys/keys/web"); err != nil {
		t.Fatalf("read through the configured CA, directly: %v", err)
	}
	h := (*seen)[len(*seen)-1]
	for _, name := range []string{"X-Vault-Token", "X-Vault-Namespace", "X-From-Env"} {
		if h.Get(name) != "" {
			t.Errorf("request carried %s from the environment", name)
		}
	}
	if h.Get("X-Vault-Request") != "true" {
		t.Errorf("request lacks X-Vault-Request: true (Agent's SSRF guard)")
	}
	if got := EnvironmentIgnored(); len(got) < 6 {
		t.Errorf("EnvironmentIgnored() = %v; want the VAULT_* TLS and routing variables set above", got)
	}
}

// TestCheckAddress: plain HTTP only to a loopback address, unless explicitly allowed; errors name the
// field and the value.
func TestCheckAddress(t *testing.T) {
	for _, ok := range []string{"https://vault.example.com:8200", "http://127.0.0.1:8100", "http://127.9.9.9:8100",
		"http://[::1]:8100", "http://localhost:8100", "unix:///run/vault-agent.sock"} {
		if err := CheckAddress("address", ok, false); err != nil {
			t.Errorf("CheckAddress(%q): %v; want it accepted", ok, err)
		}
	}
	for _, bad := range []string{"http://vault.example.com:8200", "http://10.0.0.5:8200", "http://[2001:db8::1]:8200",
		"http://localhost.example.com:8200", "ftp://vault:21", "vault.example.com:8200", ""} {
		err := CheckAddress("agent_address", bad, false)
		if err == nil || !strings.Contains(err.Error(), "agent_address") || !strings.Contains(err.Error(), bad) {
			t.Errorf("CheckAddress(%q) = %v; want an error naming agent_address and the value", bad, err)
		}
	}
	if err := CheckAddress("-vault-addr", "http://10.0.0.5:8200", true); err != nil {
		t.Errorf("allowed insecure http: %v", err)
	}
}
