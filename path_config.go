package ticketkeys

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// configStorageKey holds the mount-wide policy.
const configStorageKey = "config"

// configSchemaVersion is the layout of the config entry this plugin writes;
// an entry without schema_version has layout 1.
const configSchemaVersion = 1

// mountConfig is the mount-wide policy every keyring must satisfy.
type mountConfig struct {
	// SchemaVersion is the layout of the entry (see configSchemaVersion).
	SchemaVersion int `json:"schema_version,omitempty"`

	// MaxKeyLifetime caps rotation_period + retain of every keyring: no key
	// stays decryptable longer than this after it activates.
	MaxKeyLifetime time.Duration `json:"max_key_lifetime"`
	// MaxReadTTL caps the ttl of every read, so that every reader re-reads
	// within it: the bound on how long a key purged by an emergency rotation
	// stays in use. Zero (an entry written before it existed) is the default.
	MaxReadTTL time.Duration `json:"max_read_ttl,omitempty"`
}

func defaultMountConfig() *mountConfig {
	return &mountConfig{MaxKeyLifetime: defaultMaxKeyLifetime, MaxReadTTL: defaultMaxReadTTL}
}

// readTTLCap is the cap on a read's ttl.
func (c *mountConfig) readTTLCap() time.Duration {
	if c.MaxReadTTL <= 0 {
		return defaultMaxReadTTL
	}
	return c.MaxReadTTL
}

// configCache holds the decoded mount config, so reads do not fetch it. Like
// the keyring cache it is filled only under configLock (read side) and a fill
// is dropped when Invalidate ran since its storage read began.
type configCache struct {
	mu         sync.Mutex
	cfg        *mountConfig
	generation uint64
}

func (c *configCache) get() (*mountConfig, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg, c.generation
}

func (c *configCache) set(cfg *mountConfig, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.generation {
		cfg = nil
	}
	c.cfg = cfg
}

// write runs the config's storage write and caches cfg only if it succeeded.
// The cached config is dropped before the write, so a write that fails after
// storage applied it leaves nothing stale: the next read loads storage.
func (c *configCache) write(cfg *mountConfig, put func() error) error {
	c.mu.Lock()
	gen := c.generation
	c.cfg = nil
	c.mu.Unlock()
	if err := put(); err != nil {
		return err
	}
	c.set(cfg, gen)
	return nil
}

func (c *configCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generation++
	c.cfg = nil
}

// config returns the mount config for a read, from the cache or storage. The
// caller must not hold configLock and must not modify the result.
func (b *backend) config(ctx context.Context, s logical.Storage) (*mountConfig, error) {
	if cfg, _ := b.cfgCache.get(); cfg != nil {
		return cfg, nil
	}
	b.configLock.RLock()
	defer b.configLock.RUnlock()
	cfg, gen := b.cfgCache.get()
	if cfg != nil {
		return cfg, nil
	}
	cfg, err := loadConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	b.cfgCache.set(cfg, gen)
	return cfg, nil
}

// loadConfig returns the stored config or the defaults.
func loadConfig(ctx context.Context, s logical.Storage) (*mountConfig, error) {
	entry, err := s.Get(ctx, configStorageKey)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg := defaultMountConfig()
	if entry == nil {
		return cfg, nil
	}
	if err := entry.DecodeJSON(cfg); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	if cfg.SchemaVersion > configSchemaVersion {
		return nil, fmt.Errorf("config was written by a newer plugin (schema_version %d; this plugin reads up to %d): upgrade the plugin on every node",
			cfg.SchemaVersion, configSchemaVersion)
	}
	return cfg, nil
}

