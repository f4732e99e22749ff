package ticketkeys

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// failingStorage fails every operation, like the no-op storage Vault gives a
// plugin at registration time would if it were used.
type failingStorage struct{ calls int }

func (f *failingStorage) List(context.Context, string) ([]string, error) {
	f.calls++
	return nil, errFail
}
func (f *failingStorage) Get(context.Context, string) (*logical.StorageEntry, error) {
	f.calls++
	return nil, errFail
}
func (f *failingStorage) Put(context.Context, *logical.StorageEntry) error { f.calls++; return errFail }
func (f *failingStorage) Delete(context.Context, string) error             { f.calls++; return errFail }

var errFail = errors.New("storage must not be used here")

func TestFactoryDoesNoStorageIO(t *testing.T) {
	s := &failingStorage{}
	b, err := Factory(context.Background(), &logical.BackendConfig{StorageView: s, Logger: hclog.NewNullLogger(), System: logical.TestSystemView()})
	if err != nil {
		t.Fatalf("Factory: %v", err)
	}
	if s.calls != 0 {
		t.Fatalf("Factory touched storage %d times", s.calls)
	}
	if b.(*backend).RunningVersion != Version {
		t.Fatalf("RunningVersion %q, want %q", b.(*backend).RunningVersion, Version)
	}
}

func TestEveryPathAndFieldIsDocumented(t *testing.T) {
	b := newBackend(time.Now, nil)
	for _, p := range b.Paths {
		if p.HelpSynopsis == "" || p.HelpDescription == "" {
			t.Errorf("path %s lacks help", p.Pattern)
		}
		if p.DisplayAttrs == nil || p.DisplayAttrs.OperationPrefix != operationPrefix {
			t.Errorf("path %s lacks the operation prefix %q", p.Pattern, operationPrefix)
		}
		for name, f := range p.Fields {
			if f.Description == "" {
				t.Errorf("path %s field %s lacks a description", p.Pattern, name)
			}
		}
	}
	if len(b.PathsSpecial.SealWrapStorage) == 0 || b.PathsSpecial.SealWrapStorage[0] != keyringStoragePrefix {
		t.Error("keyring entries are not declared for seal wrapping")
	}
}

func TestPeriodicSkipsWhenStorageIsReadOnly(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "5m", "retain": "0s"})
	before, _ := loadKeyring(t.Context(), tb.storage, "web")

	// A performance standby must not write: the periodic function leaves storage alone.
	standby := logical.TestSystemView()
	standby.ReplicationStateVal = consts.ReplicationPerformanceStandby
	b := newBackend(tb.clock.Now, tb.random)
	if err := b.Setup(context.Background(), &logical.BackendConfig{StorageView: tb.storage, Logger: hclog.NewNullLogger(), System: standby}); err != nil {
		t.Fatal(err)
	}
	tb.clock.Advance(time.Hour)
	if err := b.periodicFunc(context.Background(), &logical.Request{Storage: tb.storage}); err != nil {
		t.Fatal(err)
	}
	after, _ := loadKeyring(t.Context(), tb.storage, "web")
	if !after.UpdatedAt.Equal(before.UpdatedAt) || len(after.Keys) != len(before.Keys) {
		t.Fatal("periodic function wrote storage on a performance standby")
	}
	// The active node's tick does the work.
	tb.tick(t)
	after, _ = loadKeyring(t.Context(), tb.storage, "web")
	if after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatal("the active node's tick did not maintain the keyring")
	}
}

func TestInvalidateDropsCachedKeyring(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", nil)
	_, first := readWindow(t, tb, "web", "nginx")

	// Another node replaced the entry (replication): after Invalidate the read sees it.
	other := getBackend(t)
	other.random = tb.random
	other.mustRequest(t, logical.UpdateOperation, "keys/web", nil)
	entry, _ := other.storage.Get(t.Context(), keyringPath("web"))
	if err := tb.storage.Put(t.Context(), entry); err != nil {
		t.Fatal(err)
	}
	if _, again := readWindow(t, tb, "web", "nginx"); ids(again) != ids(first) {
		t.Fatal("read did not use the cached keyring") // proves the cache is in play
	}
	tb.invalidate(context.Background(), keyringPath("web"))
	if _, fresh := readWindow(t, tb, "web", "nginx"); ids(fresh) == ids(first) {
		t.Fatal("Invalidate did not drop the cached keyring")
	}
}

func TestCachedKeyringIsNeverChangedInPlace(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "5m", "retain": "0s"})
	cached := tb.cached(t, "web")
	firstName := append([]byte(nil), cached.Keys[0].Name...)
	n := len(cached.Keys)

	tb.clock.Advance(30 * time.Minute) // expires and wipes keys in the updated copy
	tb.tick(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now", "purge_previous": true})

	if len(cached.Keys) != n || string(cached.Keys[0].Name) != string(firstName) {
		t.Fatal("an update changed a keyring that readers may still hold")
	}
	fresh := tb.cached(t, "web")
	if fresh == cached {
		t.Fatal("the cache still holds the old keyring after updates")
	}
}

// cached returns the keyring a read would use (the cached copy).
func (tb *testBackend) cached(t *testing.T, name string) *keyring {
	t.Helper()
	l := tb.rlockKeyring(name)
	defer l.unlock()
	kr, err := l.load(t.Context(), tb.storage)
	if err != nil || kr == nil {
		t.Fatalf("loading keyring %q: %v", name, err)
	}
	return kr
}
