package ticketkeys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// initialize repairs every keyring as soon as the mount starts on an active
// node (after an unseal or a leader change), instead of waiting for the first
// periodic tick.
func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	if err := b.maintainAll(ctx, req.Storage); err != nil {
		// A failure here must not stop the mount from starting; the next tick retries.
		b.Logger().Error("initial keyring maintenance failed; the periodic tick retries", "error", err)
	}
	return nil
}

// periodicFunc runs about once a minute on the active node: it generates keys
// ahead, destroys material past not_after and applies max_key_lifetime.
// Vault logs the error it returns.
func (b *backend) periodicFunc(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	return b.maintainAll(ctx, req.Storage)
}

// maintainAll maintains every keyring, collecting errors per keyring so one
// bad keyring does not stop the others, and stops between keyrings when ctx
// ends. It does not log: its callers log the returned error once (Vault logs
// what periodicFunc returns).
func (b *backend) maintainAll(ctx context.Context, s logical.Storage) error {
	names, err := s.List(ctx, keyringStoragePrefix)
	if err != nil {
		return fmt.Errorf("listing keyrings: %w", err)
	}
	cfg, err := loadConfig(ctx, s)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("keyring maintenance stopped before keyring %q: %w", name, err))
			break
		}
		if err := b.maintainKeyring(ctx, s, name, cfg.MaxKeyLifetime); err != nil {
			errs = append(errs, fmt.Errorf("keyring %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// maintainKeyring brings one keyring's schedule up to date and within
// maxLifetime, writing only when something changed.
func (b *backend) maintainKeyring(ctx context.Context, s logical.Storage, name string, maxLifetime time.Duration) error {
	l := b.lockKeyring(name)
	defer l.unlock()
	now := b.clock()
	cached, err := l.load(ctx, s)
	if err != nil || cached == nil || (!cached.due(now) && !cached.overLifetime(maxLifetime)) {
		return err
	}
	kr := cached.clone()
	capped := kr.capLifetime(maxLifetime)
	changed, err := kr.maintain(now, b.random)
	if err != nil || !(changed || capped) {
		return err
	}
	kr.UpdatedAt = now.UTC()
	if err := l.store(ctx, s, kr); err != nil {
		return err
	}
	b.Logger().Debug("keyring maintained", "keyring", name, "keys", len(kr.Keys))
	return nil
}

// isReadOnly reports a write refused because storage is read-only. Over
// gRPC the SDK's storage client returns the error as text, so errors.Is
// never matches: compare the text, as Vault's own code does.
func isReadOnly(err error) bool {
	return err != nil && (errors.Is(err, logical.ErrReadOnly) || strings.Contains(err.Error(), logical.ErrReadOnly.Error()))
}

// logBehindOnce tells the operator, once per mount instance, that this node
// sees a schedule that has fallen behind but cannot repair it. On a standby
// whose active node is healthy, that is this node's clock running ahead.
func (b *backend) logBehindOnce(name string) {
	if b.behindLogged.CompareAndSwap(false, true) {
		b.Logger().Warn("a keyring's schedule is behind this node's clock and this node cannot write storage (standby or replica): such reads are forwarded to the active node; if the active node is healthy, this node's clock runs ahead of it",
			"keyring", name, "node_time", b.clock().UTC().Format(time.RFC3339))
	}
}
