package fleetcheck

import (
	"fmt"
	"time"
)

// keyringResumption is the longest a ticket can resume as far as the
// keyring goes: a ticket made when its key activated decrypts until the
// key's not_after (rotation_period + retain).
func keyringResumption(w *Window) time.Duration {
	var longest time.Duration
	for _, k := range w.Keys {
		longest = max(longest, k.NotAfter.Sub(k.NotBefore))
	}
	return longest
}

// judgeLifetimes sets each node's ticket lifetime (the shortest its TLS
// versions sent) and effective resumption window (that lifetime, capped by
// the keyring's), and warns of a node whose lifetime is shorter than
// rotation_period: its users lose resumption before any rotation, whatever
// the keyring retains (nginx's default ssl_session_timeout is 5 minutes).
func (r *round) judgeLifetimes() {
	if r.w == nil {
		return
	}
	window := keyringResumption(r.w)
	r.rep.Window.ResumptionWindow = window.Seconds()
	for j := range r.reps {
		nr := &r.reps[j]
		var shortest time.Duration
		for vi := range nr.Versions {
			f := r.fr[j][vi]
			if f == nil || f.lifetime == 0 {
				continue
			}
			nr.Versions[vi].TicketLifetime = f.lifetime.Seconds()
			if shortest == 0 || f.lifetime < shortest {
				shortest = f.lifetime
			}
		}
		if shortest == 0 {
			continue
		}
		effective := min(shortest, window)
		nr.TicketLifetime, nr.EffectiveResumption = shortest.Seconds(), effective.Seconds()
		if shortest < r.w.RotationPeriod {
			r.rep.Warnings = append(r.rep.Warnings, fmt.Sprintf("%s: ticket lifetime %s is shorter than rotation_period %s: effective resumption window %s of the keyring's %s (raise the server's session timeout: nginx ssl_session_timeout, HAProxy tune.ssl.lifetime)",
				nr.Addr, shortest, r.w.RotationPeriod, effective, window))
		}
	}
}
