package schedule

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Key states as the engine reports them at the read.
const (
	StateCurrent  = "current"
	StateNext     = "next"
	StatePrevious = "previous"
)

// Limits of a window.
const (
	// MaxKeyLifetime is the engine's upper bound on max_key_lifetime: no key
	// stays decryptable longer than this after it activates.
	MaxKeyLifetime = 168 * time.Hour
	// EngineMaxKeys is the most keys a keyring holds (engine v0.2.0 on).
	EngineMaxKeys = 256
	// MaxKeys bounds the keys of one window. Engines before the 256-key cap
	// allowed up to one key per 5s over 168h, so a window that large is
	// accepted; anything above is malformed.
	MaxKeys = int(MaxKeyLifetime/(5*time.Second)) + 2
	// MaxWindowBytes bounds the size of an encoded window.
	MaxWindowBytes = 64 << 20
	// HAProxyLines is the number of lines of HAProxy's tls-ticket-keys ring
	// (previous, current, next).
	HAProxyLines = 3
)

// Key is one key of a decoded window. Its material is secret: String,
// GoString and JSON never show it, and the decoder's errors never echo it
// (nor the id).
type Key struct {
	// ID is the hex of the key's 16-byte name.
	ID string `json:"id"`
	// Name is the key name, the raw bytes of ID.
	Name [NameSize]byte `json:"-"`
	// State is the state the engine reported at the read.
	State string `json:"state"`
	// PublishAt is when the key became readable; zero when the engine did
	// not say (it is optional on the wire).
	PublishAt time.Time `json:"publish_at,omitzero"`
	// NotBefore is when the key starts encrypting.
	NotBefore time.Time `json:"not_before"`
	// EncryptUntil is when the key stops encrypting, as the engine stored
	// it; zero when the engine did not publish it (before v0.2.0): see
	// Window.EncryptEnd. Equal to NotBefore for a key cut in the second it
	// activated: such a key never encrypts, it only decrypts.
	EncryptUntil time.Time `json:"encrypt_until,omitzero"`
	// NotAfter is when the key stops decrypting.
	NotAfter time.Time `json:"not_after"`
	// Material is the decoded ticket_key in the window's format (32 bytes
	// for go, key_size bytes otherwise). Secret.
	Material []byte `json:"-"`
}

// String shows the id and state, never material (%v and %+v use it).
func (k Key) String() string { return k.ID + " (" + k.State + ")" }

// GoString keeps %#v from printing material.
func (k Key) GoString() string { return "schedule.Key{ID:" + k.ID + "}" }

// Window is one validated read of a keyring. Keys are sorted by NotBefore;
// keys that share a NotBefore (a key cut in the second it activated and its
// successor) are ordered so that the one that encrypts comes last.
type Window struct {
	Name           string
	Format         string
	KeySize        int
	RotationPeriod time.Duration
	Retain         time.Duration
	PublishAhead   time.Duration
	TTL            time.Duration
	Keys           []Key
	// HAProxyLines is tls_ticket_keys (haproxy format only): HAProxy's
	// ring, previous, current, next, each a ticket_key of Keys. Secret.
	HAProxyLines []string
}

// Wipe overwrites every key's material.
func (w *Window) Wipe() {
	for i := range w.Keys {
		clear(w.Keys[i].Material)
	}
	w.HAProxyLines = nil
}

// Wire is the response data of GET <mount>/keys/<name>?format=<format>, as
// the engine serves it (docs/api.md); encode it with encoding/json.
type Wire struct {
	Name           string    `json:"name"`
	Format         string    `json:"format"`
	KeySize        int       `json:"key_size"`
	RotationPeriod int64     `json:"rotation_period"`
	Retain         int64     `json:"retain"`
	PublishAhead   int64     `json:"publish_ahead"`
	TTL            int64     `json:"ttl"`
	Keys           []WireKey `json:"keys"`
	HAProxyLines   []string  `json:"tls_ticket_keys,omitempty"`
}

// WireKey is one key of a Wire window. Times are RFC 3339 in UTC; the
// optional ones are left out when empty.
type WireKey struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	PublishAt    string `json:"publish_at,omitempty"`
	NotBefore    string `json:"not_before"`
	EncryptUntil string `json:"encrypt_until,omitempty"`
	NotAfter     string `json:"not_after"`
	TicketKey    string `json:"ticket_key"`
}

// decodeWire is Wire with every field optional, so a missing field is told
// apart from a zero one.
type decodeWire struct {
	Name           *string     `json:"name"`
	Format         *string     `json:"format"`
	KeySize        *int64      `json:"key_size"`
	RotationPeriod *int64      `json:"rotation_period"`
	Retain         *int64      `json:"retain"`
	PublishAhead   *int64      `json:"publish_ahead"`
	TTL            *int64      `json:"ttl"`
	Keys           []decodeKey `json:"keys"`
	HAProxyLines   *[]*string  `json:"tls_ticket_keys"`
}

