package ticketkeys

import (
	"fmt"
	"io"
	"time"
)

// generateAheadMargin is how far beyond publish_ahead keys are generated (but
// not yet readable). Vault runs PeriodicFunc about once a minute and skips it
// while sealed or on standbys, so with this margin a missed tick or two never
// leaves a read without its next key, and reads never have to write.
const generateAheadMargin = 3 * time.Minute

// maxKeysPerMaintain bounds one maintenance pass; a schedule needs at most
// (publish_ahead + margin) / rotation_period + 2 keys, far below this.
const maxKeysPerMaintain = 1000

// maxKeysPerKeyring caps the keys one keyring can hold (published, generated
// ahead and previous), so its storage entry stays far below Consul's 512 KiB
// and Raft's 1 MiB entry limits (about 100 KiB at the cap) and a read stays
// cheap. Settings and rotations that would exceed it are refused.
const maxKeysPerKeyring = 256

// Rotation modes of keys/:name/rotate.
const (
	rotateScheduled = "scheduled"
	rotateNow       = "now"
)

// Key states in a window.
const (
	stateCurrent  = "current"
	stateNext     = "next"
	statePrevious = "previous"
)

// secretLen is the length of each of the AES and HMAC secrets for a key size.
func secretLen(keySize int) int {
	if keySize == 48 {
		return 16
	}
	return 32
}

// newKey draws a fresh key name and secrets and fixes its schedule.
func (kr *keyring) newKey(random io.Reader, publishAt, notBefore, encryptUntil time.Time) (*ticketKey, error) {
	n := secretLen(kr.Settings.KeySize)
	buf := make([]byte, 16+2*n)
	if _, err := io.ReadFull(random, buf); err != nil {
		return nil, fmt.Errorf("generating key material: %w", err)
	}
	return &ticketKey{
		Name:         buf[:16:16],
		AES:          buf[16 : 16+n : 16+n],
		HMAC:         buf[16+n:],
		PublishAt:    publishAt,
		NotBefore:    notBefore,
		EncryptUntil: encryptUntil,
		NotAfter:     encryptUntil.Add(kr.Settings.Retain),
	}, nil
}

// last returns the key that activates last, or nil.
func (kr *keyring) last() *ticketKey {
	if len(kr.Keys) == 0 {
		return nil
	}
	return kr.Keys[len(kr.Keys)-1]
}

// current returns the key that encrypts at now, or nil when the schedule has
// fallen behind (which maintain repairs).
func (kr *keyring) current(now time.Time) *ticketKey {
	for i := len(kr.Keys) - 1; i >= 0; i-- {
		k := kr.Keys[i]
		if !k.NotBefore.After(now) && now.Before(k.EncryptUntil) && now.Before(k.NotAfter) {
			return k
		}
	}
	return nil
}

// stateAt is the state of k at now, and whether k is visible at all (published
// and not past NotAfter).
func stateAt(k *ticketKey, now time.Time) (string, bool) {
	switch {
	case !now.Before(k.NotAfter) || now.Before(k.PublishAt):
		return "", false
	case now.Before(k.NotBefore):
		return stateNext, true
	case now.Before(k.EncryptUntil):
		return stateCurrent, true
	default:
		return statePrevious, true
	}
}

// needsMaintenance reports whether a read at now would see a schedule that has
// fallen behind: no current key, or a key that should already be readable has
// not been generated yet.
func (kr *keyring) needsMaintenance(now time.Time) bool {
	last := kr.last()
	return kr.current(now) == nil || last == nil || last.NotBefore.Before(now.Add(kr.Settings.PublishAhead))
}

// due reports whether maintain would change anything at now: a key to
// destroy, a schedule that fell behind, or keys to generate ahead.
func (kr *keyring) due(now time.Time) bool {
	for _, k := range kr.Keys {
		if !now.Before(k.NotAfter) {
			return true
		}
	}
	last := kr.last()
	return kr.current(now) == nil || last.NotBefore.Before(now.Add(kr.Settings.PublishAhead+generateAheadMargin))
}

