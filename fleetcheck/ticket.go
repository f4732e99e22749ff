package fleetcheck

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

// Ticket layouts.
//
// OpenSSL (nginx, HAProxy; BoringSSL in Envoy builds the same), checked
// against OpenSSL 3 ssl/t1_lib.c tls_decrypt_ticket and
// ssl/statem/statem_srvr.c construct_stateless_ticket:
//
//	key_name[16] || iv[16] || AES-CBC(PKCS#7-padded session DER) || HMAC-SHA256[32]
//
// with the HMAC over key_name||iv||ciphertext; an 80-byte key gives AES-256
// and a 32-byte HMAC key, a 48-byte key AES-128 and a 16-byte HMAC key. The
// same bytes are the ticket of a TLS 1.2 NewSessionTicket and the identity of
// a TLS 1.3 PSK.
//
// Go (format go, nodes using package client): the key name in front of what
// crypto/tls's Config.EncryptTicket makes under the key's 32-byte go-format
// key (client.SealTicket and client.OpenTicket, reused here):
//
//	key_name[16] || iv[16] || AES-CTR(session) || HMAC-SHA256[32]
const (
	ivLen  = aes.BlockSize
	macLen = sha256.Size
)

// Errors of ticket parsing; match them with errors.Is.
var (
	// ErrTicketTruncated: the ticket is shorter than its fixed parts.
	ErrTicketTruncated = errors.New("ticket truncated")
	// ErrTicketMalformed: lengths or padding do not fit the layout.
	ErrTicketMalformed = errors.New("ticket malformed")
	// ErrTicketUnknownKey: the ticket's key name is not a key the check knows.
	ErrTicketUnknownKey = errors.New("ticket made with a key the check does not know")
	// ErrTicketAuth: the ticket does not authenticate under the key its name
	// points at (corrupted, or made with other material under that name).
	ErrTicketAuth = errors.New("ticket does not authenticate under its key")
)

// minTicketLen is the shortest ticket the layouts allow: name, iv, one
// block (OpenSSL; Go's CTR needs at least a few bytes too) and the MAC.
const minTicketLen = keyNameLen + ivLen + aes.BlockSize + macLen

// TicketKeyID returns the id (hex of the key name) at the front of a ticket.
func TicketKeyID(ticket []byte) (string, error) {
	if len(ticket) < minTicketLen {
		return "", fmt.Errorf("%w: %d bytes, the layout needs at least %d", ErrTicketTruncated, len(ticket), minTicketLen)
	}
	return hex.EncodeToString(ticket[:keyNameLen]), nil
}

// session is a decrypted ticket: the server's session, to seal again under
// another key. It holds secrets; wipe it when done.
type session struct {
	der []byte            // OpenSSL formats: the SSL_SESSION DER
	gos *tls.SessionState // go format
}

func (s *session) wipe() {
	if s != nil {
		clear(s.der)
	}
}

// openTicket authenticates and decrypts ticket with k.
func openTicket(format string, ticket []byte, k *Key) (*session, error) {
	if _, err := TicketKeyID(ticket); err != nil {
		return nil, err
	}
	if string(ticket[:keyNameLen]) != string(k.name[:]) {
		return nil, fmt.Errorf("%w: ticket names key %x, not %s", ErrTicketUnknownKey, ticket[:keyNameLen], k.ID)
	}
	if format == FormatGo {
		return openGo(ticket, k)
	}
	return openOpenSSL(ticket, k)
}

// sealTicket makes a ticket for s under k.
func sealTicket(format string, s *session, k *Key) ([]byte, error) {
	if format == FormatGo {
		return sealGo(s, k)
	}
	return sealOpenSSL(s, k)
}

// reencrypt opens ticket with from and seals its session under to.
func reencrypt(format string, ticket []byte, from, to *Key) ([]byte, error) {
	s, err := openTicket(format, ticket, from)
	if err != nil {
		return nil, err
	}
	defer s.wipe()
	return sealTicket(format, s, to)
}

func openOpenSSL(ticket []byte, k *Key) (*session, error) {
	if len(k.aes) == 0 || len(k.hmac) == 0 {
		return nil, fmt.Errorf("key %s has no OpenSSL material (format go?)", k.ID)
	}
	body := ticket[:len(ticket)-macLen]
	mac := hmac.New(sha256.New, k.hmac)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), ticket[len(ticket)-macLen:]) {
		return nil, fmt.Errorf("%w: HMAC-SHA256 of key %s does not match", ErrTicketAuth, k.ID)
	}
	iv, ct := body[keyNameLen:keyNameLen+ivLen], body[keyNameLen+ivLen:]
	if len(ct)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is not a whole number of AES blocks", ErrTicketMalformed, len(ct))
	}
	block, err := aes.NewCipher(k.aes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", k.ID, err)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad < 1 || pad > aes.BlockSize || pad > len(pt) {
		clear(pt)
		return nil, fmt.Errorf("%w: bad PKCS#7 padding", ErrTicketMalformed)
	}
	for _, b := range pt[len(pt)-pad:] {
		if int(b) != pad {
			clear(pt)
			return nil, fmt.Errorf("%w: bad PKCS#7 padding", ErrTicketMalformed)
		}
	}
	return &session{der: pt[:len(pt)-pad]}, nil
}

func sealOpenSSL(s *session, k *Key) ([]byte, error) {
	if s == nil || s.der == nil {
		return nil, errors.New("no OpenSSL session to seal")
	}
	if len(k.aes) == 0 || len(k.hmac) == 0 {
		return nil, fmt.Errorf("key %s has no OpenSSL material (format go?)", k.ID)
	}
	block, err := aes.NewCipher(k.aes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", k.ID, err)
	}
	pad := aes.BlockSize - len(s.der)%aes.BlockSize
	ctLen := len(s.der) + pad
	out := make([]byte, keyNameLen+ivLen+ctLen, keyNameLen+ivLen+ctLen+macLen)
	copy(out, k.name[:])
	iv := out[keyNameLen : keyNameLen+ivLen]
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	ct := out[keyNameLen+ivLen:]
	copy(ct, s.der)
	for i := len(s.der); i < ctLen; i++ {
		ct[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)
	mac := hmac.New(sha256.New, k.hmac)
	mac.Write(out)
	return mac.Sum(out), nil
}

func openGo(ticket []byte, k *Key) (*session, error) {
	if len(k.gok) != goKeyLen {
		return nil, fmt.Errorf("key %s has no go-format material", k.ID)
	}
	ss, err := client.OpenTicket(k.ID, k.gok, ticket)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTicketAuth, err)
	}
	return &session{gos: ss}, nil
}

func sealGo(s *session, k *Key) ([]byte, error) {
	if s == nil || s.gos == nil {
		return nil, errors.New("no Go session to seal")
	}
	if len(k.gok) != goKeyLen {
		return nil, fmt.Errorf("key %s has no go-format material", k.ID)
	}
	return client.SealTicket(k.ID, k.gok, s.gos)
}
