package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/haproxypush"
)

// scheduleKey is one key of a schedule file (haproxypush.ScheduleKey).
type scheduleKey = haproxypush.ScheduleKey

var (
	parseScheduleFile = haproxypush.ParseScheduleFile
	ringAt            = haproxypush.RingAt
)

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
		published[k.B64] = true
	}
	if lines := strings.Split(strings.TrimSpace(string(keysFile)), "\n"); len(lines) == ringSize && !published[lines[1]] {
		if raw, err := base64.StdEncoding.Strict().DecodeString(lines[1]); err == nil && len(raw) == len(mustDecode(keys[0].B64)) {
			return lines[1], nil
		}
	}
	raw := make([]byte, len(mustDecode(keys[0].B64)))
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
