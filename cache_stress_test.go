package ticketkeys

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// stressRounds sizes TestCacheNeverResurrectsKeys; `make stress-engine` runs it larger.
var stressRounds = flag.Int("stress.rounds", 20000, "operations of TestCacheNeverResurrectsKeys, spread over its workers")

// deadKeyStorage is the storage of the stress test. It yields between every
// Get and Put so that concurrent requests interleave at the worst places,
// tells a standby backend about every change (as replication does), and
// records when each key was destroyed or deleted. It reports any Put that
// stores such a key again.
type deadKeyStorage struct {
	inner logical.Storage
	// readOnly makes Put and Delete fail with ErrReadOnly as text, the way the
	// gRPC storage client of a standby returns it.
	readOnly bool
	shared   *deadKeys
}

// deadKeys is the bookkeeping shared by the active and standby views.
type deadKeys struct {
	mu         sync.Mutex
	seq        atomic.Uint64
	dead       map[string]uint64   // key id -> sequence number of its destruction
	stored     map[string][]string // keyring name -> ids of its last stored entry
	invalidate func(key string)    // the standby's Invalidate
	violations []string
}

func (d *deadKeys) violate(format string, args ...any) {
	d.violations = append(d.violations, fmt.Sprintf(format, args...))
}

// deadBefore reports whether id was destroyed at or before sequence snap.
func (d *deadKeys) deadBefore(id string, snap uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.dead[id]
	return ok && s <= snap
}

func yieldSome(r *rand.Rand) {
	switch r.IntN(8) {
	case 0:
		time.Sleep(time.Duration(r.IntN(50)) * time.Microsecond)
	case 1, 2, 3:
		runtime.Gosched()
	}
}

var stressRand sync.Pool

