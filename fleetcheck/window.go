package fleetcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/api"

	sched "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// Server formats of the engine (docs/api.md). The three OpenSSL-based ones
// share one ticket construction and differ only in the order of the key's
// parts.
const (
	FormatNginx   = sched.FormatNginx
	FormatHAProxy = sched.FormatHAProxy
	FormatEnvoy   = sched.FormatEnvoy
	FormatGo      = sched.FormatGo
)

// Formats lists the formats a check accepts.
var Formats = sched.Formats

// keyNameLen is the length of a key name, the first bytes of every ticket.
const keyNameLen = sched.NameSize

// goKeyLen is the length of a key in the go format.
const goKeyLen = sched.GoKeySize

// Key is one ticket key of a window. Its material lives only in memory, in
// unexported fields: it is never printed, logged, marshalled or written.
type Key struct {
	// ID is the hex of the 16-byte key name (public: OpenSSL servers send it
	// in clear at the front of every ticket).
	ID string `json:"id"`
	// State is the state the engine reported at the read: current, next or
	// previous.
	State string `json:"state"`
	// NotBefore is when the key starts encrypting.
	NotBefore time.Time `json:"not_before"`
	// EncryptUntil is when the key stops encrypting, as the engine
	// published it; zero when it did not (see schedule.Window.EncryptEnd).
	EncryptUntil time.Time `json:"encrypt_until,omitzero"`
	// NotAfter is when the key stops decrypting.
	NotAfter time.Time `json:"not_after"`

	name [keyNameLen]byte
	aes  []byte // OpenSSL formats: the AES-CBC key (16 or 32 bytes)
	hmac []byte // OpenSSL formats: the HMAC-SHA256 key (16 or 32 bytes)
	gok  []byte // go format: the 32-byte key for tls.Config.SetSessionTicketKeys
}

// String returns the key id and state: never material (%v and %+v of a Key
// or a *Key print this).
func (k Key) String() string { return k.ID + " (" + k.State + ")" }

// GoString keeps %#v from printing material.
func (k Key) GoString() string { return "fleetcheck.Key{ID:" + k.ID + "}" }

// wipe overwrites the key's material.
func (k *Key) wipe() {
	clear(k.aes)
	clear(k.hmac)
	clear(k.gok)
}

// Window is one read of a keyring: its schedule and its keys, sorted by
// NotBefore.
type Window struct {
	Keyring        string
	Format         string
	KeySize        int
	RotationPeriod time.Duration
	PublishAhead   time.Duration
	Retain         time.Duration
	ReadAt         time.Time
	Keys           []*Key
}

// KeyAt returns the key that encrypts at t according to the schedule
// (schedule.Window.EncryptingAt: it respects encrypt_until, and a
// zero-length key never encrypts), or nil when none does.
func (w *Window) KeyAt(t time.Time) *Key {
	if i := w.rules().EncryptingAt(t); i >= 0 {
		return w.Keys[i]
	}
	return nil
}

// rules returns the window's times (no material) for the schedule
// package's rules. Keys must be sorted by NotBefore, as ParseWindow leaves
// them.
func (w *Window) rules() *sched.Window {
	sw := &sched.Window{Name: w.Keyring, Format: w.Format, KeySize: w.KeySize, RotationPeriod: w.RotationPeriod,
		Retain: w.Retain, PublishAhead: w.PublishAhead, Keys: make([]sched.Key, len(w.Keys))}
	for i, k := range w.Keys {
		sw.Keys[i] = sched.Key{ID: k.ID, Name: k.name, State: k.State, NotBefore: k.NotBefore, EncryptUntil: k.EncryptUntil, NotAfter: k.NotAfter}
	}
	return sw
}

// NextAfter returns the first published key that activates after t, or nil.
func (w *Window) NextAfter(t time.Time) *Key {
	for _, k := range w.Keys {
		if k.NotBefore.After(t) {
			return k
		}
	}
	return nil
}

// ByID returns the key with id, or nil.
func (w *Window) ByID(id string) *Key {
	for _, k := range w.Keys {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// WindowReader returns the keyring's window. VaultReader is the one the
// command uses; tests and benchmarks pass their own.
type WindowReader func(ctx context.Context) (*Window, error)

// VaultReader reads mount/keys/keyring?format=format with vc. The client's
// token needs read on that path only (bootstrap/policies/fleetcheck.hcl).
func VaultReader(vc *api.Client, mount, keyring, format string) WindowReader {
	path := mount + "/keys/" + keyring
	return func(ctx context.Context) (*Window, error) {
		sec, err := vc.Logical().ReadWithDataWithContext(ctx, path, map[string][]string{"format": {format}})
		if err != nil {
			return nil, fmt.Errorf("fleetcheck: read %s?format=%s: %w", path, format, err)
		}
		if sec == nil || sec.Data == nil {
			return nil, fmt.Errorf("fleetcheck: read %s: no such keyring (404); check the mount and keyring name", path)
		}
		raw, err := json.Marshal(sec.Data)
		if err != nil {
			return nil, fmt.Errorf("fleetcheck: read %s: %w", path, err)
		}
		defer clear(raw)
		w, err := ParseWindow(raw, format, time.Now())
		if err != nil {
			return nil, fmt.Errorf("fleetcheck: read %s: %w", path, err)
		}
		if w.Keyring == "" {
			w.Keyring = keyring
		}
		return w, nil
	}
}

// ParseWindow decodes the response data of a window read in format with the
// schedule package's decoder (the one every reader uses). Errors name the
// field, the rule and the value; they never echo key material or ids.
func ParseWindow(data []byte, format string, readAt time.Time) (*Window, error) {
	if !slices.Contains(Formats, format) {
		return nil, fmt.Errorf("format: must be one of %v, got %q", Formats, format)
	}
	sw, err := sched.Decode(data, format)
	if err != nil {
		return nil, err
	}
	defer sw.Wipe()
	w := &Window{
		Keyring:        sw.Name,
		Format:         format,
		KeySize:        sw.KeySize,
		RotationPeriod: sw.RotationPeriod,
		PublishAhead:   sw.PublishAhead,
		Retain:         sw.Retain,
		ReadAt:         readAt,
	}
	for i := range sw.Keys {
		sk := &sw.Keys[i]
		k := &Key{ID: sk.ID, State: sk.State, NotBefore: sk.NotBefore, EncryptUntil: sk.EncryptUntil, NotAfter: sk.NotAfter, name: sk.Name}
		if format == FormatGo {
			k.gok = slices.Clone(sk.Material)
		} else {
			_, aes, hmac, err := sched.Split(format, sw.KeySize, sk.Material)
			if err != nil {
				w.wipe()
				return nil, fmt.Errorf("window: keys[%d].ticket_key: %w", i, err)
			}
			k.aes, k.hmac = slices.Clone(aes), slices.Clone(hmac)
		}
		w.Keys = append(w.Keys, k)
	}
	return w, nil
}

func (w *Window) wipe() {
	for _, k := range w.Keys {
		k.wipe()
	}
}
