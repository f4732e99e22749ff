package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// ConfigureServer wires the Source into a server tls.Config by setting its
// WrapSession and UnwrapSession (and wrapping its GetConfigForClient, if
// any). The caller keeps every other setting.
//
// Function fields survive tls.Config.Clone, so this keeps working when
// http.Server.ServeTLS, ListenAndServeTLS or tls.Listen clone cfg before
// serving (tls.Config.SetSessionTicketKeys on the original would not reach
// the clone). The current key encrypts every new ticket; next and previous
// keys only decrypt. Which key is current is decided at every handshake from
// the window and the clock, so activation and retirement happen at the
// keys' times even if the Source's timer runs late.
//
// If cfg has a GetConfigForClient, it is wrapped: a Config it returns without
// WrapSession and UnwrapSession of its own is cloned and given the Source's,
// so tickets stay on the shared keys.
//
// While tickets are disabled (exhausted with WithDisableTicketsOnExhaustion)
// the Source never replaces the config crypto/tls serves (which may hold a
// certificate or ALPN protocols only ServeTLS's own clone has): WrapSession
// then returns a short ticket that names no key and that UnwrapSession never
// accepts, and UnwrapSession accepts no ticket, so every handshake is a full
// one and none fails.
//
// It returns an error, and changes nothing, when the Source is closed
// (ErrClosed), or cfg is nil, already has WrapSession or UnwrapSession, or has
// SessionTicketsDisabled set.
func (s *Source) ConfigureServer(cfg *tls.Config) error {
	select {
	case <-s.closing:
		return fmt.Errorf("%w: ConfigureServer: create a new Source", ErrClosed)
	default:
	}
	switch {
	case cfg == nil:
		return errors.New("ticketkeys: ConfigureServer: cfg: required, got nil")
	case cfg.WrapSession != nil:
		return errors.New("ticketkeys: ConfigureServer: cfg.WrapSession: must be nil (the Source sets it), got a function")
	case cfg.UnwrapSession != nil:
		return errors.New("ticketkeys: ConfigureServer: cfg.UnwrapSession: must be nil (the Source sets it), got a function")
	case cfg.SessionTicketsDisabled:
		return errors.New("ticketkeys: ConfigureServer: cfg.SessionTicketsDisabled: must be false to use shared ticket keys, got true")
	}
	cfg.WrapSession = s.wrapSession
	cfg.UnwrapSession = s.unwrapSession
	if inner := cfg.GetConfigForClient; inner != nil {
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := inner(hello)
			if err != nil || c == nil {
				return c, err
			}
			if c.WrapSession == nil && c.UnwrapSession == nil && !c.SessionTicketsDisabled {
				c = c.Clone()
				c.WrapSession = s.wrapSession
				c.UnwrapSession = s.unwrapSession
			}
			return c, nil
		}
	}
	return nil
}

// inertTicketSize is the length of the tickets issued while tickets are
// disabled: the Source's inert name and zero bytes, as long as the shortest
// real ticket body, so that clients store it like any other.
const inertTicketSize = TicketKeyNameSize + 16 + 32

// wrapSession encrypts a session with the current key: the key's name, then
// crypto/tls's own ticket under that key (see SealTicket).
func (s *Source) wrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	ks := s.keysetAt(s.o.clock.Now())
	if ks.ticketsDisabled {
		// An error here would fail the handshake; an inert ticket costs the
		// client one full handshake when it offers it.
		t := make([]byte, inertTicketSize)
		copy(t, s.inert[:])
		return t, nil
	}
	s.issued.Add(1)
	return sealTicket(ks.current.name, ks.current.cfg, ss)
}

// unwrapSession decrypts a ticket with exactly the key its name designates
// and reports which state that key is in, or a miss. A ticket that names no
// key in use is tried, in the previous release's format (no name), against
// at most LegacyTicketKeys published keys until WithLegacyTicketsUntil's
// deadline, and otherwise dropped at the cost of a map lookup. A ticket no
// key decrypts is ignored (full handshake), never an error.
func (s *Source) unwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	if len(identity) == 0 {
		return nil, nil
	}
	now := s.o.clock.Now()
	ks := s.keysetAt(now)
	if !ks.ticketsDisabled {
		if len(identity) > TicketKeyNameSize {
			name := keyName(identity[:TicketKeyNameSize])
			if k := ks.byName[name]; k != nil {
				s.decryptAttempts.Add(1)
				if ss, err := k.cfg.DecryptTicket(identity[TicketKeyNameSize:], cs); err == nil && ss != nil {
					return s.hit(k.state, false, ss), nil
				}
				return s.miss(), nil
			}
			if name == s.inert {
				return s.miss(), nil // issued while tickets were disabled
			}
		}
		if s.acceptsLegacy(now) {
			if ss, k := s.unwrapLegacy(ks, identity, cs); ss != nil {
				return s.hit(k.state, true, ss), nil
			}
		}
	}
	return s.miss(), nil
}

// unwrapLegacy tries a ticket without a key name against the keys a node of
// the previous release most likely made it with, in ks's order: the current
// key, the first next key, then previous keys newest first; at most
// LegacyTicketKeys of them, so that a forged ticket costs a bounded number of
// decryptions whatever the window's size.
func (s *Source) unwrapLegacy(ks *keyset, ticket []byte, cs tls.ConnectionState) (*tls.SessionState, *activeKey) {
	tried, next := 0, false
	for _, k := range ks.decrypt {
		if tried == LegacyTicketKeys {
			break
		}
		switch {
		case k.state == StateLocal:
			continue // the local key never made a ticket without a name
		case k.state == StateNext && next:
			continue // later next keys encrypted nowhere yet
		case k.state == StateNext:
			next = true
		}
		tried++
		s.decryptAttempts.Add(1)
		if ss, err := k.cfg.DecryptTicket(ticket, cs); err == nil && ss != nil {
			return ss, k
		}
	}
	return nil, nil
}

// acceptsLegacy reports whether tickets of the previous release's format
// are still tried at now (see WithLegacyTicketsUntil).
func (s *Source) acceptsLegacy(now time.Time) bool {
	return now.Before(s.o.legacyUntil)
}

func (s *Source) hit(state KeyState, legacy bool, ss *tls.SessionState) *tls.SessionState {
	s.hits[stateIndex(state)].Add(1)
	if legacy {
		s.legacyHits.Add(1)
	}
	if s.o.observer.Ticket != nil {
		s.o.observer.Ticket(TicketEvent{Hit: true, State: state, Legacy: legacy})
	}
	return ss
}

func (s *Source) miss() *tls.SessionState {
	s.misses.Add(1)
	if s.o.observer.Ticket != nil {
		s.o.observer.Ticket(TicketEvent{})
	}
	return nil
}