func yield() {
	r, _ := stressRand.Get().(*rand.Rand)
	if r == nil {
		r = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	yieldSome(r)
	stressRand.Put(r)
}

func (s *deadKeyStorage) List(ctx context.Context, prefix string) ([]string, error) {
	yield()
	return s.inner.List(ctx, prefix)
}

func (s *deadKeyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	yield()
	e, err := s.inner.Get(ctx, key)
	yield()
	return e, err
}

func (s *deadKeyStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	yield()
	if s.readOnly {
		return errors.New(logical.ErrReadOnly.Error())
	}
	d := s.shared
	d.mu.Lock()
	defer d.mu.Unlock()
	var newlyDead, live []string
	if name, ok := strings.CutPrefix(e.Key, keyringStoragePrefix); ok {
		var kr keyring
		if err := json.Unmarshal(e.Value, &kr); err != nil {
			return err
		}
		for _, k := range kr.Keys {
			if _, dead := d.dead[k.ID()]; dead {
				d.violate("keyring %q: Put stores key %s again after it was destroyed or deleted", name, k.ID())
			}
			live = append(live, k.ID())
		}
		for _, k := range kr.Destroyed {
			if _, dead := d.dead[k.ID]; !dead {
				newlyDead = append(newlyDead, k.ID)
			}
		}
		d.stored[name] = live
	}
	if err := s.inner.Put(ctx, e); err != nil {
		return err
	}
	d.invalidate(e.Key)
	seq := d.seq.Add(1)
	for _, id := range newlyDead {
		d.dead[id] = seq
	}
	return nil
}

func (s *deadKeyStorage) Delete(ctx context.Context, key string) error {
	yield()
	if s.readOnly {
		return errors.New(logical.ErrReadOnly.Error())
	}
	d := s.shared
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := s.inner.Delete(ctx, key); err != nil {
		return err
	}
	d.invalidate(key)
	seq := d.seq.Add(1)
	if name, ok := strings.CutPrefix(key, keyringStoragePrefix); ok {
		for _, id := range d.stored[name] {
			d.dead[id] = seq
		}
		delete(d.stored, name)
	}
	return nil
}

// TestCacheNeverResurrectsKeys interleaves every operation that reads or
// writes a keyring, on an active node and on a standby that shares its
// storage: rotate mode=now purge_previous=true, scheduled rotations, deletes,
// creates and settings writes (each with its existence check), config writes,
// invalidations, reads in every format, history reads, existence checks and
// periodic maintenance, while the clock moves. No key that was destroyed or
// deleted may ever be stored again, and no read that starts after its
// destruction may return it.
func TestCacheNeverResurrectsKeys(t *testing.T) {
	rounds := *stressRounds
	if testing.Short() {
		rounds = min(rounds, 500)
	}
	clock := &fakeClock{now: testStart}
	inner := &logical.InmemStorage{}
	shared := &deadKeys{dead: map[string]uint64{}, stored: map[string][]string{}}

	newNode := func(s *deadKeyStorage, sys logical.SystemView, seed byte) *backend {
		b := newBackend(clock.Now, lockedReader{mu: &sync.Mutex{}, r: rand.NewChaCha8([32]byte{seed, 9})})
		b.jitter = func(int64) int64 { return 0 }
		if err := b.Setup(context.Background(), &logical.BackendConfig{StorageView: s, Logger: hclog.NewNullLogger(), System: sys}); err != nil {
			t.Fatal(err)
		}
		return b
	}
	activeStorage := &deadKeyStorage{inner: inner, shared: shared}
	standbyStorage := &deadKeyStorage{inner: inner, shared: shared, readOnly: true}
	standbySys := logical.TestSystemView()
	standbySys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	active := newNode(activeStorage, logical.TestSystemView(), 1)
	standby := newNode(standbyStorage, standbySys, 2)
	shared.invalidate = func(key string) { standby.Invalidate(context.Background(), key) }

	names := []string{"alpha", "beta"}
	ctx := context.Background()
	send := func(b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
		return sendAsVault(ctx, b, s, op, path, data)
	}
	// unexpected reports an error that none of the interleavings may cause:
	// user errors (400), unknown keyrings (404) and a standby's read-only
	// storage are expected outcomes of racing requests.
	var failures atomic.Int64
	var firstFailure atomic.Value
	unexpected := func(what string, resp *logical.Response, err error) {
		if err == nil {
			return
		}
		var coded logical.HTTPCodedError
		if errors.As(err, &coded) || strings.Contains(err.Error(), logical.ErrReadOnly.Error()) {
			return
		}
		if failures.Add(1) == 1 {
			firstFailure.Store(what + ": " + err.Error())
		}
	}
	checkIDs := func(who string, resp *logical.Response, snap uint64) {
		if resp == nil || resp.Data == nil {
			return
		}
		keys, _ := resp.Data["keys"].([]map[string]interface{})
		for _, k := range keys {
			id := k["id"].(string)
			if shared.deadBefore(id, snap) {
				shared.mu.Lock()
				shared.violate("%s returned key %s, destroyed or deleted before the request started", who, id)
				shared.mu.Unlock()
			}
		}
	}

	for _, n := range names {
		if _, err := send(active, activeStorage, logical.UpdateOperation, "keys/"+n, map[string]any{"rotation_period": "10s", "retain": "30s"}); err != nil {
			t.Fatal(err)
		}
	}

	const workers = 6
	var wg sync.WaitGroup
	deadline := time.Now().Add(5 * time.Minute) // bound on the loop, far above its expected run time
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for i := w; i < rounds && time.Now().Before(deadline); i += workers {
				name := names[r.IntN(len(names))]
				path := "keys/" + name
				snap := shared.seq.Load()
				var resp *logical.Response
				var err error
				switch op := r.IntN(16); op {
				case 0, 1:
					resp, err = send(active, activeStorage, logical.UpdateOperation, path+"/rotate", map[string]any{"mode": "now", "purge_previous": true})
				case 2:
					resp, err = send(active, activeStorage, logical.UpdateOperation, path+"/rotate", map[string]any{"mode": "scheduled"})
				case 3:
					resp, err = send(active, activeStorage, logical.DeleteOperation, path, nil)
				case 4, 5:
					settings := []map[string]any{
						{"retain": "30s"}, {"retain": "0s"}, {"rotation_period": "20s"}, {"rotation_period": "10s"}, nil,
					}[r.IntN(5)]
					resp, err = send(active, activeStorage, logical.UpdateOperation, path, settings)
				case 6:
					resp, err = send(active, activeStorage, logical.UpdateOperation, "config", map[string]any{"max_key_lifetime": []string{"1m", "1h"}[r.IntN(2)]})
				case 7:
					active.Invalidate(ctx, keyringStoragePrefix+name)
					active.Invalidate(ctx, configStorageKey)
				case 8, 9:
					resp, err = send(active, activeStorage, logical.ReadOperation, path, map[string]any{"format": formats[r.IntN(len(formats))]})
					checkIDs("active read of "+name, resp, snap)
				case 10, 11:
					resp, err = send(standby, standbyStorage, logical.ReadOperation, path, map[string]any{"format": formats[r.IntN(len(formats))]})
					checkIDs("standby read of "+name, resp, snap)
				case 12:
					resp, err = send(active, activeStorage, logical.ReadOperation, path+"/history", nil)
					checkIDs("history of "+name, resp, snap)
				case 13:
					_, _, err = active.HandleExistenceCheck(ctx, &logical.Request{Operation: logical.UpdateOperation, Path: path, Storage: activeStorage})
				case 14:
					err = active.periodicFunc(ctx, &logical.Request{Operation: logical.RollbackOperation, Storage: activeStorage})
				case 15:
					clock.Advance(time.Second)
				}
				unexpected(fmt.Sprintf("round %d op %s", i, path), resp, err)
			}
		}()
	}
	wg.Wait()

	// After the dust settles, storage and fresh reads on both nodes hold no dead key.
	final := shared.seq.Load()
	for _, n := range names {
		for who, node := range map[string]struct {
			b *backend
			s logical.Storage
		}{"active": {active, activeStorage}, "standby": {standby, standbyStorage}} {
			resp, err := send(node.b, node.s, logical.ReadOperation, "keys/"+n, nil)
			unexpected("final read", resp, err)
			checkIDs("final "+who+" read of "+n, resp, final)
		}
	}
	if n := failures.Load(); n > 0 {
		t.Errorf("%d unexpected errors; first: %v", n, firstFailure.Load())
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if len(shared.violations) > 0 {
		show := shared.violations[:min(len(shared.violations), 10)]
		t.Fatalf("%d violations in %d rounds; first ones:\n%s", len(shared.violations), rounds, strings.Join(show, "\n"))
	}
	t.Logf("%d rounds, %d changes, %d keys destroyed or deleted", rounds, final, len(shared.dead))
}

// lockedReader makes a deterministic random source safe for concurrent use.
type lockedReader struct {
	mu *sync.Mutex
	r  *rand.ChaCha8
}

func (l lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}
