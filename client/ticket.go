package client

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
)

// TicketKeyNameSize is the length of the key name in front of every session
// ticket the Source issues: the 16 raw bytes whose hex is the key's id in the
// window.
const TicketKeyNameSize = 16

// keyName is the raw form of a key id.
type keyName [TicketKeyNameSize]byte

// SealTicket encrypts a server session state the way a Source does under the
// key with the given id and `go` format ticket_key (32 bytes, as read from
// the window): the ticket is the key's 16-byte name followed by crypto/tls's
// own ticket (tls.Config.EncryptTicket with that key alone):
//
//	ticket = name[16] || EncryptTicket(ss) under ticket_key
//
// It is meant for tools that move a session between keys (for example a
// fleet check that re-encrypts a ticket under the next key); servers use
// ConfigureServer instead.
func SealTicket(id string, ticketKey []byte, ss *tls.SessionState) ([]byte, error) {
	name, cfg, err := ticketConfig(id, ticketKey)
	if err != nil {
		return nil, fmt.Errorf("ticketkeys: SealTicket: %w", err)
	}
	if ss == nil {
		return nil, errors.New("ticketkeys: SealTicket: ss: required, got nil")
	}
	return sealTicket(name, cfg, ss)
}

// OpenTicket decrypts a ticket made by SealTicket or by a Source under the
// key with the given id and `go` format ticket_key. It returns an error when
// the ticket does not name that key or does not decrypt under it.
func OpenTicket(id string, ticketKey []byte, ticket []byte) (*tls.SessionState, error) {
	name, cfg, err := ticketConfig(id, ticketKey)
	if err != nil {
		return nil, fmt.Errorf("ticketkeys: OpenTicket: %w", err)
	}
	got, ok := TicketKeyID(ticket)
	if !ok {
		return nil, fmt.Errorf("ticketkeys: OpenTicket: ticket: must be longer than the %d-byte key name, got %d bytes", TicketKeyNameSize, len(ticket))
	}
	if got != hex.EncodeToString(name[:]) {
		return nil, errors.New("ticketkeys: OpenTicket: ticket: names another key than id")
	}
	ss, err := cfg.DecryptTicket(ticket[TicketKeyNameSize:], tls.ConnectionState{})
	if err != nil || ss == nil {
		return nil, errors.New("ticketkeys: OpenTicket: ticket: does not decrypt under this key (forged, damaged or another key's material)")
	}
	return ss, nil
}

// TicketKeyID returns the id (hex) of the key named in front of a ticket in
// the Source's format, and false when the ticket is too short to carry one.
// A ticket of the previous release's format (no name) yields an id that
// names no key.
func TicketKeyID(ticket []byte) (string, bool) {
	if len(ticket) <= TicketKeyNameSize {
		return "", false
	}
	return hex.EncodeToString(ticket[:TicketKeyNameSize]), true
}

// ticketConfig validates an id and a go-format key and returns the key's
// name and a private tls.Config holding only that key.
func ticketConfig(id string, ticketKey []byte) (keyName, *tls.Config, error) {
	var name keyName
	if len(id) != idHexLen {
		return name, nil, fmt.Errorf("id: must be %d hex characters, got %d characters", idHexLen, len(id))
	}
	if _, err := hex.Decode(name[:], []byte(id)); err != nil {
		return name, nil, fmt.Errorf("id: must be %d hex characters, got a non-hex character", idHexLen)
	}
	if len(ticketKey) != goKeySize {
		return name, nil, fmt.Errorf("ticketKey: must be %d bytes (the go format), got %d bytes", goKeySize, len(ticketKey))
	}
	var m [goKeySize]byte
	copy(m[:], ticketKey)
	defer clear(m[:])
	return name, keyConfig(m), nil
}

// keyConfig returns a private tls.Config whose only ticket key is m; its
// EncryptTicket and DecryptTicket are crypto/tls's own ticket format.
func keyConfig(m [goKeySize]byte) *tls.Config {
	c := &tls.Config{}
	c.SetSessionTicketKeys([][goKeySize]byte{m})
	return c
}

// sealTicket returns name || cfg.EncryptTicket(ss).
func sealTicket(name keyName, cfg *tls.Config, ss *tls.SessionState) ([]byte, error) {
	body, err := cfg.EncryptTicket(tls.ConnectionState{}, ss)
	if err != nil {
		return nil, err
	}
	out := make([]byte, TicketKeyNameSize+len(body))
	copy(out, name[:])
	copy(out[TicketKeyNameSize:], body)
	return out, nil
}

// randomName returns a random key name (for the node-local key and for the
// inert tickets issued while tickets are disabled).
func randomName() keyName {
	var n keyName
	if _, err := rand.Read(n[:]); err != nil {
		panic("ticketkeys: crypto/rand failed: " + err.Error())
	}
	return n
}
