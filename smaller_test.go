package ticketkeys

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// countingStorage counts Puts and Gets and can make Puts of keyrings fail.
type countingStorage struct {
	logical.Storage
	puts, gets atomic.Int64
	failPuts   atomic.Bool
}

func (s *countingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.puts.Add(1)
	if s.failPuts.Load() {
		return errors.New("disk on fire")
	}
	return s.Storage.Put(ctx, e)
}

func (s *countingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	return s.Storage.Get(ctx, key)
}

func countingBackend(t *testing.T) (*testBackend, *countingStorage) {
	t.Helper()
	tb := getBackend(t)
	cs := &countingStorage{Storage: tb.storage}
	tb.storage = cs
	return tb, cs
}

func TestWritesThatChangeNothingDoNotWrite(t *testing.T) {
	tb, cs := countingBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "30m", "retain": "2h"})
	tb.mustRequest(t, logical.UpdateOperation, "config", map[string]interface{}{"max_key_lifetime": "100h", "max_read_ttl": "2m"})
	for _, w := range []struct {
		path string
		data map[string]interface{}
	}{
		{"keys/web", nil},
		{"keys/web", map[string]interface{}{"rotation_period": "30m"}},
		{"keys/web", map[string]interface{}{"rotation_period": "30m", "retain": "2h", "key_size": 80}},
		{"config", nil},
		{"config", map[string]interface{}{"max_key_lifetime": "100h", "max_read_ttl": "2m"}},
	} {
		before := cs.puts.Load()
		resp := tb.mustRequest(t, logical.UpdateOperation, w.path, w.data)
		if n := cs.puts.Load() - before; n != 0 {
			t.Fatalf("write of %s %v changed nothing but wrote %d times", w.path, w.data, n)
		}
		if resp == nil || len(resp.Data) == 0 {
			t.Fatalf("write of %s %v returned no description", w.path, w.data)
		}
	}
	before := cs.puts.Load()
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"retain": "3h"})
	if cs.puts.Load() == before {
		t.Fatal("a write that changes retain did not write")
	}
}

func TestPublishAheadCanFollowRotationPeriodAgain(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "publish_ahead": "10m"})
	resp := tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"publish_ahead": 0})
	if resp.Data["publish_ahead"] != int64(3600) {
		t.Fatalf("publish_ahead=0 gave %v, want rotation_period (3600)", resp.Data["publish_ahead"])
	}
	resp = tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "20m"})
	if resp.Data["publish_ahead"] != int64(1200) {
		t.Fatalf("after publish_ahead=0 it does not follow rotation_period: %v", resp.Data["publish_ahead"])
	}
}

// TestEntriesWithoutSchemaVersionLoad: entries written before schema_version
// existed load and serve; the next write adds the version; an entry from a
// newer plugin is refused with a message that says what to do.
func TestEntriesWithoutSchemaVersionLoad(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", nil)
	for _, key := range []string{keyringPath("web"), configStorageKey} {
		if key == configStorageKey {
			// The first release wrote only max_key_lifetime.
			put(t, tb, key, map[string]interface{}{"max_key_lifetime": int64(100 * time.Hour)})
			continue
		}
		entry, _ := tb.storage.Get(t.Context(), key)
		var m map[string]interface{}
		if err := json.Unmarshal(entry.Value, &m); err != nil {
			t.Fatal(err)
		}
		if m["schema_version"] != float64(1) {
			t.Fatalf("%s: stored schema_version %v, want 1", key, m["schema_version"])
		}
		delete(m, "schema_version")
		put(t, tb, key, m)
		tb.Invalidate(t.Context(), key)
	}
	tb.Invalidate(t.Context(), configStorageKey)
	_, keys := readWindow(t, tb, "web", "nginx")
	if states(keys) != "current,next" {
		t.Fatalf("old entry reads as %s", states(keys))
	}
	cfg := tb.mustRequest(t, logical.ReadOperation, "config", nil)
	if cfg.Data["max_key_lifetime"] != int64(100*3600) || cfg.Data["max_read_ttl"] != int64(300) {
		t.Fatalf("old config reads as %v", cfg.Data)
	}
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"retain": "1h"})
	if kr, _ := loadKeyring(t.Context(), tb.storage, "web"); kr.SchemaVersion != keyringSchemaVersion {
		t.Fatalf("rewritten entry has schema_version %d", kr.SchemaVersion)
	}

	entry, _ := tb.storage.Get(t.Context(), keyringPath("web"))
	var m map[string]interface{}
	_ = json.Unmarshal(entry.Value, &m)
	m["schema_version"] = 99
	put(t, tb, keyringPath("web"), m)
	tb.Invalidate(t.Context(), keyringPath("web"))
	resp, err := tb.request(t, logical.ReadOperation, "keys/web", nil)
	if msg := errorText(resp, err); !strings.Contains(msg, "schema_version 99") || !strings.Contains(msg, "upgrade the plugin") {
		t.Fatalf("a newer entry gave %q", msg)
	}
}

func put(t *testing.T, tb *testBackend, key string, v interface{}) {
	t.Helper()
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.storage.Put(t.Context(), entry); err != nil {
		t.Fatal(err)
	}
}

// TestMaintenanceLogsOnceAndHonoursContext: a failing keyring is reported
// once (the periodic function returns it for Vault to log, naming the
// keyring, and does not log it itself), and maintenance stops between
// keyrings when the context ends.
func TestMaintenanceLogsOnceAndHonoursContext(t *testing.T) {
	tb, cs := countingBackend(t)
	for _, n := range []string{"a", "b", "c"} {
		tb.mustRequest(t, logical.UpdateOperation, "keys/"+n, map[string]interface{}{"rotation_period": "10m"})
	}
	tb.clock.Advance(time.Hour)
	cs.failPuts.Store(true)
	err := tb.periodicFunc(context.Background(), &logical.Request{Storage: cs})
	if err == nil || !strings.Contains(err.Error(), `keyring "b"`) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("periodic error %v does not name the failing keyrings", err)
	}
	if n := strings.Count(tb.logs.String(), "disk on fire"); n != 0 {
		t.Fatalf("the failure was logged %d times by the engine as well as returned to Vault", n)
	}
	cs.failPuts.Store(false)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gets, puts := cs.gets.Load(), cs.puts.Load()
	b := newBackend(tb.clock.Now, tb.random) // a fresh instance: nothing cached
	if err := b.Setup(context.Background(), &logical.BackendConfig{StorageView: cs, Logger: hclog.NewNullLogger(), System: logical.TestSystemView()}); err != nil {
		t.Fatal(err)
	}
	err = b.periodicFunc(ctx, &logical.Request{Storage: cs})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("maintenance with an ended context returned %v", err)
	}
	if cs.puts.Load() != puts || cs.gets.Load()-gets > 1 {
		t.Fatalf("maintenance with an ended context still read %d and wrote %d entries", cs.gets.Load()-gets, cs.puts.Load()-puts)
	}
}