type decodeKey struct {
	ID           *string `json:"id"`
	State        *string `json:"state"`
	PublishAt    *string `json:"publish_at"` // optional
	NotBefore    *string `json:"not_before"`
	EncryptUntil *string `json:"encrypt_until"` // optional: absent from engines before v0.2.0
	NotAfter     *string `json:"not_after"`
	TicketKey    *string `json:"ticket_key"`
}

// Decode decodes and fully validates the response data of a window read.
// format is the format the reader asked for ("" accepts any). It accepts
// every window the engine serves or served: up to MaxKeys keys, keys
// without encrypt_until (engines before v0.2.0), and zero-length keys that
// share their not_before with their successor. Errors start with "window: ",
// name the field, the rule and the value, and never echo a ticket_key, a
// tls_ticket_keys line or an id.
func Decode(data []byte, format string) (*Window, error) {
	if len(data) > MaxWindowBytes {
		return nil, fmt.Errorf("window: size must be at most %d bytes, got %d", MaxWindowBytes, len(data))
	}
	var dw decodeWire
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&dw); err != nil {
		return nil, fmt.Errorf("window: not a JSON object of the documented shape: %v", redactJSONError(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("window: trailing data after the JSON object")
	}
	w, err := dw.validate(format)
	if err != nil {
		if w != nil {
			w.Wipe()
		}
		return nil, err
	}
	return w, nil
}

// redactJSONError keeps the JSON error's category but never a value: a type
// error on ticket_key must not print the key.
func redactJSONError(err error) string {
	switch e := err.(type) {
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("field %q: want %s, got JSON %s", e.Field, e.Type, e.Value)
	case *json.SyntaxError:
		return fmt.Sprintf("syntax error at offset %d", e.Offset)
	default:
		return "malformed JSON"
	}
}

func seconds(field string, v *int64, lo, hi int64) (time.Duration, error) {
	if v == nil {
		return 0, fmt.Errorf("window: %s: required, missing", field)
	}
	if *v < lo || *v > hi {
		return 0, fmt.Errorf("window: %s: must be %d..%d seconds, got %d", field, lo, hi, *v)
	}
	return time.Duration(*v) * time.Second, nil
}

func (dw *decodeWire) validate(format string) (*Window, error) {
	if dw.Format == nil {
		return nil, fmt.Errorf("window: format: required, missing")
	}
	if format != "" && *dw.Format != format {
		return nil, fmt.Errorf("window: format: must be %q, got %q", format, *dw.Format)
	}
	if !slices.Contains(Formats, *dw.Format) {
		return nil, fmt.Errorf("window: format: must be one of %v, got %q", Formats, *dw.Format)
	}
	if dw.Name == nil || *dw.Name == "" {
		return nil, fmt.Errorf(`window: name: required, got ""`)
	}
	if dw.KeySize == nil || !ValidKeySize(int(*dw.KeySize)) {
		got := "missing"
		if dw.KeySize != nil {
			got = fmt.Sprint(*dw.KeySize)
		}
		return nil, fmt.Errorf("window: key_size: must be 48 or 80, got %s", got)
	}
	w := &Window{Name: *dw.Name, Format: *dw.Format, KeySize: int(*dw.KeySize)}
	if w.Format == FormatEnvoy && w.KeySize != 80 {
		return nil, fmt.Errorf("window: key_size: format envoy needs 80-byte keys, got %d", w.KeySize)
	}
	maxSec := int64(MaxKeyLifetime / time.Second)
	var err error
	if w.RotationPeriod, err = seconds("rotation_period", dw.RotationPeriod, 1, maxSec); err != nil {
		return nil, err
	}
	if w.Retain, err = seconds("retain", dw.Retain, 0, maxSec); err != nil {
		return nil, err
	}
	if w.PublishAhead, err = seconds("publish_ahead", dw.PublishAhead, 0, maxSec); err != nil {
		return nil, err
	}
	if w.TTL, err = seconds("ttl", dw.TTL, 1, maxSec); err != nil {
		return nil, err
	}
	if len(dw.Keys) == 0 {
		return nil, fmt.Errorf("window: keys: must hold at least one key, got 0")
	}
	if len(dw.Keys) > MaxKeys {
		return nil, fmt.Errorf("window: keys: must hold at most %d keys, got %d", MaxKeys, len(dw.Keys))
	}

	ids := make(map[[NameSize]byte]int, len(dw.Keys))
	secrets := make(map[string]int, len(dw.Keys))
	current := -1
	w.Keys = make([]Key, 0, len(dw.Keys))
	for i := range dw.Keys {
		k, err := dw.Keys[i].validate(i, w.Format, w.KeySize)
		if err != nil {
			return w, err
		}
		w.Keys = append(w.Keys, k)
		if j, dup := ids[k.Name]; dup {
			return w, fmt.Errorf("window: keys[%d].id: must be unique, same as keys[%d].id", i, j)
		}
		ids[k.Name] = i
		secret := string(k.Material)
		if w.Format != FormatGo {
			secret = secret[NameSize:]
		}
		if j, dup := secrets[secret]; dup {
			return w, fmt.Errorf("window: keys[%d].ticket_key: must be unique, same secret as keys[%d].ticket_key", i, j)
		}
		secrets[secret] = i
		if k.State == StateCurrent {
			if current >= 0 {
				return w, fmt.Errorf("window: keys[%d].state: exactly one key must be %q, keys[%d] is too", i, StateCurrent, current)
			}
			current = i
		}
	}
	if current < 0 {
		return w, fmt.Errorf("window: keys: exactly one key must be %q, got none", StateCurrent)
	}
	cur := w.Keys[current]
	for i, k := range w.Keys {
		switch k.State {
		case StateNext:
			if !k.NotBefore.After(cur.NotBefore) {
				return w, fmt.Errorf("window: keys[%d].not_before: a %q key must activate after the current key (%s), got %s",
					i, StateNext, cur.NotBefore.Format(time.RFC3339), k.NotBefore.Format(time.RFC3339))
			}
		case StatePrevious:
			// A previous key may share the current key's not_before only as
			// a zero-length key (checked below, once sorted).
			if k.NotBefore.After(cur.NotBefore) {
				return w, fmt.Errorf("window: keys[%d].not_before: a %q key must not activate after the current key (%s), got %s",
					i, StatePrevious, cur.NotBefore.Format(time.RFC3339), k.NotBefore.Format(time.RFC3339))
			}
		}
	}
	if err := w.validateHAProxyLines(dw.HAProxyLines); err != nil {
		return w, err
	}

	// Sort by activation. Keys sharing a not_before: the zero-length ones
	// first, then by reported state (previous, current, next), so that the
	// one that may encrypt comes last and, for keys without encrypt_until,
	// the ones before it end where it starts.
	order := make(map[[NameSize]byte]int, len(w.Keys))
	for i, k := range w.Keys {
		order[k.Name] = i
	}
	slices.SortStableFunc(w.Keys, func(a, b Key) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		if za, zb := a.zeroLength(), b.zeroLength(); za != zb {
			if za {
				return -1
			}
			return 1
		}
		return stateRank(a.State) - stateRank(b.State)
	})
	for i := 1; i < len(w.Keys); i++ {
		a, b := &w.Keys[i-1], &w.Keys[i]
		if a.NotBefore.Equal(b.NotBefore) && w.EncryptEnd(i-1).After(a.NotBefore) {
			return w, fmt.Errorf("window: keys[%d].encrypt_until: keys sharing not_before %s (keys[%d] too) must all but one be zero-length (encrypt_until = not_before), got %s",
				order[a.Name], a.NotBefore.Format(time.RFC3339), order[b.Name], a.EncryptUntil.Format(time.RFC3339))
		}
	}
	return w, nil
}

