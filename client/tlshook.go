package client

import (
	"crypto/tls"
	"errors"
)

// ConfigureServer wires the Source into a server tls.Config by setting its
// WrapSession and UnwrapSession (and wrapping its GetConfigForClient). The
// caller keeps every other setting.
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
// so tickets stay on the shared keys. While tickets are disabled (exhausted
// with WithDisableTicketsOnExhaustion), the handshake's config is a clone
// with SessionTicketsDisabled; when cfg has no GetConfigForClient that clone
// is taken from cfg itself, so settings a server adds only to its own clone
// (http.Server adds "h2" to NextProtos) are missing from those handshakes:
// set NextProtos on cfg to keep HTTP/2 then.
//
// It returns an error, and changes nothing, when cfg is nil, already has
// WrapSession or UnwrapSession, or has SessionTicketsDisabled set.
func (s *Source) ConfigureServer(cfg *tls.Config) error {
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
	inner := cfg.GetConfigForClient
	cfg.WrapSession = s.wrapSession
	cfg.UnwrapSession = s.unwrapSession
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		var c *tls.Config
		if inner != nil {
			var err error
			if c, err = inner(hello); err != nil {
				return nil, err
			}
		}
		disabled := s.keysetAt(s.o.clock.Now()).ticketsDisabled
		if c == nil {
			if !disabled {
				return nil, nil
			}
			c = cfg.Clone()
			c.GetConfigForClient = nil
			c.SessionTicketsDisabled = true
			return c, nil
		}
		cloned := false
		if c.WrapSession == nil && c.UnwrapSession == nil && !c.SessionTicketsDisabled {
			c = c.Clone()
			cloned = true
			c.WrapSession = s.wrapSession
			c.UnwrapSession = s.unwrapSession
		}
		if disabled && !c.SessionTicketsDisabled {
			if !cloned {
				c = c.Clone()
			}
			c.SessionTicketsDisabled = true
		}
		return c, nil
	}
	return nil
}

// wrapSession encrypts a session with the current key (crypto/tls's own
// ticket format, via the key's private Config.EncryptTicket).
func (s *Source) wrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	ks := s.keysetAt(s.o.clock.Now())
	s.issued.Add(1)
	return ks.current.cfg.EncryptTicket(cs, ss)
}

// unwrapSession tries the keys in use (current, next, previous, local) and
// reports which state decrypted the ticket, or a miss. A ticket no key
// decrypts is ignored (full handshake), never an error.
func (s *Source) unwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	if len(identity) == 0 {
		return nil, nil
	}
	ks := s.keysetAt(s.o.clock.Now())
	if !ks.ticketsDisabled {
		for _, k := range ks.decrypt {
			ss, err := k.cfg.DecryptTicket(identity, cs)
			if err != nil || ss == nil {
				continue
			}
			s.hits[stateIndex(k.state)].Add(1)
			if s.o.observer.Ticket != nil {
				s.o.observer.Ticket(TicketEvent{Hit: true, State: k.state})
			}
			return ss, nil
		}
	}
	s.misses.Add(1)
	if s.o.observer.Ticket != nil {
		s.o.observer.Ticket(TicketEvent{})
	}
	return nil, nil
}
