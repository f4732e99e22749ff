package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// MaxWindow is the largest window of the decryption benchmark: 14 keys is a
// day-long window of hourly keys with 12 h retain (current, next and 12
// previous), the engine's defaults.
const MaxWindow = 14

// DecryptFixture holds a window of n ticket keys laid out as the client hook
// holds them (one private tls.Config per key, tried newest first) and a
// ticket encrypted with the oldest key, the worst case: every key is tried.
type DecryptFixture struct {
	// Window is the number of keys.
	Window int
	keys   []*tls.Config
	ticket []byte
	cs     tls.ConnectionState
}

// NewDecryptFixture makes a window of n random keys and a real session
// ticket: one TLS 1.3 handshake over loopback captures a genuine
// tls.SessionState, which the oldest key then encrypts.
func NewDecryptFixture(t testing.TB, n int) (*DecryptFixture, error) {
	if n < 1 || n > 1024 {
		return nil, fmt.Errorf("decrypt fixture: window: must be 1..1024, got %d", n)
	}
	ss, cs, err := captureSession(t)
	if err != nil {
		return nil, err
	}
	f := &DecryptFixture{Window: n, cs: cs}
	for i := 0; i < n; i++ {
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			return nil, fmt.Errorf("decrypt fixture: random key: %w", err)
		}
		c := &tls.Config{}
		c.SetSessionTicketKeys([][32]byte{k})
		f.keys = append(f.keys, c)
	}
	f.ticket, err = f.keys[n-1].EncryptTicket(cs, ss)
	if err != nil {
		return nil, fmt.Errorf("decrypt fixture: encrypt ticket: %w", err)
	}
	return f, nil
}

// Decrypt tries the keys in order, as the hook does, and returns the
// session and the number of keys tried.
func (f *DecryptFixture) Decrypt() (*tls.SessionState, int, error) {
	for i, c := range f.keys {
		ss, err := c.DecryptTicket(f.ticket, f.cs)
		if err != nil {
			return nil, i + 1, err
		}
		if ss != nil {
			return ss, i + 1, nil
		}
	}
	return nil, len(f.keys), errors.New("decrypt fixture: no key decrypted the ticket")
}

// BenchmarkDecrypt is the body of BenchmarkDecryptTicket/window=n, shared
// by `go test -bench` and the harness (through testing.Benchmark).
func BenchmarkDecrypt(b *testing.B, f *DecryptFixture) {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ss, _, err := f.Decrypt()
		if err != nil || ss == nil {
			b.Fatalf("decrypt, window=%d: %v", f.Window, err)
		}
	}
}

// captureSession makes one TLS 1.3 handshake on 127.0.0.1 and returns the
// server's session state and connection state as WrapSession saw them.
func captureSession(t testing.TB) (*tls.SessionState, tls.ConnectionState, error) {
	cert := testcert.New(t, testcert.ECDSAP256)
	var (
		gotSS *tls.SessionState
		gotCS tls.ConnectionState
	)
	srvCfg := cert.ServerConfig()
	srvCfg.MinVersion = tls.VersionTLS13
	srvCfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		if gotSS == nil {
			gotSS, gotCS = ss, cs
		}
		return srvCfg.EncryptTicket(cs, ss)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: listen: %w", err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, srvCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			errc <- err
			return
		}
		// Tickets go out right after the handshake; write a byte so the
		// client has something to read after them.
		_, err = tc.Write([]byte{1})
		errc <- err
	}()
	cliCfg := cert.ClientConfig()
	cliCfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: dial: %w", err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	cc := tls.Client(raw, cliCfg)
	if err := cc.HandshakeContext(ctx); err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: client handshake: %w", err)
	}
	if _, err := io.ReadFull(cc, make([]byte, 1)); err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: client read: %w", err)
	}
	if err := <-errc; err != nil {
		return nil, gotCS, fmt.Errorf("decrypt fixture: server: %w", err)
	}
	if gotSS == nil {
		return nil, gotCS, errors.New("decrypt fixture: the server issued no session ticket")
	}
	return gotSS, gotCS, nil
}
