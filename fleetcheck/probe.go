package fleetcheck

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Node is one TLS server the check addresses directly.
type Node struct {
	// Addr is host:port.
	Addr string
	// ServerName is the SNI and the name its certificate must be valid for.
	// If empty, the host part of Addr.
	ServerName string
	// RootCAs verifies the node's certificate. If nil, the system roots.
	RootCAs *x509.CertPool
	// Kind says how the node follows the window: KindLocal (switches at the
	// instant) or KindAgent (after Vault Agent's re-read). If empty,
	// DefaultKind of the format.
	Kind string
	// Domain names the node's resumption domain: nodes that resume each
	// other's tickets (one listener kind: an nginx http listener and its
	// stream listener are two domains, so are Go and OpenSSL nodes). The
	// matrix is checked inside each domain. If empty, the default domain.
	Domain string
}

func (n Node) serverName() string {
	if n.ServerName != "" {
		return n.ServerName
	}
	host, _, err := net.SplitHostPort(n.Addr)
	if err != nil {
		return n.Addr
	}
	return host
}

// versionName is the name reports use for a TLS version.
func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS1.2"
	case tls.VersionTLS13:
		return "TLS1.3"
	}
	return tls.VersionName(v)
}

// checkCurves are the key exchange groups the check offers: the classical
// ones only. What a check proves is about tickets, not key exchange, and
// leaving out the post-quantum hybrid (Go's default first choice) halves the
// checker's cost per handshake. A node that accepts only a hybrid group
// fails the handshake and is reported as unreachable.
var checkCurves = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}

// clientConfig pins one TLS version and the node's name and roots.
func (n Node) clientConfig(version uint16, cache tls.ClientSessionCache) *tls.Config {
	return &tls.Config{
		CurvePreferences:   checkCurves,
		ServerName:         n.serverName(),
		RootCAs:            n.RootCAs,
		MinVersion:         version,
		MaxVersion:         version,
		ClientSessionCache: cache,
	}
}

// captureCache keeps the first session a node issues (Put) and never
// offers one (Get).
type captureCache struct {
	mu      sync.Mutex
	first   *tls.ClientSessionState
	onFirst func()
}

func (c *captureCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }

func (c *captureCache) Put(_ string, cs *tls.ClientSessionState) {
	if cs == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == nil {
		c.first = cs
		if c.onFirst != nil {
			c.onFirst()
		}
	}
}

func (c *captureCache) get() *tls.ClientSessionState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

// offerCache offers one session and keeps nothing.
type offerCache struct {
	mu      sync.Mutex
	cs      *tls.ClientSessionState
	offered bool
}

func (c *offerCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil {
		return nil, false
	}
	c.offered = true
	return c.cs, true
}

func (c *offerCache) Put(string, *tls.ClientSessionState) {}

// freshTicket is the first ticket a node issued on a full handshake, with
// the client's side of its session (secret: it holds the session's
// resumption secret; kept in memory for the round only).
type freshTicket struct {
	version  uint16
	at       time.Time
	ticket   []byte // as the node sent it
	named    []byte // ticket with its key name in front (Config.UnnamedTickets: the name the check found)
	keyID    string
	keyIDErr error
	state    []byte // tls.SessionState.Bytes() of the client's session
	// lifetime is the ticket lifetime the node sent (TLS 1.3
	// NewSessionTicket.ticket_lifetime, TLS 1.2 ticket_lifetime_hint); 0
	// when it sent none (0 in TLS 1.2 means unspecified).
	lifetime time.Duration
}

// forget drops the session. It cannot overwrite it in place: crypto/tls
// caches the certificates it parses from a session (by DER), and those
// alias the bytes they were parsed from.
func (f *freshTicket) forget() {
	if f != nil {
		f.state = nil
	}
}

// resumption returns a new client session state offering ticket with f's
// session, for one handshake.
func (f *freshTicket) resumption(ticket []byte) (*tls.ClientSessionState, error) {
	st, err := tls.ParseSessionState(bytes.Clone(f.state))
	if err != nil {
		return nil, fmt.Errorf("client session: %w", err)
	}
	return tls.NewResumptionState(ticket, st)
}

