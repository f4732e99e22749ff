package fleetcheck

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/api"
)

// Server formats of the engine (docs/api.md). The three OpenSSL-based ones
// share one ticket construction and differ only in the order of the key's
// parts.
const (
	FormatNginx   = "nginx"
	FormatHAProxy = "haproxy"
	FormatEnvoy   = "envoy"
	FormatGo      = "go"
)

// Formats lists the formats a check accepts.
var Formats = []string{FormatNginx, FormatHAProxy, FormatEnvoy, FormatGo}

// keyNameLen is the length of a key name, the first bytes of every ticket.
const keyNameLen = 16

// goKeyLen is the length of a key in the go format.
const goKeyLen = 32

// Key is one ticket key of a window. Its material lives only in memory, in
// unexported fields: it is never printed, logged, marshalled or written.
type Key struct {
	// ID is the hex of the 16-byte key name (public: OpenSSL servers send it
	// in clear at the front of every ticket).
	ID string `json:"id"`
	// State is the state the engine reported at the read: current, next or
	// previous.
	State string `json:"state"`
	// PublishAt is when the key became readable (the engine's publish_at;
	// zero from an engine that does not send it).
	PublishAt time.Time `json:"publish_at,omitzero"`
	// NotBefore is when the key starts encrypting.
	NotBefore time.Time `json:"not_before"`
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

// KeyAt returns the key that encrypts at t according to the schedule: the
// latest key whose NotBefore is at or before t, or nil.
func (w *Window) KeyAt(t time.Time) *Key {
	var cur *Key
	for _, k := range w.Keys {
		if !k.NotBefore.After(t) && t.Before(k.NotAfter) {
			cur = k
		}
	}
	return cur
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
		if err := applyPublishAt(w, raw); err != nil {
			w.wipe()
			return nil, fmt.Errorf("fleetcheck: read %s: %w", path, err)
		}
		if w.Keyring == "" {
			w.Keyring = keyring
		}
		return w, nil
	}
}

type wireWindow struct {
	Name           string    `json:"name"`
	Format         string    `json:"format"`
	KeySize        int       `json:"key_size"`
	RotationPeriod int64     `json:"rotation_period"`
	Retain         int64     `json:"retain"`
	PublishAhead   int64     `json:"publish_ahead"`
	Keys           []wireKey `json:"keys"`
}

type wireKey struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	NotBefore string `json:"not_before"`
	NotAfter  string `json:"not_after"`
	TicketKey string `json:"ticket_key"`
}

// ParseWindow decodes the response data of a window read in format.
// Errors name the field and the rule; they never echo key material.
func ParseWindow(data []byte, format string, readAt time.Time) (*Window, error) {
	if !slices.Contains(Formats, format) {
		return nil, fmt.Errorf("format: must be one of %v, got %q", Formats, format)
	}
	var ww wireWindow
	if err := json.Unmarshal(data, &ww); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("window: field %q: want %s, got JSON %s", te.Field, te.Type, te.Value)
		}
		return nil, errors.New("window: not a JSON object of the documented shape")
	}
	if ww.Format != format {
		return nil, fmt.Errorf("window: format: want %q, got %q", format, ww.Format)
	}
	if ww.KeySize != 48 && ww.KeySize != 80 {
		return nil, fmt.Errorf("window: key_size: must be 48 or 80, got %d", ww.KeySize)
	}
	if ww.RotationPeriod < 1 {
		return nil, fmt.Errorf("window: rotation_period: must be >= 1 second, got %d", ww.RotationPeriod)
	}
	if len(ww.Keys) == 0 {
		return nil, errors.New("window: keys: must hold at least one key, got 0")
	}
	w := &Window{
		Keyring:        ww.Name,
		Format:         format,
		KeySize:        ww.KeySize,
		RotationPeriod: time.Duration(ww.RotationPeriod) * time.Second,
		PublishAhead:   time.Duration(ww.PublishAhead) * time.Second,
		Retain:         time.Duration(ww.Retain) * time.Second,
		ReadAt:         readAt,
	}
	seen := map[string]bool{}
	for i, wk := range ww.Keys {
		k, err := parseKey(i, wk, format, ww.KeySize)
		if err != nil {
			w.wipe()
			return nil, err
		}
		if seen[k.ID] {
			w.wipe()
			return nil, fmt.Errorf("window: keys[%d].id: must be unique, %s appears twice", i, k.ID)
		}
		seen[k.ID] = true
		w.Keys = append(w.Keys, k)
	}
	slices.SortFunc(w.Keys, func(a, b *Key) int { return a.NotBefore.Compare(b.NotBefore) })
	return w, nil
}

