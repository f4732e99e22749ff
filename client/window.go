package client

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// KeyState is the state of a ticket key, as the engine names it or as the
// Source derives it locally from the key's times.
type KeyState string

const (
	// StateCurrent is the one key that encrypts new tickets.
	StateCurrent KeyState = "current"
	// StateNext is a published key that is not active yet: it only decrypts
	// (tickets made by nodes that switched a moment earlier).
	StateNext KeyState = "next"
	// StatePrevious is a key that stopped encrypting and still decrypts
	// until its not_after.
	StatePrevious KeyState = "previous"
	// StateLocal is the node-local random key used while the schedule is
	// exhausted (see the package documentation). Its tickets resume only on
	// this node.
	StateLocal KeyState = "local"
)

// Limits applied when validating a window.
const (
	// goKeySize is the length of a `go` format ticket key.
	goKeySize = 32
	// idHexLen is the length of a key id: hex of the 16-byte key name.
	idHexLen = 32
	// maxKeyLifetime is the engine's upper bound on max_key_lifetime: no key
	// stays decryptable longer than this after it activates.
	maxKeyLifetime = 168 * time.Hour
	// maxWindowKeys bounds the number of keys in one window. The engine's
	// limits allow at most (168h / 5s) + 1 keys; anything above is malformed.
	maxWindowKeys = int(maxKeyLifetime/(5*time.Second)) + 2
	// maxWindowBytes bounds the size of an encoded window accepted by
	// decodeWindow.
	maxWindowBytes = 64 << 20
)

// Key is one validated ticket key of a window.
type Key struct {
	// ID is the hex of the key's 16-byte name. It is not secret (OpenSSL
	// servers send it in clear in every ticket), but this package keeps it
	// out of logs and metric labels all the same.
	ID string
	// State is the state the engine reported when the window was read.
	State KeyState
	// NotBefore is when the key starts encrypting.
	NotBefore time.Time
	// EncryptUntil is when the key stops encrypting, as the engine stored it
	// (encrypt_until; the next key's NotBefore). Zero when the engine did not
	// publish it (v0.1.0): the Source then computes it from the next key's
	// NotBefore or, for the last key, one RotationPeriod after NotBefore.
	EncryptUntil time.Time
	// NotAfter is when the key stops decrypting; it is never used at or
	// after this instant.
	NotAfter time.Time

	name     keyName // the raw bytes of ID, in front of every ticket
	material [goKeySize]byte
}

// Window is one validated read of a keyring in the `go` format.
type Window struct {
	// Name is the keyring name.
	Name string
	// KeySize is the keyring's key size (48 or 80; the `go` keys are always
	// 32 bytes, derived from it).
	KeySize int
	// RotationPeriod is how long each key encrypts.
	RotationPeriod time.Duration
	// Retain is how long a key keeps decrypting after it stops encrypting.
	Retain time.Duration
	// PublishAhead is how long before activation the next key is readable.
	PublishAhead time.Duration
	// TTL is how long after the read the window will change.
	TTL time.Duration
	// Keys are sorted by NotBefore, oldest first.
	Keys []Key
}

// wireWindow is the response data of GET <mount>/keys/<name>?format=go.
type wireWindow struct {
	Name           string    `json:"name"`
	Format         string    `json:"format"`
	KeySize        *int64    `json:"key_size"`
	RotationPeriod *int64    `json:"rotation_period"`
	Retain         *int64    `json:"retain"`
	PublishAhead   *int64    `json:"publish_ahead"`
	TTL            *int64    `json:"ttl"`
	Keys           []wireKey `json:"keys"`
}

type wireKey struct {
	ID           *string `json:"id"`
	State        *string `json:"state"`
	NotBefore    *string `json:"not_before"`
	EncryptUntil *string `json:"encrypt_until"` // optional: absent from engines before v0.2.0
	NotAfter     *string `json:"not_after"`
	TicketKey    *string `json:"ticket_key"`
}

