package schedule

import "time"

// EncryptEnd is when Keys[i] stops encrypting: its encrypt_until as the
// engine stored it when published; otherwise (an engine before v0.2.0) when
// the next key in the schedule activates or, for the last key, one
// rotation_period after its own activation (the current rotation_period,
// which may differ from the one the key was made with). Never after its
// not_after. A key whose end is its not_before never encrypts.
func (w *Window) EncryptEnd(i int) time.Time {
	k := &w.Keys[i]
	var end time.Time
	switch {
	case !k.EncryptUntil.IsZero():
		end = k.EncryptUntil
	case i+1 < len(w.Keys):
		end = w.Keys[i+1].NotBefore
	default:
		end = k.NotBefore.Add(w.RotationPeriod)
	}
	if end.After(k.NotAfter) {
		end = k.NotAfter
	}
	return end
}

// Encrypts reports whether Keys[i] encrypts at t: not_before <= t <
// EncryptEnd(i) (which is never after not_after).
func (w *Window) Encrypts(i int, t time.Time) bool {
	return !w.Keys[i].NotBefore.After(t) && t.Before(w.EncryptEnd(i))
}

// EncryptingAt returns the index of the key that encrypts at t, or -1 when
// none does (the schedule is exhausted at t, or nothing has activated yet).
// Every node holding the same window picks the same key. Should the window
// let two keys encrypt at t (the engine never serves that), the one
// activated last wins.
func (w *Window) EncryptingAt(t time.Time) int {
	for i := len(w.Keys) - 1; i >= 0; i-- {
		if w.Encrypts(i, t) {
			return i
		}
	}
	return -1
}

// Decrypts reports whether Keys[i] decrypts at t: from the read that
// published it until its not_after (a next key decrypts tickets of nodes
// that switched a moment earlier).
func (w *Window) Decrypts(i int, t time.Time) bool { return t.Before(w.Keys[i].NotAfter) }

// DecryptingAt returns the indexes of the keys that decrypt at t, in
// window order.
func (w *Window) DecryptingAt(t time.Time) []int {
	var out []int
	for i := range w.Keys {
		if w.Decrypts(i, t) {
			out = append(out, i)
		}
	}
	return out
}

// NextChange returns the first instant after t at which the keys that
// encrypt or decrypt change (a key activates, stops encrypting or passes
// not_after), and false when nothing changes after t.
func (w *Window) NextChange(t time.Time) (time.Time, bool) {
	var next time.Time
	for i := range w.Keys {
		k := &w.Keys[i]
		for _, c := range [...]time.Time{k.NotBefore, w.EncryptEnd(i), k.NotAfter} {
			if c.After(t) && (next.IsZero() || c.Before(next)) {
				next = c
			}
		}
	}
	return next, !next.IsZero()
}
