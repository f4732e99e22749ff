package client

import (
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
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

// Limits applied when validating a window (see the schedule package).
const (
	// goKeySize is the length of a `go` format ticket key.
	goKeySize = schedule.GoKeySize
	// idHexLen is the length of a key id: hex of the 16-byte key name.
	idHexLen = 2 * schedule.NameSize
	// maxKeyLifetime is the engine's upper bound on max_key_lifetime: no key
	// stays decryptable longer than this after it activates.
	maxKeyLifetime = schedule.MaxKeyLifetime
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
	// Keys are sorted by NotBefore, oldest first (keys sharing a NotBefore:
	// the one that may encrypt last).
	Keys []Key

	sched *schedule.Window // the same keys' times, without material (see rules)
}

// decodeWindow decodes and fully validates the JSON response data of a `go`
// format read with the schedule package's decoder, the one every reader
// uses. Errors name the field, the rule and the value, except for
// ticket_key and id values, which are never echoed.
func decodeWindow(data []byte) (*Window, error) {
	sw, err := schedule.Decode(data, schedule.FormatGo)
	if err != nil {
		return nil, err
	}
	out := &Window{Name: sw.Name, KeySize: sw.KeySize, RotationPeriod: sw.RotationPeriod, Retain: sw.Retain,
		PublishAhead: sw.PublishAhead, TTL: sw.TTL, Keys: make([]Key, len(sw.Keys)), sched: sw}
	for i := range sw.Keys {
		sk := &sw.Keys[i]
		k := Key{ID: sk.ID, State: KeyState(sk.State), NotBefore: sk.NotBefore, EncryptUntil: sk.EncryptUntil, NotAfter: sk.NotAfter, name: sk.Name}
		copy(k.material[:], sk.Material)
		clear(sk.Material)
		sk.Material = nil
		out.Keys[i] = k
	}
	return out, nil
}

// rules returns the window's schedule (times only, no material), for the
// schedule package's rules: the one decoded, or one built from Keys.
func (w *Window) rules() *schedule.Window {
	if w.sched != nil {
		return w.sched
	}
	sw := &schedule.Window{Name: w.Name, Format: schedule.FormatGo, KeySize: w.KeySize, RotationPeriod: w.RotationPeriod,
		Retain: w.Retain, PublishAhead: w.PublishAhead, TTL: w.TTL, Keys: make([]schedule.Key, len(w.Keys))}
	for i, k := range w.Keys {
		sw.Keys[i] = schedule.Key{ID: k.ID, Name: k.name, State: string(k.State), NotBefore: k.NotBefore, EncryptUntil: k.EncryptUntil, NotAfter: k.NotAfter}
	}
	return sw
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

// encryptEnd is when Keys[i] stops encrypting (schedule.Window.EncryptEnd).
func (w *Window) encryptEnd(i int) time.Time { return w.rules().EncryptEnd(i) }