// maintain brings the schedule up to date at now: it destroys keys past
// NotAfter (keeping their metadata), repairs a schedule that fell behind with a
// key that encrypts now, and generates keys ahead. It reports whether anything
// changed, so callers only write when needed.
func (kr *keyring) maintain(now time.Time, random io.Reader) (bool, error) {
	now = now.UTC()
	sec := now.Truncate(time.Second)
	var gridEnd time.Time // where the schedule ended, to keep its rotation grid
	if last := kr.last(); last != nil {
		gridEnd = last.EncryptUntil
	}
	changed := kr.destroy(now, func(k *ticketKey) bool { return !now.Before(k.NotAfter) }, reasonExpired)

	if kr.current(now) == nil {
		if err := kr.repair(now, sec, gridEnd, random); err != nil {
			return changed, err
		}
		changed = true
	}

	period, ahead := kr.Settings.RotationPeriod, kr.Settings.PublishAhead
	horizon := now.Add(ahead + generateAheadMargin)
	for i := 0; kr.last().NotBefore.Before(horizon); i++ {
		if i >= maxKeysPerMaintain {
			return changed, fmt.Errorf("keyring %q: schedule generation did not converge", kr.Name)
		}
		nb := kr.last().EncryptUntil
		k, err := kr.newKey(random, nb.Add(-ahead), nb, nb.Add(period))
		if err != nil {
			return changed, err
		}
		if err := kr.insert(k); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}

// repair inserts a key that encrypts from now, used when no key covers now
// (a new keyring, or Vault sealed past the end of the generated schedule). It
// keeps the rotation grid of the schedule that ended at gridEnd, when there
// was one. Such a key could not be published ahead: nodes pick it up at their
// next read.
func (kr *keyring) repair(now, sec, gridEnd time.Time, random io.Reader) error {
	period := kr.Settings.RotationPeriod
	start, end := sec, sec.Add(period)
	if !gridEnd.IsZero() && !gridEnd.After(now) {
		gap := sec.Sub(gridEnd)
		start = gridEnd.Add(gap - gap%period)
		end = start.Add(period)
	} else if len(kr.Keys) > 0 && kr.Keys[0].NotBefore.After(now) && kr.Keys[0].NotBefore.Before(end) {
		end = kr.Keys[0].NotBefore // never longer than rotation_period: within max_key_lifetime
	}
	k, err := kr.newKey(random, start, start, end)
	if err != nil {
		return err
	}
	return kr.insert(k)
}

// insert adds k keeping Keys ordered by NotBefore. It is the one way a key
// enters a schedule, and it refuses a key that shares its not_before with
// another key or never encrypts (encrypt_until at or before not_before):
// readers reject a window holding such keys, so callers pick activation
// times that keep not_before unique (see rotate) and this is the backstop.
func (kr *keyring) insert(k *ticketKey) error {
	if !k.EncryptUntil.After(k.NotBefore) {
		return fmt.Errorf("keyring %q: a new key would never encrypt (not_before %s, encrypt_until %s); nothing was changed",
			kr.Name, k.NotBefore.Format(time.RFC3339), k.EncryptUntil.Format(time.RFC3339))
	}
	i := len(kr.Keys)
	for i > 0 && kr.Keys[i-1].NotBefore.After(k.NotBefore) {
		i--
	}
	if i > 0 && kr.Keys[i-1].NotBefore.Equal(k.NotBefore) {
		return fmt.Errorf("keyring %q: a new key would have the not_before of key %s (%s), and readers refuse two keys activating together; nothing was changed",
			kr.Name, kr.Keys[i-1].ID(), k.NotBefore.Format(time.RFC3339))
	}
	kr.Keys = append(kr.Keys, nil)
	copy(kr.Keys[i+1:], kr.Keys[i:])
	kr.Keys[i] = k
	return nil
}

// destroy removes the keys matching drop, records their metadata with reason,
// and reports whether any was removed.
func (kr *keyring) destroy(now time.Time, drop func(*ticketKey) bool, reason string) bool {
	kept := kr.Keys[:0]
	removed := false
	for _, k := range kr.Keys {
		if !drop(k) {
			kept = append(kept, k)
			continue
		}
		removed = true
		kr.Destroyed = append(kr.Destroyed, destroyedKey{
			ID: k.ID(), NotBefore: k.NotBefore, NotAfter: k.NotAfter, DestroyedAt: now, Reason: reason,
		})
		wipe(k)
	}
	clear(kr.Keys[len(kept):])
	kr.Keys = kept
	if over := len(kr.Destroyed) - destroyedHistoryLimit; over > 0 {
		kr.Destroyed = append([]destroyedKey(nil), kr.Destroyed[over:]...)
	}
	return removed
}

// dropUnpublished removes keys nobody could have read yet. They leave no
// history: to the outside world they never existed.
func (kr *keyring) dropUnpublished(now time.Time) {
	kept := kr.Keys[:0]
	for _, k := range kr.Keys {
		if now.Before(k.PublishAt) {
			wipe(k)
			continue
		}
		kept = append(kept, k)
	}
	clear(kr.Keys[len(kept):])
	kr.Keys = kept
}

// wipe zeroes the key's material in memory once it is no longer needed.
func wipe(k *ticketKey) {
	clear(k.Name)
	clear(k.AES)
	clear(k.HMAC)
}

// overLifetime reports whether a key stays decryptable longer than maxLifetime
// after it activates.
func (kr *keyring) overLifetime(maxLifetime time.Duration) bool {
	for _, k := range kr.Keys {
		if k.NotAfter.Sub(k.NotBefore) > maxLifetime {
			return true
		}
	}
	return false
}

// capLifetime brings every key's not_after to at most maxLifetime after its
// not_before (after max_key_lifetime was lowered), and reports whether any
// moved. It only ever moves not_after, and never before encrypt_until: the
// schedule stays whole (a cut encrypt_until left a gap that a repair key,
// never published ahead, filled). The config write refuses a cap shorter
// than a key's encryption span (see encryptSpanOver); a cap written around
// it leaves such a key until its encrypt_until. maintain then destroys keys
// it expired.
func (kr *keyring) capLifetime(maxLifetime time.Duration) bool {
	changed := false
	for _, k := range kr.Keys {
		limit := k.NotBefore.Add(maxLifetime)
		if limit.Before(k.EncryptUntil) {
			limit = k.EncryptUntil
		}
		if k.NotAfter.After(limit) {
			k.NotAfter = limit
			changed = true
		}
	}
	return changed
}

// encryptSpanOver returns a key that encrypts for longer than maxLifetime (a
// key of an earlier, longer rotation_period), or nil: such a key cannot be
// brought within the cap without cutting the schedule.
func (kr *keyring) encryptSpanOver(maxLifetime time.Duration) *ticketKey {
	for _, k := range kr.Keys {
		if k.EncryptUntil.Sub(k.NotBefore) > maxLifetime {
			return k
		}
	}
	return nil
}

// applySettings changes the settings of a live keyring. Keys that are already
// readable keep every time they were published with; only keys not yet
// readable are regenerated under the new settings.
func (kr *keyring) applySettings(s keyringSettings, now time.Time, random io.Reader) error {
	now = now.UTC()
	// Whole seconds, rounded up: every schedule time is published in RFC 3339 seconds.
	if back := now.Add(kr.Settings.PublishAhead + time.Second - time.Nanosecond).Truncate(time.Second); back.After(kr.ReadersBackBy) {
		kr.ReadersBackBy = back // readers may hold a ttl of the old settings until then
	}
	kr.dropUnpublished(now)
	kr.Settings = s
	_, err := kr.maintain(now, random)
	return err
}

// rotate adds a key now, in one of the rotation modes, and returns it.
//
// scheduled: the key is readable at once and activates publish_ahead later, so
// every node holds it as decrypt-only before any node encrypts with it.
// now: the key encrypts at once; keys published but not yet active are
// discarded and the schedule restarts from the new key.
// purgePrevious destroys every key that no longer encrypts (with mode now,
// including the key that was current until now).
//
// Every key it publishes ahead activates no earlier than publish_ahead after
// now (rounded up to the second) and than ReadersBackBy, so every reader
// following ttl holds it first (see leadTTLCap). With mode now, the new key
// encrypts until ReadersBackBy at least, so that the key after it is held by
// every reader too, and lives no longer than maxLifetime: its retain gives
// way when both cannot hold.
func (kr *keyring) rotate(mode string, purgePrevious bool, now time.Time, random io.Reader, maxLifetime time.Duration) (*ticketKey, error) {
	now = now.UTC()
	sec := now.Truncate(time.Second)
	nextSec := sec
	if nextSec.Before(now) {
		nextSec = sec.Add(time.Second)
	}
	if _, err := kr.maintain(now, random); err != nil {
		return nil, err
	}
	var nk *ticketKey
	var err error
	switch mode {
	case rotateScheduled:
		kr.dropUnpublished(now)
		last := kr.last() // published, so it exists after maintain
		nb := nextSec.Add(kr.Settings.PublishAhead)
		if nb.Before(kr.ReadersBackBy) {
			nb = kr.ReadersBackBy
		}
		if min := last.NotBefore.Add(time.Second); nb.Before(min) {
			nb = min
		}
		if nb.After(last.EncryptUntil) {
			nb = last.EncryptUntil
		}
		last.EncryptUntil = nb
		nk, err = kr.newKey(random, sec, nb, nb.Add(kr.Settings.RotationPeriod))
	case rotateNow:
		kr.dropUnpublished(now)
		kr.destroy(now, func(k *ticketKey) bool { return k.NotBefore.After(now) }, reasonDiscarded)
		if purgePrevious {
			// Every key that encrypted until now goes: the new key is alone.
			kr.destroy(now, func(*ticketKey) bool { return true }, reasonPurged)
		}
		// The new key encrypts from this second, or from the second after
		// the last kept key's activation when that key activated in this
		// very second: not_before stays unique and no key is left that
		// never encrypts.
		nb := sec
		if last := kr.last(); last != nil && !last.NotBefore.Before(nb) {
			nb = last.NotBefore.Add(time.Second)
		}
		if cur := kr.current(now); cur != nil {
			cur.EncryptUntil = nb
		}
		// It encrypts until every reader is back (ReadersBackBy), so that the
		// key after it is held by every reader before it encrypts. When
		// max_key_lifetime does not leave room for that and a full retain,
		// the key's retain is shortened, not the readers' lead: a ticket it
		// issued late decrypts for less than retain (one full handshake),
		// where a successor activating before readers hold it would split
		// the fleet.
		until := nb.Add(kr.Settings.RotationPeriod)
		if until.Before(kr.ReadersBackBy) {
			until = kr.ReadersBackBy
		}
		longest := nb.Add(maxLifetime)
		if until.After(longest) {
			until = longest
		}
		nk, err = kr.newKey(random, sec, nb, until)
		if err == nil && nk.NotAfter.After(longest) {
			nk.NotAfter = longest
		}
	default:
		return nil, fmt.Errorf("unknown rotation mode %q", mode)
	}
	if err != nil {
		return nil, err
	}
	if err := kr.insert(nk); err != nil {
		return nil, err
	}
	if purgePrevious {
		kr.destroy(now, func(k *ticketKey) bool { return k != nk && !k.EncryptUntil.After(now) }, reasonPurged)
	}
	if _, err := kr.maintain(now, random); err != nil {
		return nil, err
	}
	return nk, nil
}

// peakKeys is an upper bound on the number of keys the keyring will hold from
// now on if only its schedule changes it: the stored keys still alive at each
// instant plus the keys its schedule generates by then (each lives from
// publish_ahead + generateAheadMargin before its activation until its
// not_after), never more of those than fit in one key lifetime.
func (kr *keyring) peakKeys(now time.Time) int {
	s := kr.Settings
	horizon := s.PublishAhead + generateAheadMargin
	steady := steadyKeys(s)
	gridStart := now
	if last := kr.last(); last != nil {
		gridStart = last.EncryptUntil
	}
	// generatedBy counts schedule keys j >= 0 (activating at gridStart + j*period)
	// generated by t: those activating before t + horizon.
	generatedBy := func(t time.Time) int {
		d := t.Add(horizon).Sub(gridStart)
		if d <= 0 {
			return 0
		}
		return int((d-1)/s.RotationPeriod) + 1
	}
	aliveAt := func(t time.Time) int {
		n := 0
		for _, k := range kr.Keys {
			if k.NotAfter.After(t) {
				n++
			}
		}
		return n
	}
	// Stored keys only expire, generated keys only accumulate (up to steady):
	// between two expiries the bound is largest just before the later one.
	peak := max(steady, aliveAt(now)+min(generatedBy(now), steady))
	for _, k := range kr.Keys {
		if t := k.NotAfter.Add(-time.Nanosecond); t.After(now) {
			peak = max(peak, aliveAt(t)+min(generatedBy(t), steady))
		}
	}
	return peak
}

// steadyKeys is the most keys a schedule under s holds at once: every key
// generated and not yet past not_after, at most one per rotation_period over
// publish_ahead + margin + rotation_period + retain.
func steadyKeys(s keyringSettings) int {
	span := s.PublishAhead + generateAheadMargin + s.RotationPeriod + s.Retain
	return int((span + s.RotationPeriod - 1) / s.RotationPeriod)
}

// checkKeyCount refuses a change after which the keyring could hold more than
// maxKeysPerKeyring keys.
func (kr *keyring) checkKeyCount(now time.Time) error {
	n := kr.peakKeys(now)
	if n <= maxKeysPerKeyring {
		return nil
	}
	s := kr.Settings
	return fmt.Errorf("keyring %q would hold up to %d keys (rotation_period %s, retain %s, publish_ahead %s, with the keys it holds now); the cap is %d keys: choose a longer rotation_period or a shorter retain",
		kr.Name, n, fmtDuration(s.RotationPeriod), fmtDuration(s.Retain), fmtDuration(s.PublishAhead), maxKeysPerKeyring)
}

// windowKey is a key visible at a given instant, with its state.
type windowKey struct {
	*ticketKey
	State string
}

// window returns the readable keys at now: current first, then next keys by
// activation, then previous keys newest first. It is linear in the number of
// keys: Keys are ordered by activation, so one pass from the newest key sorts
// them.
func (kr *keyring) window(now time.Time) []windowKey {
	out := make([]windowKey, 0, len(kr.Keys))
	current := -1
	// Next keys, oldest first.
	for _, k := range kr.Keys {
		if st, ok := stateAt(k, now); ok && st == stateNext {
			out = append(out, windowKey{k, st})
		}
	}
	// Current and previous keys, newest first. Keys chain, so at most one is
	// current; should two ever overlap, the newest encrypts and the other
	// only decrypts.
	for i := len(kr.Keys) - 1; i >= 0; i-- {
		k := kr.Keys[i]
		st, ok := stateAt(k, now)
		if !ok || st == stateNext {
			continue
		}
		if st == stateCurrent && current >= 0 {
			st = statePrevious
		}
		if st == stateCurrent {
			current = len(out)
		}
		out = append(out, windowKey{k, st})
	}
	if current > 0 { // move the current key to the front, keeping the others' order
		cur := out[current]
		copy(out[1:current+1], out[:current])
		out[0] = cur
	}
	return out
}

// nextChange is the first instant after now at which the window changes (a key
// is published, activates, stops encrypting or expires). ok is false when the
// schedule holds no future event.
func (kr *keyring) nextChange(now time.Time) (t time.Time, ok bool) {
	consider := func(c time.Time) {
		if c.After(now) && (!ok || c.Before(t)) {
			t, ok = c, true
		}
	}
	for _, k := range kr.Keys {
		consider(k.PublishAt)
		consider(k.NotBefore)
		consider(k.EncryptUntil)
		consider(k.NotAfter)
	}
	return t, ok
}
