package fleetcheck

import (
	"encoding/json"
	"fmt"
	"time"
)

// wirePublishAt is the part of a window read that carries each key's
// publication time (the engine's publish_at, since issue 20). It is read
// apart from ParseWindow so that a window without it (an older engine)
// still parses.
type wirePublishAt struct {
	Keys []struct {
		ID        string `json:"id"`
		PublishAt string `json:"publish_at"`
	} `json:"keys"`
}

// applyPublishAt sets each key's PublishAt from the read's publish_at
// fields; keys without one keep the zero time (publishedAt then derives it
// from publish_ahead).
func applyPublishAt(w *Window, data []byte) error {
	var wp wirePublishAt
	if err := json.Unmarshal(data, &wp); err != nil {
		return fmt.Errorf("window: keys: not a JSON array of keys")
	}
	for i, wk := range wp.Keys {
		if wk.PublishAt == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, wk.PublishAt)
		if err != nil {
			return fmt.Errorf("window: keys[%d].publish_at: must be an RFC 3339 time, got %q", i, wk.PublishAt)
		}
		if k := w.ByID(wk.ID); k != nil {
			k.PublishAt = t
		}
	}
	return nil
}

// publishedAt is when k became readable: its publish_at, or (an engine that
// does not send it) not_before - today's publish_ahead, which is wrong for
// keys published before publish_ahead changed.
func (w *Window) publishedAt(k *Key) time.Time {
	if !k.PublishAt.IsZero() {
		return k.PublishAt
	}
	return k.NotBefore.Add(-w.PublishAhead)
}
