package ticketkeys

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// fakeClock is a settable clock shared by a test and its backend.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// testStart is a round instant, so schedule times fall on minute steps.
var testStart = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

// testBackend is a backend over in-memory storage with a fake clock, a
// deterministic key source, no ttl jitter and a captured log.
type testBackend struct {
	*backend
	storage logical.Storage
	clock   *fakeClock
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func getBackend(t testing.TB) *testBackend {
	t.Helper()
	clock := &fakeClock{now: testStart}
	random := rand.NewChaCha8([32]byte{1, 2, 3})
	b := newBackend(clock.Now, random)
	b.jitter = func(int64) int64 { return 0 }
	logs := &syncBuffer{}
	conf := &logical.BackendConfig{
		StorageView: &logical.InmemStorage{},
		Logger:      hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}),
		System:      logical.TestSystemView(),
	}
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	return &testBackend{backend: b, storage: conf.StorageView, clock: clock, logs: logs}
}

// request sends one request the way Vault does (see sendAsVault).
func (tb *testBackend) request(t testing.TB, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	t.Helper()
	return sendAsVault(context.Background(), tb.backend, tb.storage, op, path, data)
}

// sendAsVault sends one request to b over storage s the way Vault does, including the existence check
// that turns a write into a create or an update. An existence check that fails (a field that does not
// parse) is returned as the error, as Vault answers it with a 400.
func sendAsVault(ctx context.Context, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: s}
	if op == logical.UpdateOperation {
		found, exists, err := b.HandleExistenceCheck(ctx, req)
		if err != nil {
			return nil, err
		}
		if found && !exists {
			req.Operation = logical.CreateOperation
		}
	}
	return b.HandleRequest(ctx, req)
}

// mustRequest fails the test on any error or error response.
func (tb *testBackend) mustRequest(t testing.TB, op logical.Operation, path string, data map[string]interface{}) *logical.Response {
	t.Helper()
	resp, err := tb.request(t, op, path, data)
	if err != nil {
		t.Fatalf("%s %s: %v", op, path, err)
	}
	if resp != nil && resp.IsError() {
		t.Fatalf("%s %s: error response: %v", op, path, resp.Error())
	}
	return resp
}

func (tb *testBackend) tick(t testing.TB) {
	t.Helper()
	req := &logical.Request{Operation: logical.RollbackOperation, Storage: tb.storage}
	if err := tb.periodicFunc(context.Background(), req); err != nil {
		t.Fatalf("periodic: %v", err)
	}
}

// windowKeyOut is one key of a read response.
type windowKeyOut struct {
	ID, State           string
	NotBefore, NotAfter time.Time
	Material            []byte
}

func readWindow(t testing.TB, tb *testBackend, name, format string) (*logical.Response, []windowKeyOut) {
	t.Helper()
	resp := tb.mustRequest(t, logical.ReadOperation, "keys/"+name, map[string]interface{}{"format": format})
	return resp, decodeKeys(t, resp)
}

func decodeKeys(t testing.TB, resp *logical.Response) []windowKeyOut {
	t.Helper()
	raw := resp.Data["keys"].([]map[string]interface{})
	out := make([]windowKeyOut, 0, len(raw))
	for _, m := range raw {
		k := windowKeyOut{ID: m["id"].(string), State: m["state"].(string)}
		var err error
		if k.NotBefore, err = time.Parse(time.RFC3339, m["not_before"].(string)); err != nil {
			t.Fatal(err)
		}
		if k.NotAfter, err = time.Parse(time.RFC3339, m["not_after"].(string)); err != nil {
			t.Fatal(err)
		}
		if s, ok := m[keyMaterialField].(string); ok {
			if k.Material, err = base64.StdEncoding.DecodeString(s); err != nil {
				t.Fatalf("key %s: material is not base64", k.ID)
			}
		}
		out = append(out, k)
	}
	return out
}

// assertNoMaterial fails when any encoding of any of the given keys appears in text.
func assertNoMaterial(t testing.TB, what, text string, keys []windowKeyOut) {
	t.Helper()
	for _, k := range keys {
		for _, enc := range []string{
			base64.StdEncoding.EncodeToString(k.Material),
			base64.RawStdEncoding.EncodeToString(k.Material),
			base64.URLEncoding.EncodeToString(k.Material),
			hex.EncodeToString(k.Material),
			hex.EncodeToString(k.Material[16:]),
		} {
			if strings.Contains(text, enc) {
				t.Fatalf("%s contains key material of key %s", what, k.ID)
			}
		}
	}
}
