package ticketkeys

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// textReadOnlyStorage refuses writes the way the SDK's gRPC storage client
// does on a standby: errors.New of the text of logical.ErrReadOnly, which
// errors.Is does not match. It counts Gets and write attempts.
type textReadOnlyStorage struct {
	logical.Storage
	gets, writes atomic.Int64
}

func (s *textReadOnlyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	return s.Storage.Get(ctx, key)
}

func (s *textReadOnlyStorage) Put(context.Context, *logical.StorageEntry) error {
	s.writes.Add(1)
	return errors.New(logical.ErrReadOnly.Error())
}

func (s *textReadOnlyStorage) Delete(context.Context, string) error {
	s.writes.Add(1)
	return errors.New(logical.ErrReadOnly.Error())
}

// countingReader counts reads of key material.
type countingReader struct{ n atomic.Int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	c.n.Add(1)
	clear(p)
	return len(p), nil
}

// TestReadOnlyNodeNeverWritesAndForwards: on a node whose storage refuses
// writes (the error arriving as plain text, as over gRPC), a read that finds
// the schedule behind (this node's clock runs ahead) draws no key, attempts
// no write, returns logical.ErrReadOnly so Vault forwards it to the active
// node, keeps the cache and logs the skew once.
func TestReadOnlyNodeNeverWritesAndForwards(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replica consts.ReplicationState
		// wantAttempt: a node that believes it may write tries once per read.
		wantAttempt bool
	}{
		{"performance standby", consts.ReplicationPerformanceStandby, false},
		{"storage refuses unexpectedly", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			active := getBackend(t)
			active.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "10m"})

			storage := &textReadOnlyStorage{Storage: active.storage}
			sys := logical.TestSystemView()
			sys.ReplicationStateVal = tc.replica
			random := &countingReader{}
			logs := &syncBuffer{}
			node := newBackend(active.clock.Now, random)
			if err := node.Setup(context.Background(), &logical.BackendConfig{
				StorageView: storage, System: sys,
				Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}),
			}); err != nil {
				t.Fatal(err)
			}
			read := func() error {
				_, err := node.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "keys/web", Storage: storage})
				return err
			}
			if err := read(); err != nil {
				t.Fatalf("read on time: %v", err)
			}
			active.clock.Advance(time.Hour) // this node's clock is now an hour ahead of the schedule
			gets := storage.gets.Load()
			for i := range 3 {
				err := read()
				if err != logical.ErrReadOnly {
					t.Fatalf("read %d: error %v, want logical.ErrReadOnly so that Vault forwards the read", i, err)
				}
			}
			if n := random.n.Load(); n != 0 && !tc.wantAttempt {
				t.Fatalf("the node drew key material %d times", n)
			}
			if w := storage.writes.Load(); tc.wantAttempt != (w > 0) {
				t.Fatalf("%d write attempts; want attempts: %v", w, tc.wantAttempt)
			}
			if g := storage.gets.Load() - gets; g > 3 {
				t.Fatalf("%d storage reads for 3 requests: the cached keyring was dropped", g)
			}
			if n := strings.Count(logs.String(), "schedule is behind this node's clock"); n != 1 {
				t.Fatalf("the skew was logged %d times, want once:\n%s", n, logs.String())
			}
		})
	}
}