func parseKey(i int, wk wireKey, format string, keySize int) (*Key, error) {
	k := &Key{ID: wk.ID, State: wk.State}
	name, err := hex.DecodeString(wk.ID)
	if err != nil || len(name) != keyNameLen {
		return nil, fmt.Errorf("window: keys[%d].id: must be %d hex characters, got %q", i, 2*keyNameLen, wk.ID)
	}
	copy(k.name[:], name)
	if k.NotBefore, err = time.Parse(time.RFC3339, wk.NotBefore); err != nil {
		return nil, fmt.Errorf("window: keys[%d].not_before: must be an RFC 3339 time, got %q", i, wk.NotBefore)
	}
	if k.NotAfter, err = time.Parse(time.RFC3339, wk.NotAfter); err != nil {
		return nil, fmt.Errorf("window: keys[%d].not_after: must be an RFC 3339 time, got %q", i, wk.NotAfter)
	}
	if !k.NotAfter.After(k.NotBefore) {
		return nil, fmt.Errorf("window: keys[%d].not_after: must be after not_before (%s), got %s", i, wk.NotBefore, wk.NotAfter)
	}
	raw, err := base64.StdEncoding.DecodeString(wk.TicketKey)
	if err != nil {
		return nil, fmt.Errorf("window: keys[%d].ticket_key: must be standard base64, got %d characters that are not", i, len(wk.TicketKey))
	}
	defer clear(raw)
	if err := k.setMaterial(raw, format, keySize); err != nil {
		return nil, fmt.Errorf("window: keys[%d].ticket_key: %w", i, err)
	}
	return k, nil
}

// setMaterial splits raw, a key in format's layout (docs/api.md), into its
// parts, checking that its name matches the key id.
//
//	nginx 80, envoy: name[16] hmac[32] aes[32]
//	nginx 48:        name[16] aes[16] hmac[16]
//	haproxy:         name[16] aes[n] hmac[n]
//	go:              32 bytes
func (k *Key) setMaterial(raw []byte, format string, keySize int) error {
	if format == FormatGo {
		if len(raw) != goKeyLen {
			return fmt.Errorf("must decode to %d bytes in format go, got %d", goKeyLen, len(raw))
		}
		k.gok = slices.Clone(raw)
		return nil
	}
	if len(raw) != keySize {
		return fmt.Errorf("must decode to key_size (%d) bytes, got %d", keySize, len(raw))
	}
	if format == FormatEnvoy && keySize != 80 {
		return fmt.Errorf("format envoy needs 80-byte keys, got %d", keySize)
	}
	if string(raw[:keyNameLen]) != string(k.name[:]) {
		return errors.New("must start with the key name whose hex is the id; it does not")
	}
	n := (keySize - keyNameLen) / 2
	first, second := raw[keyNameLen:keyNameLen+n], raw[keyNameLen+n:]
	if format == FormatHAProxy || (format == FormatNginx && keySize == 48) {
		k.aes, k.hmac = slices.Clone(first), slices.Clone(second)
	} else {
		k.hmac, k.aes = slices.Clone(first), slices.Clone(second)
	}
	return nil
}

func (w *Window) wipe() {
	for _, k := range w.Keys {
		k.wipe()
	}
}
