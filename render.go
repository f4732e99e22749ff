package ticketkeys

import (
	"maps"
	"sync"
	"time"
)

// windowRenders caches the rendered responses of one immutable *keyring, one
// per format. A window only changes at a key's publish, activation, end of
// encryption or retirement, so a rendering made at one instant serves every
// read until the next of those instants: the key material is derived (go
// format: HKDF) and base64-encoded once per window change and format, not
// once per read.
//
// The cache hangs off the *keyring it renders, which is never changed in
// place (writers change a clone, and clone starts an empty cache), so a
// rendering can never outlive the keyring it was made from: a purged,
// retired or deleted key leaves the cache with the keyring object.
type windowRenders struct {
	mu       sync.Mutex
	byFormat map[string]*renderedWindow
}

// renderedWindow is one format's response data for the window that holds
// from `from` up to, not including, `until` (zero: no change ahead).
type renderedWindow struct {
	from, until time.Time
	data        map[string]interface{}
	warnings    []string
}

func (r *renderedWindow) holdsAt(now time.Time) bool {
	return !now.Before(r.from) && (r.until.IsZero() || now.Before(r.until))
}

// renderWindow returns the response data (without ttl) and warnings of kr's
// window at now in format. The returned map is the caller's to add to; the
// values it shares with other reads are never changed.
func (kr *keyring) renderWindow(format string, now time.Time) (map[string]interface{}, []string, error) {
	c := kr.renders
	if c == nil {
		return windowData(kr, format, now)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.byFormat[format]; ok && r.holdsAt(now) {
		return maps.Clone(r.data), r.warnings, nil
	}
	data, warnings, err := windowData(kr, format, now)
	if err != nil {
		return nil, nil, err
	}
	r := &renderedWindow{from: kr.lastChange(now), data: data, warnings: warnings}
	r.until, _ = kr.nextChange(now)
	if c.byFormat == nil {
		c.byFormat = map[string]*renderedWindow{}
	}
	c.byFormat[format] = r
	return maps.Clone(data), warnings, nil
}

// lastChange is the latest instant at or before now at which kr's window
// changed (zero if none): the start of the span a rendering at now holds for.
func (kr *keyring) lastChange(now time.Time) time.Time {
	var t time.Time
	for _, k := range kr.Keys {
		for _, c := range [...]time.Time{k.PublishAt, k.NotBefore, k.EncryptUntil, k.NotAfter} {
			if !c.After(now) && c.After(t) {
				t = c
			}
		}
	}
	return t
}
