package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

type fixedStatus client.Status

func (f fixedStatus) Status() client.Status { return client.Status(f) }

// TestStatusNotOnPublicPort: the HTTPS port serves the application only;
// the status page and metrics are on the admin handler.
func TestStatusNotOnPublicPort(t *testing.T) {
	for _, path := range []string{"/ticketkeys/status", "/metrics"} {
		rec := httptest.NewRecorder()
		publicHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if strings.Contains(rec.Body.String(), "exhausted") || strings.Contains(rec.Body.String(), "ticketkeys_") {
			t.Fatalf("public port serves %s: %q", path, rec.Body.String())
		}
	}
	st := fixedStatus{Now: time.Now(), Refreshes: 3, CurrentID: "00112233445566778899aabbccddeeff"}
	admin := adminHandler(st, "web")
	rec := httptest.NewRecorder()
	admin.ServeHTTP(rec, httptest.NewRequest("GET", "/ticketkeys/status", nil))
	var got struct {
		Refreshes uint64 `json:"refreshes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK || got.Refreshes != 3 {
		t.Fatalf("admin status: HTTP %d, %v, refreshes %d", rec.Code, err, got.Refreshes)
	}
	if strings.Contains(rec.Body.String(), st.CurrentID) {
		t.Fatal("the status page shows a key id")
	}
	rec = httptest.NewRecorder()
	admin.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `ticketkeys_refreshes_total{keyring="web",result="success"} 3`) {
		t.Fatalf("admin metrics: HTTP %d\n%s", rec.Code, rec.Body.String())
	}
}

// TestCheckAdminAddr: the admin listener is loopback only.
func TestCheckAdminAddr(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"", ""},
		{"127.0.0.1:9090", ""},
		{"[::1]:9090", ""},
		{"localhost:9090", ""},
		{"0.0.0.0:9090", "must be a loopback address"},
		{":9090", "must be a loopback address"},
		{"10.0.0.1:9090", "must be a loopback address"},
		{"127.0.0.1", "must be host:port"},
	} {
		err := checkAdminAddr(tc.addr)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkAdminAddr(%q): got %v, want %q", tc.addr, err, tc.want)
		}
	}
}

// TestVaultClientFromFlagsOnly: VAULT_SKIP_VERIFY and VAULT_CACERT in the environment do not make an
// unverified Vault acceptable, a remote http:// address is refused unless -vault-insecure-http, and that
// flag is printed.
func TestVaultClientFromFlagsOnly(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{}}`))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_CACERT", ca)
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	vc, err := vaultClient(srv.URL, "", false, logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().Read("ticketkeys/keys/web"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("no -vault-ca-cert, VAULT_SKIP_VERIFY=true and VAULT_CACERT set: read err = %v; want a certificate error", err)
	}
	if !strings.Contains(logs.String(), "VAULT_SKIP_VERIFY") {
		t.Errorf("the ignored VAULT_SKIP_VERIFY is not logged: %q", logs.String())
	}
	if vc, err = vaultClient(srv.URL, ca, false, logger); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().Read("ticketkeys/keys/web"); err != nil {
		t.Errorf("with -vault-ca-cert: %v", err)
	}
	if _, err := vaultClient("http://vault.example.com:8200", "", false, logger); err == nil || !strings.Contains(err.Error(), "-vault-addr") {
		t.Errorf("remote http:// without -vault-insecure-http: err = %v; want a refusal naming -vault-addr", err)
	}
	if _, err := vaultClient("http://vault.example.com:8200", "", true, logger); err != nil || !strings.Contains(logs.String(), "INSECURE") {
		t.Errorf("remote http:// with -vault-insecure-http: err = %v, logs %q; want it allowed and printed", err, logs.String())
	}
}