// decodeWindow decodes and fully validates the JSON response data of a `go`
// format read. Errors name the field, the rule and the value, except for
// ticket_key and id values, which are never echoed.
func decodeWindow(data []byte) (*Window, error) {
	if len(data) > maxWindowBytes {
		return nil, fmt.Errorf("window: size must be at most %d bytes, got %d", maxWindowBytes, len(data))
	}
	var w wireWindow
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("window: not a JSON object of the documented shape: %v", redactJSONError(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("window: trailing data after the JSON object")
	}
	return w.validate()
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

func seconds(field string, v *int64, min, max int64) (time.Duration, error) {
	if v == nil {
		return 0, fmt.Errorf("window: %s: required, missing", field)
	}
	if *v < min || *v > max {
		return 0, fmt.Errorf("window: %s: must be %d..%d seconds, got %d", field, min, max, *v)
	}
	return time.Duration(*v) * time.Second, nil
}

func (w *wireWindow) validate() (*Window, error) {
	if w.Format != "go" {
		return nil, fmt.Errorf("window: format: must be %q, got %q", "go", w.Format)
	}
	if w.Name == "" {
		return nil, fmt.Errorf(`window: name: required, got ""`)
	}
	if w.KeySize == nil || (*w.KeySize != 48 && *w.KeySize != 80) {
		got := "missing"
		if w.KeySize != nil {
			got = fmt.Sprint(*w.KeySize)
		}
		return nil, fmt.Errorf("window: key_size: must be 48 or 80, got %s", got)
	}
	maxSec := int64(maxKeyLifetime / time.Second)
	out := &Window{Name: w.Name, KeySize: int(*w.KeySize)}
	var err error
	if out.RotationPeriod, err = seconds("rotation_period", w.RotationPeriod, 1, maxSec); err != nil {
		return nil, err
	}
	if out.Retain, err = seconds("retain", w.Retain, 0, maxSec); err != nil {
		return nil, err
	}
	if out.PublishAhead, err = seconds("publish_ahead", w.PublishAhead, 0, maxSec); err != nil {
		return nil, err
	}
	if out.TTL, err = seconds("ttl", w.TTL, 1, maxSec); err != nil {
		return nil, err
	}
	if len(w.Keys) == 0 {
		return nil, fmt.Errorf("window: keys: must hold at least one key, got 0")
	}
	if len(w.Keys) > maxWindowKeys {
		return nil, fmt.Errorf("window: keys: must hold at most %d keys, got %d", maxWindowKeys, len(w.Keys))
	}

	ids := make(map[keyName]int, len(w.Keys))
	materials := make(map[[goKeySize]byte]int, len(w.Keys))
	activations := make(map[int64]int, len(w.Keys))
	current := -1
	out.Keys = make([]Key, len(w.Keys))
	for i, wk := range w.Keys {
		k, err := wk.validate(i)
		if err != nil {
			return nil, err
		}
		if j, dup := ids[k.name]; dup {
			return nil, fmt.Errorf("window: keys[%d].id: must be unique, same as keys[%d].id", i, j)
		}
		ids[k.name] = i
		if j, dup := materials[k.material]; dup {
			return nil, fmt.Errorf("window: keys[%d].ticket_key: must be unique, same as keys[%d].ticket_key", i, j)
		}
		materials[k.material] = i
		nb := k.NotBefore.Unix()
		if j, dup := activations[nb]; dup {
			return nil, fmt.Errorf("window: keys[%d].not_before: must differ from every other key's, same as keys[%d] (%s)", i, j, k.NotBefore.Format(time.RFC3339))
		}
		activations[nb] = i
		if k.State == StateCurrent {
			if current >= 0 {
				return nil, fmt.Errorf("window: keys[%d].state: exactly one key must be %q, keys[%d] is too", i, StateCurrent, current)
			}
			current = i
		}
		out.Keys[i] = k
	}
	if current < 0 {
		return nil, fmt.Errorf("window: keys: exactly one key must be %q, got none", StateCurrent)
	}
	cur := out.Keys[current]
	for i, k := range out.Keys {
		switch k.State {
		case StateNext:
			if !k.NotBefore.After(cur.NotBefore) {
				return nil, fmt.Errorf("window: keys[%d].not_before: a %q key must activate after the current key (%s), got %s",
					i, StateNext, cur.NotBefore.Format(time.RFC3339), k.NotBefore.Format(time.RFC3339))
			}
		case StatePrevious:
			if !k.NotBefore.Before(cur.NotBefore) {
				return nil, fmt.Errorf("window: keys[%d].not_before: a %q key must have activated before the current key (%s), got %s",
					i, StatePrevious, cur.NotBefore.Format(time.RFC3339), k.NotBefore.Format(time.RFC3339))
			}
		}
	}
	sort.Slice(out.Keys, func(i, j int) bool { return out.Keys[i].NotBefore.Before(out.Keys[j].NotBefore) })
	return out, nil
}

func (wk *wireKey) validate(i int) (Key, error) {
	var k Key
	if wk.ID == nil {
		return k, fmt.Errorf("window: keys[%d].id: required, missing", i)
	}
	if len(*wk.ID) != idHexLen {
		return k, fmt.Errorf("window: keys[%d].id: must be %d hex characters, got %d characters", i, idHexLen, len(*wk.ID))
	}
	if _, err := hex.Decode(k.name[:], []byte(*wk.ID)); err != nil {
		return k, fmt.Errorf("window: keys[%d].id: must be %d hex characters, got a non-hex character", i, idHexLen)
	}
	k.ID = *wk.ID

	if wk.State == nil {
		return k, fmt.Errorf("window: keys[%d].state: required, missing", i)
	}
	switch s := KeyState(*wk.State); s {
	case StateCurrent, StateNext, StatePrevious:
		k.State = s
	default:
		return k, fmt.Errorf("window: keys[%d].state: must be current, next or previous, got %q", i, *wk.State)
	}

	var err error
	if k.NotBefore, err = rfc3339(i, "not_before", wk.NotBefore); err != nil {
		return k, err
	}
	if k.NotAfter, err = rfc3339(i, "not_after", wk.NotAfter); err != nil {
		return k, err
	}
	if !k.NotAfter.After(k.NotBefore) {
		return k, fmt.Errorf("window: keys[%d].not_after: must be after not_before (%s), got %s",
			i, k.NotBefore.Format(time.RFC3339), k.NotAfter.Format(time.RFC3339))
	}
	if life := k.NotAfter.Sub(k.NotBefore); life > maxKeyLifetime {
		return k, fmt.Errorf("window: keys[%d].not_after: must be at most %s after not_before, got %s", i, maxKeyLifetime, life)
	}
	if wk.EncryptUntil != nil {
		if k.EncryptUntil, err = rfc3339(i, "encrypt_until", wk.EncryptUntil); err != nil {
			return k, err
		}
		if k.EncryptUntil.Before(k.NotBefore) {
			return k, fmt.Errorf("window: keys[%d].encrypt_until: must not be before not_before (%s), got %s",
				i, k.NotBefore.Format(time.RFC3339), k.EncryptUntil.Format(time.RFC3339))
		}
	}

	if wk.TicketKey == nil {
		return k, fmt.Errorf("window: keys[%d].ticket_key: required, missing", i)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(*wk.TicketKey)
	if err != nil {
		return k, fmt.Errorf("window: keys[%d].ticket_key: must be standard padded base64, got invalid base64 of %d characters", i, len(*wk.TicketKey))
	}
	if len(raw) != goKeySize {
		return k, fmt.Errorf("window: keys[%d].ticket_key: must decode to %d bytes (the go format), got %d bytes", i, goKeySize, len(raw))
	}
	copy(k.material[:], raw)
	clear(raw)
	if k.material == ([goKeySize]byte{}) {
		return k, fmt.Errorf("window: keys[%d].ticket_key: must not be all zero bytes", i)
	}
	return k, nil
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

// sameKeys reports whether two windows hold the same keys (ids, times and
// material), so that a read changing nothing skips the swap.
func (w *Window) sameKeys(o *Window) bool {
	if w == nil || o == nil || len(w.Keys) != len(o.Keys) || w.RotationPeriod != o.RotationPeriod || w.Retain != o.Retain {
		return false
	}
	for i := range w.Keys {
		a, b := &w.Keys[i], &o.Keys[i]
		if a.ID != b.ID || !a.NotBefore.Equal(b.NotBefore) || !a.EncryptUntil.Equal(b.EncryptUntil) || !a.NotAfter.Equal(b.NotAfter) || a.material != b.material {
			return false
		}
	}
	return true
}

// encryptEnd is when keys[i] stops encrypting: its encrypt_until as the
// engine stored it when published; otherwise (an engine before v0.2.0) when
// the next key in the schedule activates or, for the last published key,
// one rotation period after its own activation (the current rotation_period,
// which may differ from the one the key was made with). Never after its
// not_after.
func (w *Window) encryptEnd(i int) time.Time {
	k := &w.Keys[i]
	var end time.Time
	switch {
	case !k.EncryptUntil.IsZero():
		end = k.EncryptUntil
	case i+1 < len(w.Keys):
		end = w.Keys[i+1].NotBefore
	default:
		end = k.NotBefore.Add(w.RotationPeriod)
	}
	if end.After(k.NotAfter) {
		end = k.NotAfter
	}
	return end
}
