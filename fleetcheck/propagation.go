package fleetcheck

import (
	"fmt"
	"time"

	sched "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// Emergency propagation: a rotation outside the schedule (rotate mode=now,
// with or without purge_previous) changes the window at an instant no
// reader's ttl foresaw. Every reader following ttl picks the change up at
// its next read, within max_read_ttl and its read delay (docs/api.md,
// emergency propagation; Checker.retiredLag for a removed key). Until then
// the fleet is mixed on purpose: some nodes already encrypt with the new key
// and refuse the purged ones, others still encrypt with a purged key and
// lack the new one. Within that tolerance the check reports pending, not
// failing: a node doing what the engine promises is not red; past it, each
// of these is a failure as before.

// unforeseenSince returns when the window's latest unscheduled key began
// encrypting (a key never published ahead of its activation: rotate
// mode=now, a repair, a keyring's first key; the engine may set its
// not_before one second after its publication), or zero when the window has
// none.
func unforeseenSince(w *Window) time.Time {
	var at time.Time
	if w == nil {
		return at
	}
	for _, k := range w.Keys {
		if unforeseen(k) && k.NotBefore.After(at) {
			at = k.NotBefore
		}
	}
	return at
}

// unforeseen: k was never published ahead of its activation.
func unforeseen(k *Key) bool {
	return !k.PublishAt.IsZero() && !k.PublishAt.Before(k.NotBefore.Add(-time.Second))
}

// propagationLag is how long after an unscheduled change node n may still
// show the window before it: its tolerance for a removed key
// (Checker.retiredLag: max_read_ttl and the read delay), where max_read_ttl
// gives way to the engine's cap on every ttl of the window's settings,
// publish_ahead - reader delay - 1s (the lead cap, docs/api.md: ttl), when
// that is shorter. A keyring's first key, never published ahead either, is
// then tolerated for that long only.
func (c *Checker) propagationLag(n Node, w *Window) time.Duration {
	if w == nil {
		return c.retiredLag(n, &retiredKey{reason: "removed"}, 0, 0)
	}
	lag := c.retiredLag(n, &retiredKey{reason: "removed"}, w.RotationPeriod, w.PublishAhead)
	leadCap := (w.PublishAhead - sched.ReaderDelay(w.RotationPeriod, w.PublishAhead) - sched.ReadAllowance).Truncate(time.Second)
	if w.PublishAhead > 0 && leadCap > 0 && leadCap < c.cfg.MaxReadTTL {
		lag -= c.cfg.MaxReadTTL - leadCap
	}
	return lag
}

// propagatingCurrent: a fresh ticket under keyID, a key removed early,
// issued at at by node n within its propagation tolerance of the removal.
func (c *Checker) propagatingCurrent(w *Window, n Node, keyID string, at time.Time) (Check, bool) {
	rk := c.retiredByID(keyID)
	if rk == nil || rk.reason != "removed" {
		return Check{}, false
	}
	lag := c.propagationLag(n, w)
	if at.Sub(rk.at) >= lag {
		return Check{}, false
	}
	return Check{Status: StatusPending, Detail: fmt.Sprintf("still encrypts with key %s, %s after it was removed (a rotation outside the schedule; readers drop it at their next read, tolerance %s)",
		keyID, at.Sub(rk.at).Round(time.Millisecond), lag)}, true
}

// propagatingNext: the next key was published by an unscheduled rotation
// or after it, before node n's next read could be counted on, so n may lack
// it until since + its propagation tolerance (and never past the key's
// activation, where the current-key check takes over). It returns that
// deadline.
func (c *Checker) propagatingNext(w *Window, n Node, nxt *Key) (time.Time, bool) {
	since := unforeseenSince(w)
	if since.IsZero() {
		return time.Time{}, false
	}
	deadline := since.Add(c.propagationLag(n, w))
	if published := w.publishedAt(nxt); published.Before(since.Add(-time.Second)) || !published.Before(deadline) {
		return time.Time{}, false
	}
	return deadline, true
}

// propagatingMatrix: node i's ticket under keyID, refused by node t, where
// either the issuer still encrypts with a key removed early, or the key is
// an unscheduled one the target has not read yet, within the tolerance of
// the node that lags.
func (c *Checker) propagatingMatrix(w *Window, issuer, target Node, keyID string, now time.Time) bool {
	if rk := c.retiredByID(keyID); rk != nil && rk.reason == "removed" {
		return now.Sub(rk.at) < c.propagationLag(issuer, w)
	}
	if w == nil {
		return false
	}
	k := w.ByID(keyID)
	if k == nil || !unforeseen(k) {
		return false
	}
	return now.Sub(k.NotBefore) < c.propagationLag(target, w)
}
