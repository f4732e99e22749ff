package fleetcheck

import (
	"fmt"
	"time"
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
// mode=now), or zero when the window has none.
func unforeseenSince(w *Window) time.Time {
	var at time.Time
	if w == nil {
		return at
	}
	for _, k := range w.Keys {
		if k.PublishAt.IsZero() || k.PublishAt.Before(k.NotBefore) {
			continue
		}
		if k.NotBefore.After(at) {
			at = k.NotBefore
		}
	}
	return at
}

// propagationLag is how long after an unscheduled change node n may still
// show the window before it: its tolerance for a removed key.
func (c *Checker) propagationLag(n Node, w *Window) time.Duration {
	var rp, pa time.Duration
	if w != nil {
		rp, pa = w.RotationPeriod, w.PublishAhead
	}
	return c.retiredLag(n, &retiredKey{reason: "removed"}, rp, pa)
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
// (with or just after its mode=now key), so node n may lack it until its
// next read, within its propagation tolerance (and never past the key's
// activation, where the current-key check takes over).
func (c *Checker) propagatingNext(w *Window, n Node, nxt *Key, now time.Time) (time.Duration, bool) {
	since := unforeseenSince(w)
	if since.IsZero() {
		return 0, false
	}
	published := w.publishedAt(nxt)
	if published.Before(since.Add(-time.Second)) || published.After(since.Add(2*time.Second)) {
		return 0, false
	}
	return c.propagationLag(n, w), true
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
	if k == nil || k.PublishAt.IsZero() || k.PublishAt.Before(k.NotBefore) {
		return false
	}
	return now.Sub(k.NotBefore) < c.propagationLag(target, w)
}
