package fleetcheck

import (
	"encoding/binary"
	"net"
	"sync"
)

// helloConn records the first bytes the TLS client writes, so that the
// check can read its ClientHello and tell whether a ticket went out: Go's
// client takes a session from the cache and may still not send it (its
// certificate chain does not verify for this target, or names another
// server), and then a failed resumption says nothing about the node.
type helloConn struct {
	net.Conn
	mu   sync.Mutex
	buf  []byte // what the client wrote
	rbuf []byte // what the server sent (its TLS 1.2 NewSessionTicket is in clear)
}

func (h *helloConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	h.mu.Lock()
	if room := maxHello - len(h.rbuf); room > 0 && n > 0 {
		h.rbuf = append(h.rbuf, p[:min(n, room)]...)
	}
	h.mu.Unlock()
	return n, err
}

// lifetimeHint12 returns the ticket_lifetime_hint of the server's TLS 1.2
// NewSessionTicket (RFC 5077 3.3: sent in clear, before its
// ChangeCipherSpec), or false if none was seen.
func (h *helloConn) lifetimeHint12() (uint32, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	const recordHeader, changeCipherSpec, handshake, newSessionTicket = 5, 20, 22, 4
	stream := h.rbuf
	var hs []byte
	for len(stream) >= recordHeader && stream[0] != changeCipherSpec {
		n := int(binary.BigEndian.Uint16(stream[3:5]))
		if len(stream) < recordHeader+n {
			break
		}
		if stream[0] == handshake {
			hs = append(hs, stream[recordHeader:recordHeader+n]...)
		}
		stream = stream[recordHeader+n:]
	}
	for len(hs) >= 4 {
		n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
		if len(hs) < 4+n {
			break
		}
		if hs[0] == newSessionTicket && n >= 4 {
			return binary.BigEndian.Uint32(hs[4:8]), true
		}
		hs = hs[4+n:]
	}
	return 0, false
}

// maxHello bounds what helloConn keeps: a ClientHello with a ticket fits
// with room to spare (tickets are at most 64 KiB; the check's are < 2 KiB).
const maxHello = 1 << 17

func (h *helloConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	if room := maxHello - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(len(p), room)]...)
	}
	h.mu.Unlock()
	return h.Conn.Write(p)
}

// ticketSent reports whether the recorded ClientHello offers a session: a
// non-empty session_ticket extension (TLS 1.2) or a pre_shared_key
// extension (TLS 1.3). ok is false when no whole ClientHello was recorded.
func (h *helloConn) ticketSent() (sent, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	msg, ok := handshakeMessage(h.buf)
	if !ok {
		return false, false
	}
	return clientHelloOffers(msg)
}

// handshakeMessage joins the handshake records at the front of stream and
// returns the first handshake message (header included) once whole.
func handshakeMessage(stream []byte) ([]byte, bool) {
	const recordHeader, handshakeType = 5, 22
	var hs []byte
	for len(stream) >= recordHeader && stream[0] == handshakeType {
		n := int(binary.BigEndian.Uint16(stream[3:5]))
		if len(stream) < recordHeader+n {
			break
		}
		hs = append(hs, stream[recordHeader:recordHeader+n]...)
		stream = stream[recordHeader+n:]
		if len(hs) >= 4 {
			if whole := 4 + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])); len(hs) >= whole {
				return hs[:whole], true
			}
		}
	}
	return nil, false
}

// clientHelloOffers walks a ClientHello's extensions (RFC 8446 4.1.2).
func clientHelloOffers(msg []byte) (sent, ok bool) {
	const (
		clientHello      = 1
		extSessionTicket = 35
		extPreSharedKey  = 41
	)
	if len(msg) < 4 || msg[0] != clientHello {
		return false, false
	}
	p := msg[4:]
	skip := func(n int) bool {
		if len(p) < n {
			return false
		}
		p = p[n:]
		return true
	}
	vec := func(lenBytes int) bool {
		if len(p) < lenBytes {
			return false
		}
		n := 0
		for _, b := range p[:lenBytes] {
			n = n<<8 | int(b)
		}
		return skip(lenBytes + n)
	}
	if !skip(2+32) || !vec(1) || !vec(2) || !vec(1) { // version, random, session id, cipher suites, compression
		return false, false
	}
	if len(p) < 2 {
		return false, true // no extensions: nothing offered
	}
	exts := p[2:]
	if n := int(binary.BigEndian.Uint16(p)); len(exts) >= n {
		exts = exts[:n]
	} else {
		return false, false
	}
	for len(exts) >= 4 {
		typ, n := binary.BigEndian.Uint16(exts), int(binary.BigEndian.Uint16(exts[2:]))
		if len(exts) < 4+n {
			return false, false
		}
		if (typ == extSessionTicket && n > 0) || typ == extPreSharedKey {
			return true, true
		}
		exts = exts[4+n:]
	}
	return false, true
}
