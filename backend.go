// Package ticketkeys is a Vault secrets engine that generates and rotates
// windows of TLS session-ticket keys for clusters of TLS servers.
//
// Each named keyring holds a schedule of keys with fixed activation times:
// the next key is readable (as decrypt-only) publish_ahead before it starts
// encrypting, each key encrypts for rotation_period, keeps decrypting for
// retain afterwards and is then destroyed. Readers get the window in the
// byte layout of their server (nginx, HAProxy, Envoy or Go), with a ttl that
// tells Vault Agent when the window changes next.
package ticketkeys

import (
	"context"
	"crypto/rand"
	"io"
	mathrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// operationPrefix names every OpenAPI operation of this engine.
const operationPrefix = "ticketkeys"

// backend is the secrets engine. One instance serves one mount; with
// plugin.ServeMultiplex one process serves every mount, so all state lives in
// this struct and in the mount's storage, never in package variables.
type backend struct {
	*framework.Backend

	// clock is the source of time for every schedule decision (tests inject a fake).
	clock func() time.Time
	// random is the source of key material: crypto/rand outside tests.
	random io.Reader
	// jitter returns a number in [0, n): the spread added to ttl (tests pin it).
	jitter func(n int64) int64

	// locks serialise changes per keyring; reads take the read side. Take
	// them with lockKeyring and rlockKeyring, the only way to the cache.
	locks []*locksutil.LockEntry
	// cache holds the last decoded keyring per name (see cache.go for the
	// rule that keeps it from going stale).
	cache keyringCache

	// behindLogged is set once logBehindOnce has logged.
	behindLogged atomic.Bool

	// cfgCache holds the mount config for reads (see configCache).
	cfgCache configCache

	// configLock orders changes of the mount config against keyring writes, so
	// a keyring is never saved against a max_key_lifetime that just changed.
	configLock sync.RWMutex
}

// Factory builds the backend for a mount. It does no storage I/O: Vault calls
// it at plugin registration with no-op storage.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend(defaultClock, rand.Reader)
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func newBackend(clock func() time.Time, random io.Reader) *backend {
	b := &backend{
		clock:  clock,
		random: random,
		jitter: mathrand.Int64N,
		locks:  locksutil.CreateLocks(),
	}
	b.Backend = &framework.Backend{
		Help:        backendHelp,
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			// Enterprise seal-wraps these entries; Community ignores it.
			SealWrapStorage: []string{keyringStoragePrefix},
		},
		Paths: []*framework.Path{
			b.pathConfig(),
			b.pathKeysList(),
			b.pathKeyRotate(),
			b.pathKeyHistory(),
			b.pathKeys(),
		},
		InitializeFunc: b.initialize,
		Invalidate:     b.invalidate,
		PeriodicFunc:   b.periodicFunc,
		RunningVersion: Version,
	}
	return b
}

// invalidate drops the cached copy of a keyring whose storage entry changed
// outside this instance (replication, a new active node).
func (b *backend) invalidate(_ context.Context, key string) {
	if name, ok := strings.CutPrefix(key, keyringStoragePrefix); ok {
		b.cache.invalidate(name)
	}
	if key == configStorageKey {
		b.cfgCache.invalidate()
	}
}

const backendHelp = `
The ticketkeys secrets engine generates and rotates windows of TLS
session-ticket keys, so that every node of a TLS cluster can resume every
other node's sessions while the keys rotate on a schedule.

Create a keyring at keys/<name>, read its window with an optional format
(nginx, haproxy, envoy, go) and let Vault Agent or the Go client keep servers
on it. The next key is published as decrypt-only before it activates; old
keys keep decrypting for the retain period and are then destroyed.
`
