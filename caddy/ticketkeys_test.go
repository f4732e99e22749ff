package caddyticketkeys

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// fakeEngine answers GET /v1/ticketkeys/keys/web?format=go the way the
// engine does, on the real clock: key n activates at t0+n*period, is
// published one period ahead and decrypts until not_after =
// activation+period+retain. Unit tests only; the e2e tests use real Vault.
type fakeEngine struct {
	srv            *httptest.Server
	t0             time.Time
	period, retain time.Duration
	mu             sync.Mutex
	down           bool
	reads          int
	lastPublished  int64 // the newest key in the last good answer
}

func newFakeEngine(t *testing.T, period, retain time.Duration) *fakeEngine {
	f := &fakeEngine{t0: time.Now().Truncate(time.Second).Add(-period), period: period, retain: retain}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// newFakeEngineTLS is newFakeEngine over HTTPS, with the PEM file of the
// certificate that verifies it.
func newFakeEngineTLS(t *testing.T, period, retain time.Duration) (*fakeEngine, string) {
	f := &fakeEngine{t0: time.Now().Truncate(time.Second).Add(-period), period: period, retain: retain}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(caFile, block, 0o600); err != nil {
		t.Fatal(err)
	}
	return f, caFile
}

// TestCAFile: a Vault over HTTPS is reached with ca_file, and refused
// without it.
func TestCAFile(t *testing.T) {
	f, caFile := newFakeEngineTLS(t, 30*time.Second, 30*time.Second)
	k := newKeySource(t, f, fmt.Sprintf(`, "ca_file": %q`, caFile))
	if _, err := k.Initialize(nil); err != nil {
		t.Fatalf("with ca_file: %v", err)
	}
	_ = k.Cleanup()
	k = newKeySource(t, f, `, "first_window_timeout": "1s"`)
	if _, err := k.Initialize(nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without ca_file: got %v, want a certificate error", err)
	}
}

func material(n int64) [32]byte { return sha256.Sum256([]byte(fmt.Sprint("caddy test key ", n))) }

func (f *fakeEngine) notBefore(n int64) time.Time { return f.t0.Add(time.Duration(n) * f.period) }
func (f *fakeEngine) notAfter(n int64) time.Time  { return f.notBefore(n).Add(f.period + f.retain) }

// current is the number of the key that encrypts at now.
func (f *fakeEngine) current(now time.Time) int64 { return int64(now.Sub(f.t0) / f.period) }

// number maps a key back to its number (-1: not a key of the engine).
func (f *fakeEngine) number(k [32]byte) int64 {
	for n := int64(0); n < 1000; n++ {
		if material(n) == k {
			return n
		}
	}
	return -1
}

func (f *fakeEngine) setDown(d bool) {
	f.mu.Lock()
	f.down = d
	f.mu.Unlock()
}

func (f *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down := f.down
	f.reads++
	f.mu.Unlock()
	if down {
		http.Error(w, `{"errors":["Vault is sealed"]}`, http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path != "/v1/ticketkeys/keys/web" || r.Header.Get("X-Vault-Token") != "test-token" {
		http.Error(w, `{"errors":["permission denied"]}`, http.StatusForbidden)
		return
	}
	now := time.Now()
	cur := f.current(now)
	f.mu.Lock()
	f.lastPublished = cur + 1
	f.mu.Unlock()
	type key struct {
		ID        string `json:"id"`
		State     string `json:"state"`
		NotBefore string `json:"not_before"`
		NotAfter  string `json:"not_after"`
		TicketKey string `json:"ticket_key"`
	}
	var keys []key
	for n := cur - 3; n <= cur+1; n++ {
		if n < 0 || !f.notAfter(n).After(now) {
			continue
		}
		state := "previous"
		switch {
		case n == cur:
			state = "current"
		case n > cur:
			state = "next"
		}
		m := material(n)
		id := sha256.Sum256(m[:])
		keys = append(keys, key{ID: hex.EncodeToString(id[:16]), State: state,
			NotBefore: f.notBefore(n).UTC().Format(time.RFC3339), NotAfter: f.notAfter(n).UTC().Format(time.RFC3339),
			TicketKey: base64.StdEncoding.EncodeToString(m[:])})
	}
	ttl := max(int64(time.Until(f.notBefore(cur+1))/time.Second), 1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{
		"name": "web", "format": "go", "key_size": 80,
		"rotation_period": int64(f.period / time.Second), "retain": int64(f.retain / time.Second),
		"publish_ahead": int64(f.period / time.Second), "ttl": ttl, "keys": keys,
	}})
}

// TestTLSFromJSONOnly: the environment variables vault/api reads (VAULT_SKIP_VERIFY, VAULT_CACERT,
// VAULT_TLS_SERVER_NAME, proxies) do not change how the module reaches Vault: a Vault whose certificate the
// configured roots do not vouch for is refused with VAULT_SKIP_VERIFY=true and VAULT_CACERT naming its CA,
// with and without a ca_file of another CA; only the module's own ca_file makes it trusted.
func TestTLSFromJSONOnly(t *testing.T) {
	f, caFile := newFakeEngineTLS(t, 30*time.Second, 30*time.Second)
	_, _, otherCA := testcert.New(t, testcert.ECDSAP256).WritePEM(t.TempDir())
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_CACERT", caFile)
	t.Setenv("VAULT_TLS_SERVER_NAME", "example.com")
	t.Setenv("VAULT_PROXY_ADDR", "http://127.0.0.1:1")
	for _, extra := range []string{``, fmt.Sprintf(`, "ca_file": %q`, otherCA)} {
		k := newKeySource(t, f, `, "first_window_timeout": "1s"`+extra)
		if _, err := k.Initialize(nil); err == nil || !strings.Contains(err.Error(), "certificate") {
			_ = k.Cleanup()
			t.Errorf("config {%s} with VAULT_SKIP_VERIFY=true and VAULT_CACERT in the environment: got %v, want a certificate error", extra, err)
		}
	}
	k := newKeySource(t, f, fmt.Sprintf(`, "ca_file": %q`, caFile))
	if _, err := k.Initialize(nil); err != nil {
		t.Fatalf("with the module's ca_file: %v", err)
	}
	_ = k.Cleanup()
}

// newKeySource provisions and validates a KeySource that reads f with a
// token file, as Caddy would load it from JSON.
func newKeySource(t *testing.T, f *fakeEngine, extra string) *KeySource {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw := fmt.Sprintf(`{"address": %q, "keyring": "web", "token_file": %q, "retry_backoff_min": "100ms", "retry_backoff_max": "500ms"%s}`,
		f.srv.URL, tokenFile, extra)
	var k KeySource
	if err := json.Unmarshal([]byte(raw), &k); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := k.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	k.logger = zap.NewNop()
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	return &k
}

// checkList fails unless keys is the list of the moment at, with a grace
// for the time between the change and its delivery: the current key first
// (the one current at `at`, or just before it), then next, then previous
// keys newest first, none past its not_after.
func checkList(t *testing.T, f *fakeEngine, keys [][32]byte, at time.Time, grace time.Duration) {
	t.Helper()
	if len(keys) == 0 {
		t.Fatal("empty key list")
	}
	nums := make([]int64, len(keys))
	for i, k := range keys {
		nums[i] = f.number(k)
	}
	for i, n := range nums {
		if n < 0 && i > 0 {
			t.Fatalf("list %v: key %d is not an engine key", nums, i)
		}
	}
	f.mu.Lock()
	exhaustedFrom := f.notBefore(f.lastPublished + 1)
	f.mu.Unlock()
	if nums[0] < 0 {
		// The node-local key of an exhaustion episode: only once the last
		// key Vault published stopped encrypting.
		if at.Add(grace).Before(exhaustedFrom) {
			t.Fatalf("at %s: a local key encrypts before the published schedule ends at %s", at.Format("15:04:05.000"), exhaustedFrom.Format("15:04:05"))
		}
		nums = nums[1:]
		if len(nums) == 0 {
			return
		}
	} else if c := nums[0]; c != f.current(at) && c != f.current(at.Add(-grace)) {
		t.Fatalf("at %s: first key is %d, want the current key %d", at.Format("15:04:05.000"), c, f.current(at))
	}
	for i, n := range nums {
		if !f.notAfter(n).After(at.Add(-grace)) {
			t.Fatalf("at %s: key %d (list %v) is past its not_after %s", at.Format("15:04:05.000"), n, nums, f.notAfter(n).Format("15:04:05"))
		}
		if i == 0 {
			continue
		}
		switch {
		case n > nums[0] && i != 1:
			t.Fatalf("list %v: the next key must come right after the current key", nums)
		case n < nums[0] && n >= nums[i-1] && nums[i-1] < nums[0]:
			t.Fatalf("list %v: previous keys must be newest first", nums)
		}
	}
}

// TestKeyListCurrentFirstNeverPastNotAfter: Initialize returns the keys of
// the moment, and Next sends a new list at each activation and retirement,
// also while Vault is down; every list has the current key first and no key
// past its not_after.
func TestKeyListCurrentFirstNeverPastNotAfter(t *testing.T) {
	f := newFakeEngine(t, 2*time.Second, 1*time.Second)
	k := newKeySource(t, f, "")
	keys, err := k.Initialize(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Cleanup() })
	checkList(t, f, keys, time.Now(), 0)

	done := make(chan struct{})
	defer close(done)
	next := k.Next(done)
	seenCurrent := map[int64]bool{f.number(keys[0]): true}
	var lists int
	deadline := time.After(9 * time.Second)
	downAt := time.Now().Add(5 * time.Second)
	for time.Now().Before(downAt.Add(3 * time.Second)) {
		select {
		case keys := <-next:
			lists++
			checkList(t, f, keys, time.Now(), 500*time.Millisecond)
			seenCurrent[f.number(keys[0])] = true
		case <-deadline:
			t.Fatal("test deadline")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(downAt) {
			f.setDown(true) // the held window still covers one more activation
		}
	}
	// 8s of 2s periods: 4 activations, each also retiring a key (retain 1s
	// makes retirements fall between activations: about 8 lists).
	if len(seenCurrent) < 4 || lists < 6 {
		t.Fatalf("saw %d current keys in %d lists, want >= 4 and >= 6", len(seenCurrent), lists)
	}
}

// TestReloadSharesSource: two loads of the same config share one Source
// (a reload keeps the window without asking Vault); a changed config gets
// its own; the last Cleanup closes it.
func TestReloadSharesSource(t *testing.T) {
	f := newFakeEngine(t, 30*time.Second, 30*time.Second)
	a := newKeySource(t, f, "")
	if _, err := a.Initialize(nil); err != nil {
		t.Fatal(err)
	}
	f.setDown(true) // a reload while Vault is down still works
	b := newKeySource(t, f, "")
	b.TokenFile = a.TokenFile
	keysB, err := b.Initialize(nil)
	if err != nil {
		t.Fatalf("reload with Vault down: %v", err)
	}
	if a.shared != b.shared {
		t.Fatal("a reload with the same config started a second Source")
	}
	checkList(t, f, keysB, time.Now(), 0)
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if refs, ok := sources.References(b.poolKey); !ok || refs != 1 {
		t.Fatalf("after the old config's cleanup: refs=%d present=%v, want 1", refs, ok)
	}
	f.setDown(false)
	c := newKeySource(t, f, `, "first_window_timeout": "5s"`)
	if _, err := c.Initialize(nil); err != nil {
		t.Fatal(err)
	}
	if c.shared == b.shared {
		t.Fatal("a different config shares the Source")
	}
	key := b.poolKey
	for _, k := range []*KeySource{b, c} {
		if err := k.Cleanup(); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := sources.References(key); ok {
		t.Fatal("the Source is still in the pool after its last config was cleaned up")
	}
}

// TestInitializeErrors: a token that may not read the keyring, and Vault
// down, fail after first_window_timeout with an error that says why and
// holds no credential.
func TestInitializeErrors(t *testing.T) {
	f := newFakeEngine(t, 30*time.Second, 30*time.Second)
	k := newKeySource(t, f, `, "first_window_timeout": "1s"`)
	if err := os.WriteFile(k.TokenFile, []byte("wrong-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Initialize(nil); err == nil || !strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "wrong-token") {
		t.Fatalf("wrong token: got %v, want a permission error without the token", err)
	}
	f.setDown(true)
	k = newKeySource(t, f, `, "first_window_timeout": "1s"`)
	start := time.Now()
	if _, err := k.Initialize(nil); err == nil || !strings.Contains(err.Error(), "no valid window") {
		t.Fatalf("vault down: got %v, want no valid window", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("vault down: Initialize took %s with a 1s first_window_timeout", el)
	}
	if k.poolKey != "" {
		t.Fatal("a failed Initialize holds a pool reference")
	}
}

// TestValidate: every configuration mistake is reported with the field's
// name and the rule.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"no keyring", `{"address": "https://v:8200", "token_file": "/t"}`, `keyring: must be`},
		{"bad keyring", `{"address": "https://v:8200", "token_file": "/t", "keyring": "a/b"}`, `keyring: must be 1-128 characters`},
		{"no auth", `{"address": "https://v:8200", "keyring": "web"}`, `set exactly one of token_file, approle and agent_address, got 0`},
		{"two auths", `{"address": "https://v:8200", "keyring": "web", "token_file": "/t", "approle": {"role_id": "r", "secret_id_file": "/s"}}`, `got 2`},
		{"no address", `{"keyring": "web", "token_file": "/t"}`, `address: required`},
		{"address with agent", `{"address": "https://v:8200", "agent_address": "http://127.0.0.1:8100", "keyring": "web"}`, `address: must be empty with agent_address`},
		{"address scheme", `{"address": "v:8200", "keyring": "web", "token_file": "/t"}`, `address: must start with https://`},
		{"approle both ids", `{"address": "https://v:8200", "keyring": "web", "approle": {"role_id": "r", "role_id_file": "/r", "secret_id_file": "/s"}}`, `exactly one of role_id and role_id_file`},
		{"approle no secret", `{"address": "https://v:8200", "keyring": "web", "approle": {"role_id": "r"}}`, `approle.secret_id_file: required`},
		{"backoff", `{"address": "https://v:8200", "keyring": "web", "token_file": "/t", "retry_backoff_min": "2s", "retry_backoff_max": "1s"}`, `retry_backoff_min, retry_backoff_max: must be > 0 and max >= min, got 2s and 1s`},
		{"remote http address", `{"address": "http://vault.example.com:8200", "keyring": "web", "token_file": "/t"}`, `address: plain http:// only to a loopback address`},
		{"remote http agent", `{"agent_address": "http://10.1.2.3:8100", "keyring": "web"}`, `agent_address: plain http:// only to a loopback address`},
		{"ok agent", `{"agent_address": "http://127.0.0.1:8100", "keyring": "web"}`, ``},
		{"ok agent socket", `{"agent_address": "unix:///run/vault-agent.sock", "keyring": "web"}`, ``},
		{"ok approle", `{"address": "https://v:8200", "keyring": "web", "approle": {"role_id_file": "/r", "secret_id_file": "/s"}}`, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k KeySource
			if err := json.Unmarshal([]byte(tc.json), &k); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			if err := k.Provision(ctx); err != nil {
				t.Fatal(err)
			}
			err := k.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestProvisionPlaceholdersAndDefaults: global placeholders are replaced and
// empty fields get their documented defaults.
func TestProvisionPlaceholdersAndDefaults(t *testing.T) {
	t.Setenv("TICKETKEYS_TEST_VAULT_ADDR", "https://vault.example:8200")
	var k KeySource
	if err := json.Unmarshal([]byte(`{"address": "{env.TICKETKEYS_TEST_VAULT_ADDR}", "keyring": "web", "approle": {"role_id": "r", "secret_id_file": "/s"}}`), &k); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := k.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if k.Address != "https://vault.example:8200" {
		t.Errorf("address %q, want the environment's value", k.Address)
	}
	if k.Mount != "ticketkeys" || k.AppRole.MountPath != "approle" || time.Duration(k.FirstWindowTimeout) != time.Minute ||
		time.Duration(k.RetryBackoffMin) != 500*time.Millisecond || time.Duration(k.RetryBackoffMax) != 30*time.Second {
		t.Errorf("defaults: mount %q, approle mount %q, first_window_timeout %s, backoff %s..%s", k.Mount, k.AppRole.MountPath,
			time.Duration(k.FirstWindowTimeout), time.Duration(k.RetryBackoffMin), time.Duration(k.RetryBackoffMax))
	}
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
}
