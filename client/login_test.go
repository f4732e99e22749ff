package client

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// fakeAuth logs in by writing to auth/fake/login on the fake server.
type fakeAuth struct{}

func (fakeAuth) Login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	return c.Logical().WriteWithContext(ctx, "auth/fake/login", map[string]any{"user": "node"})
}

// TestKeepLogin: the first login blocks until it succeeds (after failures),
// sets the token on the client, and when the token's lease ends KeepLogin
// logs in again by itself; Close stops it and is idempotent.
func TestKeepLogin(t *testing.T) {
	var logins, calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/v1/auth/fake/login" {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errors":[]}`))
			return
		}
		if calls.Add(1) <= 2 {
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"errors":["temporarily unavailable"]}`))
			return
		}
		n := logins.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{
			"client_token": fmt.Sprintf("token-%d", n), "lease_duration": 1, "renewable": false,
		}})
	}))
	defer srv.Close()
	cfg := api.DefaultConfig()
	cfg.Address = srv.URL
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := KeepLogin(ctx, c, fakeAuth{}, WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := l.Logins(); n != 1 || c.Token() != "token-1" || calls.Load() != 3 {
		t.Fatalf("first login: logins=%d token-is-1=%v calls=%d, want 1, true, 3", n, c.Token() == "token-1", calls.Load())
	}
	deadline := time.Now().Add(8 * time.Second)
	for {
		if n, _ := l.Logins(); n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			n, _ := l.Logins()
			t.Fatalf("logins after the 1s leases ran out: %d, want >= 3", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := c.Token(); got != fmt.Sprintf("token-%d", logins.Load()) {
		t.Fatal("the client does not carry the latest token")
	}
	_ = l.Close()
	_ = l.Close()
	n := logins.Load()
	time.Sleep(1500 * time.Millisecond)
	if logins.Load() != n {
		t.Fatalf("logged in after Close: %d -> %d", n, logins.Load())
	}

	// A context that ends before any login succeeds fails with the last error.
	calls.Store(-1000)
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := KeepLogin(short, c, fakeAuth{}, WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond), WithLogger(slog.New(slog.DiscardHandler))); err == nil {
		t.Fatal("KeepLogin succeeded with a failing server")
	}
}
