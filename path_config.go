package ticketkeys

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// configStorageKey holds the mount-wide policy.
const configStorageKey = "config"

// mountConfig is the mount-wide policy every keyring must satisfy.
type mountConfig struct {
	// MaxKeyLifetime caps rotation_period + retain of every keyring: no key
	// stays decryptable longer than this after it activates.
	MaxKeyLifetime time.Duration `json:"max_key_lifetime"`
}

func defaultMountConfig() *mountConfig {
	return &mountConfig{MaxKeyLifetime: defaultMaxKeyLifetime}
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
				Description: "Longest time any key may stay decryptable after it activates (rotation_period + retain of every keyring). Default 168h, the RFC 8446 ticket lifetime cap; 1m to 168h.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "configuration"},
				Responses: map[int][]framework.Response{
					http.StatusOK: {{Description: "OK", Fields: map[string]*framework.FieldSchema{
						"max_key_lifetime": {Type: framework.TypeDurationSecond, Description: "Cap on rotation_period + retain, in seconds."},
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
	if !ok || v == cfg.MaxKeyLifetime {
		return b.pathConfigRead(ctx, req, d)
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
	}
	cfg.MaxKeyLifetime = v
	entry, err := logical.StorageEntryJSON(configStorageKey, cfg)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("writing config: %w", err)
	}
	// A lower cap applies at once to the keys already published: their
	// not_after moves earlier (never later). Should this stop half way, the
	// periodic function finishes it.
	for _, name := range names {
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