func (b *backend) pathConfig() *framework.Path {
	return &framework.Path{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Fields: map[string]*framework.FieldSchema{
			"max_key_lifetime": {
				Type:        framework.TypeDurationSecond,
				Default:     int(defaultMaxKeyLifetime.Seconds()),
				Description: "Longest time any key may stay decryptable after it activates (rotation_period + retain of every keyring); lowering it shortens live keys. Default 168h, the RFC 8446 ticket lifetime cap; 1m to 168h.",
			},
			"max_read_ttl": {
				Type:        framework.TypeDurationSecond,
				Default:     int(defaultMaxReadTTL.Seconds()),
				Description: "Cap on the ttl of every keyring read, so every reader re-reads within it: after rotate mode=now purge_previous=true, readers drop the purged keys within max_read_ttl plus their own delay (Agent 1s, Go client up to 5s). Default 5m; 5s to 24h.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "configuration"},
				Responses: map[int][]framework.Response{
					http.StatusOK: {{Description: "OK", Fields: map[string]*framework.FieldSchema{
						"max_key_lifetime": {Type: framework.TypeDurationSecond, Description: "Cap on rotation_period + retain, in seconds."},
						"max_read_ttl":     {Type: framework.TypeDurationSecond, Description: "Cap on the ttl of a read, in seconds."},
					}}},
				},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:     b.pathConfigWrite,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "configure"},
			},
		},
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: pathConfigHelpDesc,
	}
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := loadConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"max_key_lifetime": int64(cfg.MaxKeyLifetime.Seconds()),
		"max_read_ttl":     int64(cfg.readTTLCap().Seconds()),
	}}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	b.configLock.Lock()
	defer b.configLock.Unlock()

	cfg, err := loadConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	v, ok, err := durationField(d, "max_key_lifetime", minMaxKeyLifetime, maxMaxKeyLifetime)
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	ttlCap, ttlOK, err := durationField(d, "max_read_ttl", minMaxReadTTL, maxMaxReadTTL)
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	lower := ok && v < cfg.MaxKeyLifetime
	changed := (ok && v != cfg.MaxKeyLifetime) || (ttlOK && ttlCap != cfg.readTTLCap())
	if !changed {
		return b.pathConfigRead(ctx, req, d) // nothing to write
	}
	if !ok {
		v = cfg.MaxKeyLifetime
	}
	// Every existing keyring's settings must fit the new cap.
	names, err := req.Storage.List(ctx, keyringStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing keyrings: %w", err)
	}
	for _, name := range names {
		l := b.rlockKeyring(name)
		kr, err := l.load(ctx, req.Storage)
		l.unlock()
		if err != nil {
			return nil, err
		}
		if kr == nil {
			continue
		}
		if life := kr.Settings.RotationPeriod + kr.Settings.Retain; life > v {
			return logical.ErrorResponse("max_key_lifetime must be at least rotation_period + retain of every keyring; keyring %q needs %s, got %s: shorten that keyring first",
				name, fmtDuration(life), fmtDuration(v)), nil
		}
		// A key published under a longer rotation_period encrypts for longer
		// than its keyring's rotation_period now says; cutting it would leave
		// a gap in the schedule that no published key covers.
		if k := kr.encryptSpanOver(v); k != nil {
			return logical.ErrorResponse("max_key_lifetime must be at least how long every published key encrypts; keyring %q has a key encrypting for %s (from %s to %s, published under an earlier rotation_period), got %s: choose at least %s, or lower it after %s",
				name, fmtDuration(k.EncryptUntil.Sub(k.NotBefore)), k.NotBefore.Format(time.RFC3339), k.EncryptUntil.Format(time.RFC3339),
				fmtDuration(v), fmtDuration(k.EncryptUntil.Sub(k.NotBefore)), k.EncryptUntil.Format(time.RFC3339)), nil
		}
	}
	next := *cfg
	next.SchemaVersion = configSchemaVersion
	next.MaxKeyLifetime = v
	if ttlOK {
		next.MaxReadTTL = ttlCap
	}
	entry, err := logical.StorageEntryJSON(configStorageKey, &next)
	if err != nil {
		return nil, err
	}
	if err := b.cfgCache.write(&next, func() error { return req.Storage.Put(ctx, entry) }); err != nil {
		return nil, fmt.Errorf("writing config: %w", err)
	}
	// A lower cap applies at once to the keys already published: their
	// not_after moves earlier (never later). Should this stop half way, the
	// periodic function finishes it.
	for _, name := range names {
		if !lower {
			break
		}
		if err := b.maintainKeyring(ctx, req.Storage, name, v); err != nil {
			return nil, fmt.Errorf("applying max_key_lifetime to keyring %q (the periodic function retries): %w", name, err)
		}
	}
	return b.pathConfigRead(ctx, req, d)
}

const pathConfigHelpSyn = `Configure the mount-wide key lifetime policy.`

const pathConfigHelpDesc = `
max_key_lifetime caps how long any key of this mount stays decryptable after it
activates: every keyring must have rotation_period + retain <= max_key_lifetime.
Keyring settings that would break it are rejected, and so is a lower cap that an
existing keyring's settings would break. A lower cap applies at once to keys
already published: their not_after moves to at most max_key_lifetime after their
not_before (never later), and keys past it are destroyed. The default, 168h, is
the RFC 8446 cap on ticket lifetimes.
`
