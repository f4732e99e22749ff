// Package haproxypush holds the pure part of ticketkeys-haproxy-push: the parsing of the tls-ticket-keys
// file and of the schedule file Vault Agent renders, the ring the schedule requires at an instant, and the
// keys a push must send. The command (cmd/ticketkeys-haproxy-push) does the I/O; the schedule-invariants
// harness (history_test.go) feeds every window the engine serves in the haproxy format through these same
// functions, so the push's input is checked against the engine over generated histories.
package haproxypush

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// RingSize is HAProxy's TLS_TICKETS_NO: the number of keys per reference (previous, current, next).
const RingSize = 3

// ParseKeysFile returns the last RingSize keys of a tls-ticket-keys file, in canonical base64. It enforces
// HAProxy's rules: at least three lines, each valid base64 of 48 or 80 bytes, all the same size.
func ParseKeysFile(data []byte) ([]string, error) {
	var keys []string
	size := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: not standard base64 (%d characters)", line, len(s))
		}
		if !schedule.ValidKeySize(len(raw)) {
			return nil, fmt.Errorf("line %d: key is %d bytes, want 48 or 80", line, len(raw))
		}
		if size != 0 && len(raw) != size {
			return nil, fmt.Errorf("line %d: key is %d bytes, earlier keys are %d (HAProxy needs one size)", line, len(raw), size)
		}
		size = len(raw)
		keys = append(keys, base64.StdEncoding.EncodeToString(raw))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) < RingSize {
		return nil, fmt.Errorf("has %d key line(s), want at least %d (previous, current, next)", len(keys), RingSize)
	}
	return keys[len(keys)-RingSize:], nil
}

// MissingSuffix returns the keys of want to send so that have, shifted once per key sent, ends equal to
// want: the shortest suffix want[RingSize-m:] such that have[m:] == want[:RingSize-m].
func MissingSuffix(have, want []string) []string {
	for m := 0; m < RingSize; m++ {
		if Equal(have[m:], want[:RingSize-m]) {
			return want[RingSize-m:]
		}
	}
	return want
}

// Equal reports whether two rings hold the same keys in the same order.
func Equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// KeyID is the hex of the key's 16-byte name in HAProxy's layout (schedule.Split; public: it is sent in
// every ticket), or "invalid".
func KeyID(b64 string) string {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "invalid"
	}
	defer clear(raw)
	name, _, _, err := schedule.Split(schedule.FormatHAProxy, len(raw), raw)
	if err != nil {
		return "invalid"
	}
	return hex.EncodeToString(name)
}

// MaxScheduleKeys is the engine's cap on a keyring's keys: every window it serves fits.
const MaxScheduleKeys = 256

// schedule.MaxKeyLifetime is the engine's ceiling on not_after - not_before.

// ScheduleKey is one key of a schedule file: the base64 key in HAProxy's layout and its times.
type ScheduleKey struct {
	// B64 is the key in standard base64, HAProxy's layout. Secret.
	B64 string
	// ID is the hex of the key's 16-byte name (public).
	ID string
	// NotBefore, EncryptUntil and NotAfter are the key's times.
	NotBefore, EncryptUntil, NotAfter time.Time
}

