package fleetcheck

import (
	"cmp"
	"slices"
	"time"
)

// maxHeldRetired bounds how many retired keys the checker holds in memory
// at once, whatever RetiredFor says (a purge at 1 h periods and 12 h retain
// retires 14 keys at one instant; this is many purges' worth).
const maxHeldRetired = 256

// retiredKey is a key gone from the window, still offered to the nodes for
// RetiredFor. A round offers at most MaxRetired of them (retiredToOffer);
// the others wait for later rounds.
type retiredKey struct {
	key    *Key
	reason string
	at     time.Time
	// lastOffered is the round that last offered it (0: never).
	lastOffered int
	// refusedAt holds, per node and TLS version (checkPoint), the round
	// start at which it first refused the key since it last resumed it.
	// The key is refused everywhere once every point of the fleet is in it.
	refusedAt        map[string]time.Time
	lastAcceptedAt   time.Time
	lastAcceptedBy   []string
	acceptedThisTime []string
}

// checkPoint names one node in one TLS version.
func checkPoint(addr, version string) string { return addr + " " + version }

// retiredPriority orders retired keys newest first: the latest retirement
// first and, among keys retired at one instant (a purge), the latest
// activation first (the former next key, then the former current key, the
// likely compromised one). Ties break on the id so the order is stable.
func retiredPriority(a, b *retiredKey) int {
	if c := b.at.Compare(a.at); c != 0 {
		return c
	}
	if c := b.key.NotBefore.Compare(a.key.NotBefore); c != 0 {
		return c
	}
	return cmp.Compare(a.key.ID, b.key.ID)
}

// absorb takes a new window: keys of the last window that are gone from it
// become retired keys; retired keys older than RetiredFor are wiped, and so
// are the lowest in priority beyond maxHeldRetired.
func (c *Checker) absorb(w *Window) {
	for id, k := range c.known {
		if nk := w.ByID(id); nk != nil {
			if nk != k {
				k.wipe() // the new window holds its own copy
			}
			continue
		}
		r := &retiredKey{key: k, reason: "expired", at: k.NotAfter, refusedAt: map[string]time.Time{}}
		if w.ReadAt.Before(k.NotAfter) {
			r.reason, r.at = "removed", w.ReadAt
		}
		c.retired = append(c.retired, r)
	}
	c.known = make(map[string]*Key, len(w.Keys))
	for _, k := range w.Keys {
		c.known[k.ID] = k
	}
	c.lastWindow = w
	slices.SortFunc(c.retired, retiredPriority)
	keep := c.retired[:0]
	for i, r := range c.retired {
		if i >= maxHeldRetired || w.ReadAt.Sub(r.at) > c.retiredFor(w) {
			r.key.wipe()
			continue
		}
		keep = append(keep, r)
	}
	clear(c.retired[len(keep):])
	c.retired = keep
}

func (c *Checker) retiredByID(id string) *retiredKey {
	for _, r := range c.retired {
		if r.key.ID == id {
			return r
		}
	}
	return nil
}

// retiredToOffer picks the retired keys a round offers: all of them when
// they are at most MaxRetired; else the MaxRetired/2 highest in priority
// every round (after a purge: the former next and current keys), and the
// rest of the slots to the others least recently offered first, so every
// held key is offered within ceil(held/(MaxRetired - MaxRetired/2)) rounds.
func (c *Checker) retiredToOffer() []*retiredKey {
	n := c.cfg.MaxRetired
	if len(c.retired) <= n {
		return slices.Clone(c.retired)
	}
	pinned := n / 2
	out := slices.Clone(c.retired[:pinned])
	rest := slices.Clone(c.retired[pinned:])
	slices.SortStableFunc(rest, func(a, b *retiredKey) int { return cmp.Compare(a.lastOffered, b.lastOffered) })
	return append(out, rest[:n-pinned]...)
}

// refusedEverywhereSince is the time the last point of the fleet (node and
// TLS version) refused rk since any point last resumed it, or zero while
// some point has not refused it yet: never offered, unreachable, or it
// still resumes it.
func (rk *retiredKey) refusedEverywhereSince(points []string) time.Time {
	var last time.Time
	for _, p := range points {
		t, ok := rk.refusedAt[p]
		if !ok {
			return time.Time{}
		}
		if t.After(last) {
			last = t
		}
	}
	return last
}

// notYetRefusedBy lists the nodes with a point that has not refused rk.
func (rk *retiredKey) notYetRefusedBy(nodes []Node, versions []string) []string {
	var out []string
	for _, n := range nodes {
		for _, v := range versions {
			if _, ok := rk.refusedAt[checkPoint(n.Addr, v)]; !ok {
				out = append(out, n.Addr)
				break
			}
		}
	}
	return out
}

// purges groups the retired keys removed at one instant (a purge, or a next
// key discarded by rotate mode=now) and says since when every node refuses
// all of them: zero until each key of the group was refused by every node.
func purges(sums []RetiredSummary) []PurgeSummary {
	var out []PurgeSummary
	for _, rs := range sums {
		if rs.Reason != "removed" {
			continue
		}
		i := slices.IndexFunc(out, func(p PurgeSummary) bool { return p.RemovedAt.Equal(rs.RetiredAt) })
		if i < 0 {
			out = append(out, PurgeSummary{RemovedAt: rs.RetiredAt})
			i = len(out) - 1
		}
		p := &out[i]
		p.Keys = append(p.Keys, rs.ID)
		if rs.RefusedEverywhereSince.IsZero() {
			p.NotYetRefusedEverywhere++
		} else if rs.RefusedEverywhereSince.After(p.RefusedEverywhereSince) {
			p.RefusedEverywhereSince = rs.RefusedEverywhereSince
		}
	}
	for i := range out {
		if out[i].NotYetRefusedEverywhere > 0 {
			out[i].RefusedEverywhereSince = time.Time{}
		}
	}
	return out
}
