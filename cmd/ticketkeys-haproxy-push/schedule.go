package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// maxScheduleKeys is the engine's cap on a keyring's keys: every window it serves fits.
const maxScheduleKeys = 256

// maxKeyLifetime is the engine's ceiling on not_after - not_before.
const maxKeyLifetime = schedule.MaxKeyLifetime

// scheduleKey is one key of a schedule file: the base64 key in HAProxy's layout and its times.
type scheduleKey struct {
	b64                               string
	id                                string
	notBefore, encryptUntil, notAfter time.Time
}

// parseScheduleFile reads the schedule file Vault Agent renders from the haproxy format (one line per key
// of the window: base64 key, not_before, encrypt_until, not_after, separated by single spaces; the
// engine's order). It enforces what the engine guarantees and names the line, the key id, the field and the
// rule when something is wrong; errors never hold key material.
func parseScheduleFile(data []byte) ([]scheduleKey, error) {
	var keys []scheduleKey
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
		k := scheduleKey{b64: f[0], id: hex.EncodeToString(raw[:16])}
		if j, dup := ids[k.id]; dup {
			return nil, fmt.Errorf("line %d: key id %s repeats line %d's: key names must be distinct", line, k.id, j)
		}
		ids[k.id] = line
		for i, dst := range []*time.Time{&k.notBefore, &k.encryptUntil, &k.notAfter} {
			field := []string{"not_before", "encrypt_until", "not_after"}[i]
			t, err := time.Parse(time.RFC3339, f[i+1])
			if err != nil || t.Year() < 2000 || t.Year() > 9999 {
				return nil, fmt.Errorf("line %d (key %s): %s %q: want an RFC 3339 time in years 2000..9999", line, k.id, field, f[i+1])
			}
			*dst = t
		}
		switch {
		case !k.notAfter.After(k.notBefore):
			return nil, fmt.Errorf("line %d (key %s): not_after %s must be after not_before %s", line, k.id, f[3], f[1])
		case k.notAfter.Sub(k.notBefore) > maxKeyLifetime:
			return nil, fmt.Errorf("line %d (key %s): not_after %s is more than 168h after not_before %s", line, k.id, f[3], f[1])
		case k.encryptUntil.Before(k.notBefore):
			return nil, fmt.Errorf("line %d (key %s): encrypt_until %s must not be before not_before %s", line, k.id, f[2], f[1])
		}
		keys = append(keys, k)
		if len(keys) > maxScheduleKeys {
			return nil, fmt.Errorf("has more than %d keys", maxScheduleKeys)
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
		if k.encryptUntil.After(k.notBefore) {
			if j, dup := starts[k.notBefore.Unix()]; dup {
				return nil, fmt.Errorf("line %d (key %s): not_before is the same as line %d's and both encrypt for a while: at most one of the keys sharing a not_before may encrypt", i+1, k.id, j+1)
			}
			starts[k.notBefore.Unix()] = i
		}
	}
	return keys, nil
}

// ringAt is HAProxy's ring of three (previous, current, next; HAProxy encrypts with the middle one) that
// the schedule requires at now. Which key encrypts is the schedule package's rule (Window.EncryptingAt,
// the one the engine and the Go client use); when no key has activated yet by this clock, the file's first
// key (the engine's current key when Agent rendered it) encrypts, as in the Go client (the clock is behind
// Vault's). Previous is the newest other key already activated, next the earliest key not yet activated,
// each stood in by the current key when missing (as the engine's tls_ticket_keys); no key at or past its
// not_after. exhausted is true when no published key may encrypt: ring then holds only the newest live key
// already activated, if any (the caller adds the local key). next is the first instant after now at which
// the ring changes (zero: none).
func ringAt(keys []scheduleKey, now time.Time) (ring []string, ids []string, exhausted bool, next time.Time) {
	// The schedule's window: keys by not_before, a zero-length key before the key sharing its not_before.
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ka, kb := keys[order[a]], keys[order[b]]
		if !ka.notBefore.Equal(kb.notBefore) {
			return ka.notBefore.Before(kb.notBefore)
		}
		return !ka.encryptUntil.After(ka.notBefore) && kb.encryptUntil.After(kb.notBefore)
	})
	w := &schedule.Window{Keys: make([]schedule.Key, len(keys))}
	for j, i := range order {
		k := keys[i]
		w.Keys[j] = schedule.Key{ID: k.id, NotBefore: k.notBefore, EncryptUntil: k.encryptUntil, NotAfter: k.notAfter}
	}
	next, _ = w.NextChange(now)
	cur := -1
	if j := w.EncryptingAt(now); j >= 0 {
		cur = order[j]
	} else if now.Before(w.Keys[0].NotBefore) && now.Before(keys[0].notAfter) {
		cur = 0
	}
	prev, nxt := -1, -1
	for i, k := range keys {
		if i == cur || !now.Before(k.notAfter) {
			continue
		}
		if k.notBefore.After(now) {
			if nxt < 0 || k.notBefore.Before(keys[nxt].notBefore) {
				nxt = i
			}
		} else if prev < 0 || k.notBefore.After(keys[prev].notBefore) {
			prev = i
		}
	}
	if cur < 0 {
		if prev >= 0 {
			return []string{keys[prev].b64}, []string{keys[prev].id}, true, next
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
		ring = append(ring, keys[i].b64)
		ids = append(ids, keys[i].id)
	}
	return ring, ids, false, next
}