// ParseScheduleFile reads the schedule file Vault Agent renders from the haproxy format (one line per key
// of the window: base64 key, not_before, encrypt_until, not_after, separated by single spaces; the
// engine's order). It enforces what the engine guarantees and names the line, the key id, the field and the
// rule when something is wrong; errors never hold key material.
func ParseScheduleFile(data []byte) ([]ScheduleKey, error) {
	var keys []ScheduleKey
	size := 0
	ids := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 4096)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Split(strings.TrimRight(sc.Text(), "\r"), " ")
		if len(f) != 4 {
			return nil, fmt.Errorf("line %d: has %d fields, want a base64 key, its not_before, encrypt_until and not_after separated by single spaces", line, len(f))
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(f[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: key is not standard padded base64 (%d characters)", line, len(f[0]))
		}
		if len(raw) != 48 && len(raw) != 80 {
			return nil, fmt.Errorf("line %d: key is %d bytes, want 48 or 80", line, len(raw))
		}
		if size != 0 && len(raw) != size {
			return nil, fmt.Errorf("line %d: key is %d bytes, earlier keys are %d (HAProxy needs one size)", line, len(raw), size)
		}
		size = len(raw)
		k := ScheduleKey{B64: f[0], ID: hex.EncodeToString(raw[:16])}
		if j, dup := ids[k.ID]; dup {
			return nil, fmt.Errorf("line %d: key id %s repeats line %d's: key names must be distinct", line, k.ID, j)
		}
		ids[k.ID] = line
		for i, dst := range []*time.Time{&k.NotBefore, &k.EncryptUntil, &k.NotAfter} {
			field := []string{"not_before", "encrypt_until", "not_after"}[i]
			t, err := time.Parse(time.RFC3339, f[i+1])
			if err != nil || t.Year() < 2000 || t.Year() > 9999 {
				return nil, fmt.Errorf("line %d (key %s): %s %q: want an RFC 3339 time in years 2000..9999", line, k.ID, field, f[i+1])
			}
			*dst = t
		}
		switch {
		case !k.NotAfter.After(k.NotBefore):
			return nil, fmt.Errorf("line %d (key %s): not_after %s must be after not_before %s", line, k.ID, f[3], f[1])
		case k.NotAfter.Sub(k.NotBefore) > schedule.MaxKeyLifetime:
			return nil, fmt.Errorf("line %d (key %s): not_after %s is more than 168h after not_before %s", line, k.ID, f[3], f[1])
		case k.EncryptUntil.Before(k.NotBefore):
			return nil, fmt.Errorf("line %d (key %s): encrypt_until %s must not be before not_before %s", line, k.ID, f[2], f[1])
		}
		keys = append(keys, k)
		if len(keys) > MaxScheduleKeys {
			return nil, fmt.Errorf("has more than %d keys", MaxScheduleKeys)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	if len(keys) == 0 {
		return nil, errors.New("has no key line")
	}
	starts := map[int64]int{}
	for i, k := range keys {
		if k.EncryptUntil.After(k.NotBefore) {
			if j, dup := starts[k.NotBefore.Unix()]; dup {
				return nil, fmt.Errorf("line %d (key %s): not_before is the same as line %d's and both encrypt for a while: at most one of the keys sharing a not_before may encrypt", i+1, k.ID, j+1)
			}
			starts[k.NotBefore.Unix()] = i
		}
	}
	return keys, nil
}

// RingAt is HAProxy's ring of three (previous, current, next; HAProxy encrypts with the middle one) that
// the schedule requires at now. Which key encrypts is the schedule package's rule (Window.EncryptingAt,
// the one the engine and the Go client use); when no key has activated yet by this clock, the file's first
// key (the engine's current key when Agent rendered it) encrypts, as in the Go client (the clock is behind
// Vault's). Previous is the newest other key already activated, next the earliest key not yet activated,
// each stood in by the current key when missing (as the engine's tls_ticket_keys); no key at or past its
// not_after. exhausted is true when no published key may encrypt: ring then holds only the newest live key
// already activated, if any (the caller adds the local key). next is the first instant after now at which
// the ring changes (zero: none).
func RingAt(keys []ScheduleKey, now time.Time) (ring []string, ids []string, exhausted bool, next time.Time) {
	// The schedule's window: keys by not_before, a zero-length key before the key sharing its not_before.
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ka, kb := keys[order[a]], keys[order[b]]
		if !ka.NotBefore.Equal(kb.NotBefore) {
			return ka.NotBefore.Before(kb.NotBefore)
		}
		return !ka.EncryptUntil.After(ka.NotBefore) && kb.EncryptUntil.After(kb.NotBefore)
	})
	w := &schedule.Window{Keys: make([]schedule.Key, len(keys))}
	for j, i := range order {
		k := keys[i]
		w.Keys[j] = schedule.Key{ID: k.ID, NotBefore: k.NotBefore, EncryptUntil: k.EncryptUntil, NotAfter: k.NotAfter}
	}
	next, _ = w.NextChange(now)
	cur := -1
	if j := w.EncryptingAt(now); j >= 0 {
		cur = order[j]
	} else if now.Before(w.Keys[0].NotBefore) && now.Before(keys[0].NotAfter) {
		cur = 0
	}
	prev, nxt := -1, -1
	for i, k := range keys {
		if i == cur || !now.Before(k.NotAfter) {
			continue
		}
		if k.NotBefore.After(now) {
			if nxt < 0 || k.NotBefore.Before(keys[nxt].NotBefore) {
				nxt = i
			}
		} else if prev < 0 || k.NotBefore.After(keys[prev].NotBefore) {
			prev = i
		}
	}
	if cur < 0 {
		if prev >= 0 {
			return []string{keys[prev].B64}, []string{keys[prev].ID}, true, next
		}
		return nil, nil, true, next
	}
	pick := func(i int) int {
		if i < 0 {
			return cur
		}
		return i
	}
	for _, i := range []int{pick(prev), cur, pick(nxt)} {
		ring = append(ring, keys[i].B64)
		ids = append(ids, keys[i].ID)
	}
	return ring, ids, false, next
}