// zeroLength reports whether the engine published k as never encrypting.
func (k *Key) zeroLength() bool {
	return !k.EncryptUntil.IsZero() && !k.EncryptUntil.After(k.NotBefore)
}

func stateRank(s string) int {
	switch s {
	case StatePrevious:
		return 0
	case StateCurrent:
		return 1
	default:
		return 2
	}
}

// validateHAProxyLines checks tls_ticket_keys: required in the haproxy
// format (three lines, each the ticket_key of a key of the window), absent
// otherwise.
func (w *Window) validateHAProxyLines(lines *[]*string) error {
	if w.Format != FormatHAProxy {
		if lines != nil {
			return fmt.Errorf("window: tls_ticket_keys: only in the haproxy format, got it in format %s", w.Format)
		}
		return nil
	}
	if lines == nil {
		return fmt.Errorf("window: tls_ticket_keys: required in the haproxy format, missing")
	}
	if len(*lines) != HAProxyLines {
		return fmt.Errorf("window: tls_ticket_keys: must hold %d lines (previous, current, next), got %d", HAProxyLines, len(*lines))
	}
	for i, line := range *lines {
		if line == nil {
			return fmt.Errorf("window: tls_ticket_keys[%d]: must be a string, got null", i)
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(*line)
		if err != nil {
			return fmt.Errorf("window: tls_ticket_keys[%d]: must be standard padded base64, got invalid base64 of %d characters", i, len(*line))
		}
		found := false
		for j := range w.Keys {
			if bytes.Equal(raw, w.Keys[j].Material) {
				found = true
				break
			}
		}
		clear(raw)
		if !found {
			return fmt.Errorf("window: tls_ticket_keys[%d]: must be the ticket_key of a key of the window, matches none", i)
		}
		w.HAProxyLines = append(w.HAProxyLines, *line)
	}
	return nil
}

func (dk *decodeKey) validate(i int, format string, keySize int) (Key, error) {
	var k Key
	if dk.ID == nil {
		return k, fmt.Errorf("window: keys[%d].id: required, missing", i)
	}
	if len(*dk.ID) != 2*NameSize {
		return k, fmt.Errorf("window: keys[%d].id: must be %d hex characters, got %d characters", i, 2*NameSize, len(*dk.ID))
	}
	if _, err := hex.Decode(k.Name[:], []byte(*dk.ID)); err != nil {
		return k, fmt.Errorf("window: keys[%d].id: must be %d hex characters, got a non-hex character", i, 2*NameSize)
	}
	k.ID = *dk.ID

	if dk.State == nil {
		return k, fmt.Errorf("window: keys[%d].state: required, missing", i)
	}
	switch *dk.State {
	case StateCurrent, StateNext, StatePrevious:
		k.State = *dk.State
	default:
		return k, fmt.Errorf("window: keys[%d].state: must be current, next or previous, got %q", i, *dk.State)
	}

	var err error
	if k.NotBefore, err = rfc3339(i, "not_before", dk.NotBefore); err != nil {
		return k, err
	}
	if k.NotAfter, err = rfc3339(i, "not_after", dk.NotAfter); err != nil {
		return k, err
	}
	if !k.NotAfter.After(k.NotBefore) {
		return k, fmt.Errorf("window: keys[%d].not_after: must be after not_before (%s), got %s",
			i, k.NotBefore.Format(time.RFC3339), k.NotAfter.Format(time.RFC3339))
	}
	if life := k.NotAfter.Sub(k.NotBefore); life > MaxKeyLifetime {
		return k, fmt.Errorf("window: keys[%d].not_after: must be at most %s after not_before, got %s", i, MaxKeyLifetime, life)
	}
	if dk.EncryptUntil != nil {
		if k.EncryptUntil, err = rfc3339(i, "encrypt_until", dk.EncryptUntil); err != nil {
			return k, err
		}
		if k.EncryptUntil.Before(k.NotBefore) {
			return k, fmt.Errorf("window: keys[%d].encrypt_until: must not be before not_before (%s), got %s",
				i, k.NotBefore.Format(time.RFC3339), k.EncryptUntil.Format(time.RFC3339))
		}
	}
	if dk.PublishAt != nil {
		if k.PublishAt, err = rfc3339(i, "publish_at", dk.PublishAt); err != nil {
			return k, err
		}
		if k.PublishAt.After(k.NotBefore) {
			return k, fmt.Errorf("window: keys[%d].publish_at: must not be after not_before (%s), got %s",
				i, k.NotBefore.Format(time.RFC3339), k.PublishAt.Format(time.RFC3339))
		}
	}

	if dk.TicketKey == nil {
		return k, fmt.Errorf("window: keys[%d].ticket_key: required, missing", i)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(*dk.TicketKey)
	if err != nil {
		return k, fmt.Errorf("window: keys[%d].ticket_key: must be standard padded base64, got invalid base64 of %d characters", i, len(*dk.TicketKey))
	}
	if want := MaterialSize(format, keySize); len(raw) != want {
		clear(raw)
		if format == FormatGo {
			return k, fmt.Errorf("window: keys[%d].ticket_key: must decode to %d bytes (the go format), got %d bytes", i, want, len(raw))
		}
		return k, fmt.Errorf("window: keys[%d].ticket_key: must decode to key_size (%d) bytes, got %d bytes", i, want, len(raw))
	}
	secret := raw
	if format != FormatGo {
		if !bytes.Equal(raw[:NameSize], k.Name[:]) {
			clear(raw)
			return k, fmt.Errorf("window: keys[%d].ticket_key: must start with the key name whose hex is the id; it does not", i)
		}
		secret = raw[NameSize:]
	}
	if allZero(secret) {
		clear(raw)
		return k, fmt.Errorf("window: keys[%d].ticket_key: must not be all zero bytes", i)
	}
	k.Material = raw
	return k, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func rfc3339(i int, field string, v *string) (time.Time, error) {
	if v == nil {
		return time.Time{}, fmt.Errorf("window: keys[%d].%s: required, missing", i, field)
	}
	t, err := time.Parse(time.RFC3339, *v)
	if err != nil {
		return time.Time{}, fmt.Errorf("window: keys[%d].%s: must be an RFC 3339 time, got %q", i, field, *v)
	}
	if t.Year() < 2000 || t.Year() > 9999 {
		return time.Time{}, fmt.Errorf("window: keys[%d].%s: must be a year in 2000..9999, got %q", i, field, *v)
	}
	return t.UTC(), nil
}
