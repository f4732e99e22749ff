package ticketkeys

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// keyringCache holds the last decoded keyring per name, so reads do not decode
// JSON. A cached *keyring is never changed in place: writers change a clone
// and replace the entry.
//
// The cache never holds an older copy than storage, by construction, as in
// Vault transit's lock manager:
//   - It is read, filled and replaced only through a held keyringLock (the
//     methods below are its only users). Every writer holds the keyring's
//     write lock from before it reads until after it replaced the entry, so
//     no fill can read storage before a write and land after it.
//   - Invalidate (storage changed by another node) runs without the lock, so
//     it bumps a generation; a fill whose storage read began before the bump
//     is dropped instead of cached.
type keyringCache struct {
	mu      sync.Mutex
	entries map[string]*keyring
	// generation counts invalidations; a fill lands only if it is unchanged
	// since the storage read began.
	generation uint64
}

func (c *keyringCache) get(name string) (*keyring, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[name], c.generation
}

// set caches kr, read from storage while generation gen was current, unless
// an invalidation happened since; then the entry is dropped, so the next
// reader loads storage afresh.
func (c *keyringCache) set(name string, kr *keyring, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*keyring{}
	}
	if kr == nil || gen != c.generation {
		delete(c.entries, name)
		return
	}
	if kr.renders == nil {
		// From here on kr is shared and immutable: its renderings may be cached.
		kr.renders = &windowRenders{}
	}
	c.entries[name] = kr
}

// write runs a storage write of keyring name and caches its outcome: kr after
// a write that succeeded (nil after a delete). The entry is dropped before the
// write starts, so a write that fails, even one that storage applied before
// it reported the error (a timeout, a cancelled context), leaves nothing
// cached: the next load reads what storage really holds. This is the only
// way a writer changes the cache.
//
// The one exception is a write storage refused as read-only (a standby's
// storage): it was never applied, so the entry, still what storage holds,
// is put back and a node that cannot write keeps serving from its cache.
func (c *keyringCache) write(name string, kr *keyring, put func() error) error {
	c.mu.Lock()
	gen := c.generation
	before := c.entries[name]
	delete(c.entries, name)
	c.mu.Unlock()
	if err := put(); err != nil {
		if isReadOnly(err) && before != nil {
			c.set(name, before, gen)
		}
		return err
	}
	c.set(name, kr, gen)
	return nil
}

// invalidate drops a keyring whose storage entry changed elsewhere. It needs
// no lock: the generation it bumps stops fills already under way.
func (c *keyringCache) invalidate(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generation++
	delete(c.entries, name)
}

// keyringLock is a held lock of one keyring, and the only way to read, fill
// or change the cached copy. Get one with lockKeyring (to change the keyring)
// or rlockKeyring (to read it), and release it with unlock.
type keyringLock struct {
	b     *backend
	name  string
	entry *locksutil.LockEntry
	write bool
}

// lockKeyring takes a keyring's write lock.
func (b *backend) lockKeyring(name string) *keyringLock {
	l := &keyringLock{b: b, name: name, entry: locksutil.LockForKey(b.locks, name), write: true}
	l.entry.Lock()
	return l
}

// rlockKeyring takes a keyring's read lock.
func (b *backend) rlockKeyring(name string) *keyringLock {
	l := &keyringLock{b: b, name: name, entry: locksutil.LockForKey(b.locks, name)}
	l.entry.RLock()
	return l
}

func (l *keyringLock) unlock() {
	if l.write {
		l.entry.Unlock()
	} else {
		l.entry.RUnlock()
	}
}

// load returns the keyring from the cache, or from storage (then cached), or
// nil when it does not exist. The result must not be modified.
func (l *keyringLock) load(ctx context.Context, s logical.Storage) (*keyring, error) {
	kr, gen := l.b.cache.get(l.name)
	if kr != nil {
		return kr, nil
	}
	kr, err := loadKeyring(ctx, s, l.name)
	if err != nil || kr == nil {
		return nil, err
	}
	l.b.cache.set(l.name, kr, gen)
	return kr, nil
}

// loadForUpdate returns a private copy of the keyring to change, or nil.
func (l *keyringLock) loadForUpdate(ctx context.Context, s logical.Storage) (*keyring, error) {
	l.mustWrite("loadForUpdate")
	kr, err := l.load(ctx, s)
	if err != nil || kr == nil {
		return nil, err
	}
	return kr.clone(), nil
}

// store writes the keyring with one Put and makes it the cached copy; the
// caller must not modify kr afterwards. When the Put fails nothing stays
// cached (see keyringCache.write).
func (l *keyringLock) store(ctx context.Context, s logical.Storage, kr *keyring) error {
	l.mustWrite("store")
	return l.b.cache.write(l.name, kr, func() error { return saveKeyring(ctx, s, kr) })
}

// delete removes the keyring from storage and from the cache.
func (l *keyringLock) delete(ctx context.Context, s logical.Storage) error {
	l.mustWrite("delete")
	return l.b.cache.write(l.name, nil, func() error {
		if err := s.Delete(ctx, keyringPath(l.name)); err != nil {
			return fmt.Errorf("deleting keyring %q: %w", l.name, err)
		}
		return nil
	})
}

// mustWrite stops a change made under a read lock: a coding error, which
// would let two writers interleave.
func (l *keyringLock) mustWrite(op string) {
	if !l.write {
		panic(fmt.Sprintf("ticketkeys: keyringLock.%s of %q needs the write lock", op, l.name))
	}
}
