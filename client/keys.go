package client

// TicketKeys hands the keys in use to servers that install session-ticket
// keys themselves with tls.Config.SetSessionTicketKeys (Caddy's tls.stek key
// sources, for example) instead of letting ConfigureServer hook WrapSession
// and UnwrapSession.

// TicketKeys returns the keys in use now, in the order
// tls.Config.SetSessionTicketKeys wants them: the key that encrypts new
// tickets first, then the keys that only decrypt (next keys by activation,
// then previous keys newest first, then the node-local key of an exhaustion
// episode while it still decrypts). It never returns a key at or past its
// not_after. While the schedule is exhausted the node-local random key of
// the outage comes first (local keys of earlier outages follow the
// published keys until their not_after), so the list is never empty, except
// as said below.
//
// The list is computed from the window and the clock at the call, so it is
// only right until the keys next change: call it again whenever Updated
// signals (one consumer only) or an Observer's Advance hook fires (signal a
// goroutine from the hook); both fire at every local activation and
// retirement and whenever a read changes the window.
//
// Tickets made this way use crypto/tls's own format, without the key name
// that a Source's own tickets start with (see "Ticket format" in the
// package documentation). Servers fed by TicketKeys resume each other's
// tickets; a ticket of a server wired with ConfigureServer never resumes on
// them, and theirs resume on it only through its legacy path for unnamed
// tickets, while WithLegacyTicketsUntil accepts them.
//
// SetSessionTicketKeys cannot turn tickets off: do not combine TicketKeys
// with WithDisableTicketsOnExhaustion, under which it returns nil while
// tickets are disabled. The returned slice is the caller's; it holds secret
// key material: never log it, and clear it when done if it is kept.
func (s *Source) TicketKeys() [][32]byte {
	for {
		ks := s.keysetAt(s.o.clock.Now())
		s.mu.Lock()
		if s.ks.Load() != ks {
			// A refresh or a timer replaced the keys between the two
			// steps: take the newer set.
			s.mu.Unlock()
			continue
		}
		keys := s.ticketKeysLocked(ks)
		s.mu.Unlock()
		return keys
	}
}

// ticketKeysLocked returns the material of ks's keys, current first. ks must
// be the keyset in s.ks, so that s.window and s.local are the ones ks was
// computed from.
func (s *Source) ticketKeysLocked(ks *keyset) [][32]byte {
	material := func(k *activeKey) ([32]byte, bool) {
		if k.state == StateLocal {
			for _, lk := range s.locals {
				if lk.cfg == k.cfg {
					return lk.seed, true
				}
			}
			return [32]byte{}, false
		}
		for i := range s.window.Keys {
			if s.window.Keys[i].ID == k.id {
				return s.window.Keys[i].material, true
			}
		}
		return [32]byte{}, false
	}
	if ks.current == nil {
		return nil // tickets are disabled (WithDisableTicketsOnExhaustion)
	}
	out := make([][32]byte, 0, len(ks.decrypt)+1)
	if m, ok := material(ks.current); ok {
		out = append(out, m)
	}
	for _, k := range ks.decrypt {
		if k == ks.current {
			continue
		}
		if m, ok := material(k); ok {
			out = append(out, m)
		}
	}
	return out
}
