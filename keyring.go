package ticketkeys

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// keyringStoragePrefix holds one storage entry per keyring. The whole window of
// a keyring (settings, keys with material, metadata history) lives in that one
// entry, because Vault storage is atomic per entry only: every change is a
// single Put, so a reader never sees half a rotation.
const keyringStoragePrefix = "keyring/"

// destroyedHistoryLimit bounds the metadata history kept per keyring.
const destroyedHistoryLimit = 100

// ticketKey is one session-ticket key and its fixed schedule.
//
// The secret parts (name, AES and HMAC keys) are the same for every server
// format; formats only change the byte layout (see format.go). All times are
// fixed when the key is generated, except EncryptUntil, which an explicit
// rotation may bring forward. NotAfter never moves once published, except
// that a lower max_key_lifetime shortens it.
type ticketKey struct {
	// Name is the 16-byte key name servers put in each ticket; its hex is the id.
	Name []byte `json:"name"`
	// AES and HMAC are 32 bytes each (80-byte keys) or 16 bytes each (48-byte keys).
	AES  []byte `json:"aes"`
	HMAC []byte `json:"hmac"`

	// PublishAt is when the key becomes readable (as next, decrypt-only).
	PublishAt time.Time `json:"publish_at"`
	// NotBefore is when the key starts encrypting.
	NotBefore time.Time `json:"not_before"`
	// EncryptUntil is when the key stops encrypting: the NotBefore of its successor.
	EncryptUntil time.Time `json:"encrypt_until"`
	// NotAfter is when the key stops decrypting and its material is destroyed.
	NotAfter time.Time `json:"not_after"`
}

// ID is the hex of the key name: the same id in every format.
func (k *ticketKey) ID() string { return hex.EncodeToString(k.Name) }

// destroyedKey is the metadata (never material) kept after a key is destroyed,
// as compliance evidence of what existed and when it was removed.
type destroyedKey struct {
	ID          string    `json:"id"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	DestroyedAt time.Time `json:"destroyed_at"`
	Reason      string    `json:"reason"`
}

// Reasons a key was destroyed.
const (
	reasonExpired   = "expired"   // reached NotAfter
	reasonPurged    = "purged"    // rotate with purge_previous
	reasonDiscarded = "discarded" // a published, never-active key dropped by rotate mode=now
)

// keyringSettings are the operator-chosen parameters of a keyring.
type keyringSettings struct {
	RotationPeriod time.Duration `json:"rotation_period"`
	Retain         time.Duration `json:"retain"`
	PublishAhead   time.Duration `json:"publish_ahead"`
	KeySize        int           `json:"key_size"`
}

// keyringSchemaVersion is the layout of keyring entries this plugin writes.
// Entries without a schema_version (written before it existed) have layout 1.
const keyringSchemaVersion = 1

// keyring is the stored state of one named keyring.
type keyring struct {
	// SchemaVersion is the layout of the entry (see keyringSchemaVersion).
	SchemaVersion int `json:"schema_version,omitempty"`

	Name     string          `json:"name"`
	Settings keyringSettings `json:"settings"`
	// Keys are ordered by NotBefore, oldest first; consecutive keys chain
	// (each key's EncryptUntil is its successor's NotBefore).
	Keys []*ticketKey `json:"keys"`
	// Destroyed is the newest-last metadata history, at most destroyedHistoryLimit long.
	Destroyed []destroyedKey `json:"destroyed,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
	// PublishAheadSet is true once an operator set publish_ahead; until then it follows rotation_period.
	PublishAheadSet bool `json:"publish_ahead_set,omitempty"`
	// ReadersBackBy is when every reader that read under earlier settings
	// holds a window read under the current ones: a settings change at t
	// sets it to t + the old publish_ahead, the longest any ttl handed out
	// before (leadTTLCap) keeps a reader away. No key published after the
	// change activates before it (see rotate).
	ReadersBackBy time.Time `json:"readers_back_by,omitempty"`

	// renders caches this keyring's rendered windows (see render.go). The
	// keyring cache attaches it when it takes the keyring, from which point
	// the keyring is shared and never changed; a private copy has none, so
	// nothing can be rendered from it and then changed. Never stored.
	renders *windowRenders
}

// clone returns a deep copy, so a cached keyring is never changed in place.
func (kr *keyring) clone() *keyring {
	c := *kr
	c.Keys = make([]*ticketKey, len(kr.Keys))
	for i, k := range kr.Keys {
		kc := *k
		kc.Name = bytes.Clone(k.Name)
		kc.AES = bytes.Clone(k.AES)
		kc.HMAC = bytes.Clone(k.HMAC)
		c.Keys[i] = &kc
	}
	c.Destroyed = slices.Clone(kr.Destroyed)
	c.renders = nil // a clone is private and mutable until the cache takes it
	return &c
}

func keyringPath(name string) string { return keyringStoragePrefix + name }

// loadKeyring returns the stored keyring, or nil when it does not exist.
func loadKeyring(ctx context.Context, s logical.Storage, name string) (*keyring, error) {
	entry, err := s.Get(ctx, keyringPath(name))
	if err != nil {
		return nil, fmt.Errorf("reading keyring %q from storage: %w", name, err)
	}
	if entry == nil {
		return nil, nil
	}
	var kr keyring
	if err := entry.DecodeJSON(&kr); err != nil {
		return nil, fmt.Errorf("decoding keyring %q from storage: %w", name, err)
	}
	if kr.SchemaVersion > keyringSchemaVersion {
		return nil, fmt.Errorf("keyring %q was written by a newer plugin (schema_version %d; this plugin reads up to %d): upgrade the plugin on every node",
			name, kr.SchemaVersion, keyringSchemaVersion)
	}
	return &kr, nil
}

// saveKeyring writes the whole keyring with one Put, in the current layout.
func saveKeyring(ctx context.Context, s logical.Storage, kr *keyring) error {
	kr.SchemaVersion = keyringSchemaVersion
	entry, err := logical.StorageEntryJSON(keyringPath(kr.Name), kr)
	if err != nil {
		return fmt.Errorf("encoding keyring %q: %w", kr.Name, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("writing keyring %q to storage: %w", kr.Name, err)
	}
	return nil
}
