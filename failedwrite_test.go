package ticketkeys

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// commitThenFailStorage commits the next write and then reports it failed,
// as a storage write whose context ended (timeout, cancellation) after the
// backend had already applied it.
type commitThenFailStorage struct {
	logical.Storage
	failNext bool
}

var errAfterCommit = errors.New("context deadline exceeded (the write was applied)")

func (s *commitThenFailStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if err := s.Storage.Put(ctx, e); err != nil {
		return err
	}
	if s.failNext {
		s.failNext = false
		return errAfterCommit
	}
	return nil
}

func (s *commitThenFailStorage) Delete(ctx context.Context, key string) error {
	if err := s.Storage.Delete(ctx, key); err != nil {
		return err
	}
	if s.failNext {
		s.failNext = false
		return errAfterCommit
	}
	return nil
}

// TestWriteFailedAfterCommitDropsTheCache: a write that reports an error after
// storage applied it must not leave the old keyring or config cached. A
// purge that committed is never served afterwards (nor written back by
// maintenance), a deleted keyring is not served nor re-created, and a
// committed config change applies to the next read.
func TestWriteFailedAfterCommitDropsTheCache(t *testing.T) {
	tb := getBackend(t)
	s := &commitThenFailStorage{Storage: tb.storage}
	tb.storage = s
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "retain": "12h"})
	tb.clock.Advance(2 * time.Hour)
	tb.tick(t)
	_, before := readWindow(t, tb, "web", "go")

	// A purge that commits, then fails.
	s.failNext = true
	if _, err := tb.request(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now", "purge_previous": true}); err == nil {
		t.Fatal("the rotation's write failed, but the request succeeded")
	}
	stored, err := loadKeyring(context.Background(), tb.storage, "web")
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	for _, k := range stored.Keys {
		live[k.ID()] = true
	}
	_, after := readWindow(t, tb, "web", "go")
	for _, k := range after {
		if !live[k.ID] {
			t.Errorf("after a purge that committed, a read serves key %s, which storage no longer holds", k.ID[:8])
		}
	}
	tb.clock.Advance(time.Hour)
	tb.tick(t)
	stored, _ = loadKeyring(context.Background(), tb.storage, "web")
	for _, k := range before {
		for _, sk := range stored.Keys {
			if sk.ID() == k.ID && k.State == "previous" {
				t.Errorf("maintenance wrote purged key %s back to storage", k.ID[:8])
			}
		}
	}

	// A delete that commits, then fails.
	s.failNext = true
	if _, err := tb.request(t, logical.DeleteOperation, "keys/web", nil); err == nil {
		t.Fatal("the delete's write failed, but the request succeeded")
	}
	resp, err := tb.request(t, logical.ReadOperation, "keys/web", nil)
	if err == nil && resp != nil && !resp.IsError() {
		t.Error("after a delete that committed, a read still serves the keyring")
	}
	tb.clock.Advance(time.Hour)
	tb.tick(t)
	if kr, _ := loadKeyring(context.Background(), tb.storage, "web"); kr != nil {
		t.Error("after a delete that committed, maintenance re-created the keyring")
	}

	// A config write that commits, then fails.
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h"})
	readWindow(t, tb, "web", "go") // fills the config cache
	s.failNext = true
	if _, err := tb.request(t, logical.UpdateOperation, "config", map[string]interface{}{"max_read_ttl": "10s"}); err == nil {
		t.Fatal("the config write failed, but the request succeeded")
	}
	if resp, _ := readWindow(t, tb, "web", "go"); resp.Data["ttl"].(int64) > 10 {
		t.Errorf("after max_read_ttl=10s committed, a read hands out ttl %d", resp.Data["ttl"])
	}
}
