package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// tokenVault is a Vault stub whose tokens expire unless renewed: AppRole
// login, renew-self and lookup-self, and the keyring read (403 for an
// unknown or expired token).
type tokenVault struct {
	*httptest.Server
	mu      sync.Mutex
	expiry  map[string]time.Time
	ttl     time.Duration
	renews  int
	logins  int
	roleID  string
	secret  string
	keyData map[string]any
}

func newTokenVault(t *testing.T, ttl time.Duration) *tokenVault {
	v := &tokenVault{expiry: map[string]time.Time{}, ttl: ttl, roleID: "role-1", secret: "secret-1"}
	now := time.Now().UTC().Truncate(time.Second)
	var seed, name [32]byte
	_, _ = rand.Read(seed[:])
	_, _ = rand.Read(name[:16])
	v.keyData = map[string]any{"name": "web", "format": "go", "key_size": 80, "rotation_period": 3600, "retain": 3600,
		"publish_ahead": 600, "ttl": 100, "keys": []map[string]any{{"id": hex.EncodeToString(name[:16]), "state": "current",
			"not_before": now.Add(-time.Minute).Format(time.RFC3339), "not_after": now.Add(2 * time.Hour).Format(time.RFC3339),
			"ticket_key": base64.StdEncoding.EncodeToString(seed[:])}}}
	v.Server = httptest.NewServer(http.HandlerFunc(v.serve))
	t.Cleanup(v.Close)
	return v
}

func (v *tokenVault) issue() map[string]any {
	tok := fmt.Sprintf("tok-%d", time.Now().UnixNano())
	v.expiry[tok] = time.Now().Add(v.ttl)
	return map[string]any{"client_token": tok, "lease_duration": int(v.ttl / time.Second), "renewable": true,
		"policies": []string{"ticketkeys-fleetcheck-web", "ticketkeys-token-self"}}
}

func (v *tokenVault) serve(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	defer v.mu.Unlock()
	reply := func(body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}
	if r.URL.Path == "/v1/auth/approle/login" {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		if in["role_id"] != v.roleID || in["secret_id"] != v.secret {
			http.Error(w, `{"errors":["invalid role or secret ID"]}`, http.StatusBadRequest)
			return
		}
		v.logins++
		reply(map[string]any{"auth": v.issue()})
		return
	}
	tok := r.Header.Get("X-Vault-Token")
	exp, ok := v.expiry[tok]
	if !ok || time.Now().After(exp) {
		http.Error(w, `{"errors":["permission denied"]}`, http.StatusForbidden)
		return
	}
	switch r.URL.Path {
	case "/v1/auth/token/renew-self":
		v.renews++
		v.expiry[tok] = time.Now().Add(v.ttl)
		reply(map[string]any{"auth": map[string]any{"client_token": tok, "lease_duration": int(v.ttl / time.Second), "renewable": true}})
	case "/v1/auth/token/lookup-self":
		reply(map[string]any{"data": map[string]any{"id": tok, "ttl": int(time.Until(exp) / time.Second), "renewable": true,
			"period": int(v.ttl / time.Second), "policies": []string{"ticketkeys-fleetcheck-web", "ticketkeys-token-self"}}})
	case "/v1/ticketkeys/keys/web":
		reply(map[string]any{"data": v.keyData})
	default:
		http.NotFound(w, r)
	}
}

// vaultErrors runs the command in continuous mode for d and returns the
// Vault errors of its rounds (from -evidence) and how many rounds ran.
func vaultErrors(t *testing.T, args []string, d time.Duration) ([]string, int) {
	t.Helper()
	evidence := filepath.Join(t.TempDir(), "evidence.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args = append(args, "-continuous", "-interval", "300ms", "-timeout", "500ms", "-table=false", "-evidence", evidence,
		"-keyring", "web", "-format", "go", "-node", "127.0.0.1:1")
	if code := run(ctx, args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, want 0 (continuous mode ends cleanly)\n%s", code, stderr.String())
	}
	f, err := os.Open(evidence)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var errs []string
	rounds := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rounds++
		var rep struct {
			VaultError string `json:"vault_error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.VaultError != "" {
			errs = append(errs, rep.VaultError)
		}
	}
	return errs, rounds
}

// TestTokenRenewed: continuous mode keeps its Vault token alive. A token
// from VAULT_TOKEN (the doc's periodic token) is renewed before its TTL
// runs out; with -approle-role-id-file and -approle-secret-id-file the
// command logs in through the client package (client.KeepLogin) and renews.
// Tokens here live 2 s and the run lasts 5 s: without renewal the reads
// after 2 s are refused.
func TestTokenRenewed(t *testing.T) {
	v := newTokenVault(t, 2*time.Second)
	v.mu.Lock()
	tok := v.issue()["client_token"].(string)
	v.mu.Unlock()
	t.Setenv("VAULT_TOKEN", tok)
	errs, rounds := vaultErrors(t, []string{"-vault-addr", v.URL}, 5*time.Second)
	if len(errs) > 0 || rounds < 5 {
		t.Errorf("VAULT_TOKEN: %d of %d rounds could not read Vault (first: %v); want the token renewed", len(errs), rounds, errs)
	}

	dir := t.TempDir()
	roleID, secretID := filepath.Join(dir, "role-id"), filepath.Join(dir, "secret-id")
	_ = os.WriteFile(roleID, []byte(v.roleID+"\n"), 0o600)
	_ = os.WriteFile(secretID, []byte(v.secret+"\n"), 0o600)
	t.Setenv("VAULT_TOKEN", "")
	errs, rounds = vaultErrors(t, []string{"-vault-addr", v.URL, "-approle-role-id-file", roleID, "-approle-secret-id-file", secretID}, 5*time.Second)
	if len(errs) > 0 || rounds < 5 {
		t.Errorf("AppRole: %d of %d rounds could not read Vault (first: %v); want a login kept alive", len(errs), rounds, errs)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.logins == 0 || v.renews == 0 {
		t.Errorf("%d logins and %d renewals; want both", v.logins, v.renews)
	}
}