// ScheduleReport says what a schedule run did, by key id only.
type ScheduleReport struct {
	// Ring holds the ids the schedule requires: previous, current (encrypting), next.
	Ring []string
	// Exhausted is true when no published key may encrypt: a node-local random key encrypts.
	Exhausted bool
	// Wrote is true when the keys file was rewritten.
	Wrote bool
	// Next is the next instant of the schedule (zero: none).
	Next time.Time
	// Push is the push's report (when HAProxy runs).
	Push Report
}

// String summarises the report without key material.
func (r ScheduleReport) String() string {
	s := fmt.Sprintf("schedule requires ring ids %s", strings.Join(r.Ring, ","))
	if r.Exhausted {
		s += " (exhausted: no published key may encrypt; a node-local random key encrypts, tickets resume on this node only)"
	}
	if r.Wrote {
		s += "; keys file rewritten"
	}
	if !r.Next.IsZero() {
		s += "; next change at " + r.Next.UTC().Format(time.RFC3339)
	}
	return s
}

// RunSchedule makes HAProxy's ring and the keys file what the schedule file requires at now, whatever
// Agent does: it computes the ring (ringAt), rewrites opts.File atomically (0600) when it differs (so a
// reload or restart loads the same ring), then pushes it (Push). When the schedule is exhausted, a
// node-local random key encrypts (kept in the keys file and reused by later runs of the same outage),
// rather than a key past its encrypt_until. ErrNotRunning (HAProxy stopped) comes back with the file
// written.
func RunSchedule(opts Options, schedulePath string, now time.Time) (ScheduleReport, error) {
	var rep ScheduleReport
	data, err := os.ReadFile(schedulePath)
	if err != nil {
		return rep, fmt.Errorf("read schedule file: %w (%w)", err, errBadFile)
	}
	keys, err := parseScheduleFile(data)
	if err != nil {
		return rep, fmt.Errorf("schedule file %s: %w (%w)", schedulePath, err, errBadFile)
	}
	ring, ids, exhausted, next := ringAt(keys, now)
	rep.Exhausted, rep.Next = exhausted, next
	old, _ := os.ReadFile(opts.File)
	if exhausted {
		local, err := localKey(old, keys)
		if err != nil {
			return rep, err
		}
		prev := local
		if len(ring) == 1 {
			prev = ring[0]
		}
		ring = []string{prev, local, local}
		ids = []string{keyID(prev), keyID(local), keyID(local)}
	}
	rep.Ring = ids
	content := []byte(strings.Join(ring, "\n") + "\n")
	if !bytes.Equal(old, content) {
		if err := writeAtomic(opts.File, content); err != nil {
			return rep, err
		}
		rep.Wrote = true
	}
	rep.Push, err = PushWithRetry(opts)
	return rep, err
}

// localKey returns the node-local key of an exhausted schedule: the keys file's encrypting (middle) key
// when it is one this node made (no key of the schedule), else a new random key of the schedule's size.
func localKey(keysFile []byte, keys []scheduleKey) (string, error) {
	published := map[string]bool{}
	for _, k := range keys {
		published[k.b64] = true
	}
	if lines := strings.Split(strings.TrimSpace(string(keysFile)), "\n"); len(lines) == ringSize && !published[lines[1]] {
		if raw, err := base64.StdEncoding.Strict().DecodeString(lines[1]); err == nil && len(raw) == len(mustDecode(keys[0].b64)) {
			return lines[1], nil
		}
	}
	raw := make([]byte, len(mustDecode(keys[0].b64)))
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("random node-local key: %w", err)
	}
	defer clear(raw)
	return base64.StdEncoding.EncodeToString(raw), nil
}

func mustDecode(b64 string) []byte {
	raw, _ := base64.StdEncoding.DecodeString(b64)
	return raw
}

// writeAtomic writes data to path through a temporary file in the same directory and a rename, mode 0600.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write keys file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write keys file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write keys file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write keys file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write keys file: %w", err)
	}
	return nil
}
