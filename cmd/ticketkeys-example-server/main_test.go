package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