// dial connects and completes a TLS handshake within timeout. If hello is
// not nil, it receives the connection wrapped to record the ClientHello.
func dial(ctx context.Context, n Node, cfg *tls.Config, timeout time.Duration, hello **helloConn) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", n.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if hello != nil {
		*hello = &helloConn{Conn: raw}
		raw = *hello
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("%s handshake: %w", versionName(cfg.MaxVersion), err)
	}
	return conn, nil
}

// fresh makes a full handshake offering no ticket and returns the first
// ticket the node issues. In TLS 1.3 tickets come after the handshake, so
// it reads (nothing is sent) until the first one arrives or timeout passes.
func fresh(ctx context.Context, n Node, version uint16, timeout time.Duration) (*freshTicket, error) {
	cache := &captureCache{}
	at := time.Now()
	cfg := n.clientConfig(version, cache)
	// A whole-second clock for this handshake makes the TLS 1.3 session's
	// use_by exactly that second + the ticket's lifetime (ticketLifetime13).
	clock := at.Truncate(time.Second)
	cfg.Time = func() time.Time { return clock }
	var hello *helloConn
	conn, err := dial(ctx, n, cfg, timeout, &hello)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if cache.get() == nil {
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		cache.mu.Lock()
		cache.onFirst = func() { _ = conn.SetReadDeadline(time.Now()) }
		cache.mu.Unlock()
		if cache.get() == nil {
			var buf [1]byte
			_, _ = conn.Read(buf[:])
		}
	}
	cs := cache.get()
	if cs == nil {
		return nil, fmt.Errorf("%s: the node issued no session ticket within %s (session tickets disabled?)", versionName(version), timeout)
	}
	ticket, state, err := cs.ResumptionState()
	if err != nil || state == nil {
		return nil, fmt.Errorf("%s: read the issued ticket: %v", versionName(version), err)
	}
	raw, err := state.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%s: encode the client session: %w", versionName(version), err)
	}
	f := &freshTicket{version: version, at: at, ticket: append([]byte(nil), ticket...), state: raw}
	if version == tls.VersionTLS13 {
		f.lifetime = ticketLifetime13(raw, clock)
	} else if hint, ok := hello.lifetimeHint12(); ok {
		f.lifetime = time.Duration(hint) * time.Second
	}
	f.named = f.ticket
	f.keyID, f.keyIDErr = TicketKeyID(f.ticket)
	return f, nil
}

// errNotOffered means the TLS client did not send the ticket (its session's
// certificate chain does not verify for this node, or names another
// server); the result says nothing about the node.
var errNotOffered = errors.New("not offered: the TLS client did not send the ticket (the session's certificate chain does not verify for this node: per-node ca= or sni= with other certificates)")

// offer offers cs to the node and reports whether the node resumed it. It
// returns errNotOffered when the ticket did not go out in the ClientHello.
func offer(ctx context.Context, n Node, version uint16, cs *tls.ClientSessionState, timeout time.Duration) (bool, error) {
	cache := &offerCache{cs: cs}
	var hello *helloConn
	conn, err := dial(ctx, n, n.clientConfig(version, cache), timeout, &hello)
	if err != nil {
		return false, err
	}
	resumed := conn.ConnectionState().DidResume
	conn.Close()
	if sent, ok := hello.ticketSent(); !cache.offered || (ok && !sent) {
		return false, errNotOffered
	}
	return resumed, nil
}

// ticketLifetime13 reads the lifetime of a TLS 1.3 ticket from the client's
// session (crypto/tls SessionState.Bytes of a client session ends with
// use_by uint64 and age_add uint32; use_by is the handshake's clock +
// ticket_lifetime, in Unix seconds). 0 if it cannot.
func ticketLifetime13(state []byte, clock time.Time) time.Duration {
	if len(state) < 12 {
		return 0
	}
	useBy := int64(binary.BigEndian.Uint64(state[len(state)-12:]))
	if d := useBy - clock.Unix(); d > 0 && d <= 7*24*3600 {
		return time.Duration(d) * time.Second
	}
	return 0
}
