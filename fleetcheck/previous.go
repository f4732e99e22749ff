package fleetcheck

import (
	"errors"
	"fmt"
	"time"
)

// DefaultMaxPrevious is Config.MaxPrevious's default.
const DefaultMaxPrevious = 2

// expectedPrevious lists the previous keys (newest first) every node must
// still decrypt at now: keys activated before the current one whose
// not_after is more than Grace + Timeout away (a node whose clock is ahead
// may drop a key that close to its end), at most PreviousKeys of them (if
// zero: all for every format but haproxy, whose ring of three holds one).
func (c *Checker) expectedPrevious(w *Window, now time.Time) []*Key {
	cur := w.KeyAt(now)
	if cur == nil {
		return nil
	}
	limit := c.cfg.PreviousKeys
	if limit == 0 && c.cfg.Format == FormatHAProxy {
		limit = 1
	}
	var out []*Key
	for i := len(w.Keys) - 1; i >= 0; i-- {
		k := w.Keys[i]
		if !k.NotBefore.Before(cur.NotBefore) || k.NotAfter.Sub(now) <= c.cfg.Grace+c.cfg.Timeout {
			continue
		}
		if limit > 0 && len(out) == limit {
			break
		}
		out = append(out, k)
	}
	return out
}

// previousToOffer picks the previous keys a round offers: the newest every
// round (the one most tickets in the field use), and MaxPrevious-1 of the
// older ones rotating with the round, so that each is offered within
// ceil((n-1)/(MaxPrevious-1)) rounds.
func (c *Checker) previousToOffer(w *Window, now time.Time, round int) []*Key {
	all := c.expectedPrevious(w, now)
	n := c.cfg.MaxPrevious
	if len(all) <= n {
		return all
	}
	out := []*Key{all[0]}
	older := all[1:]
	for m := range n - 1 {
		out = append(out, older[((round-1)*(n-1)+m)%len(older)])
	}
	return out
}

// checkPrevious judges one ticket under a previous key offered to a node.
func checkPrevious(k *Key, res offerResult) Check {
	switch {
	case res.resumed:
		return Check{Status: StatusOK}
	case errors.Is(res.err, errNotOffered):
		return Check{Status: StatusNone, Detail: res.err.Error()}
	case res.err != nil:
		return Check{Status: StatusFail, Detail: fmt.Sprintf("could not be offered a ticket under previous key %s: %v", k.ID, res.err)}
	}
	return Check{Status: StatusFail, Detail: fmt.Sprintf("does not resume a ticket under previous key %s, which the window says decrypts until %s (retain): its clients' tickets under it get full handshakes",
		k.ID, k.NotAfter.UTC().Format(time.RFC3339))}
}
