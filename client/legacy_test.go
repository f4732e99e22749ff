package client

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// legacyTicket encrypts ss the way a node of the previous release did (and
// a server fed by TicketKeys does): crypto/tls's own ticket under key n,
// without a key name in front.
func legacyTicket(t *testing.T, ss *tls.SessionState, n int64) []byte {
	t.Helper()
	var m [goKeySize]byte
	copy(m[:], keyMaterial(n))
	ticket, err := keyConfig(m).EncryptTicket(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatal(err)
	}
	return ticket
}

// keyNumberAt is the number of the fake engine's key that encrypts at now.
func keyNumberAt(now time.Time) int64 { return int64(now.Sub(t0) / period) }

// legacyWeek is the period during which legacy tickets used to be accepted
// after each NewSource.
const legacyWeek = 168 * time.Hour

// TestLegacyTicketsNotReopenedByRestart (issue 18 item 6): a rolling upgrade
// starts at +10s; a node restarted a minute before a week has passed must
// not accept tickets without a key name more than a week after the upgrade
// started: a fleet that deploys weekly must leave legacy mode.
//
// Either the fleet's configuration leaves legacy tickets off (the default),
// or it names one deadline, here a week after the upgrade started: the first
// node accepts them, the restarted one too until the deadline, and neither
// after it.
func TestLegacyTicketsNotReopenedByRestart(t *testing.T) {
	start := 10 * time.Second
	for _, tc := range []struct {
		name   string
		opts   []Option
		before bool // legacy tickets resume before the deadline
	}{
		{"default", nil, false},
		{"deadline", []Option{WithLegacyTicketsUntil(t0.Add(start + legacyWeek))}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := func() *tls.SessionState {
				_, _, a, _ := newFakeSource(t, start, tc.opts...)
				cert := testcert.New(t, testcert.ECDSAP256)
				ss := serverSession(t, cert, hookedServer(t, cert, a), 0)
				if got, _ := a.unwrapSession(legacyTicket(t, ss, 0), tls.ConnectionState{}); (got != nil) != tc.before {
					t.Fatalf("first node: a ticket without a key name resumed=%v, want %v", got != nil, tc.before)
				}
				_ = a.Close()
				return ss
			}()
			_, fc, b, _ := newFakeSource(t, start+legacyWeek-time.Minute, tc.opts...) // the restart
			if got, _ := b.unwrapSession(legacyTicket(t, first, keyNumberAt(fc.Now())), tls.ConnectionState{}); (got != nil) != tc.before {
				t.Fatalf("restarted node before the deadline: a ticket without a key name resumed=%v, want %v", got != nil, tc.before)
			}
			fc.step(t, time.Minute) // a week after the upgrade started
			fc.step(t, time.Minute)
			if got, _ := b.unwrapSession(legacyTicket(t, first, keyNumberAt(fc.Now())), tls.ConnectionState{}); got != nil {
				t.Fatalf("a ticket without a key name resumed %s after the upgrade started, on a node restarted at %s",
					fc.Now().Sub(t0.Add(start)), legacyWeek-time.Minute)
			}
			if st := b.Status(); !st.LegacyUntil.IsZero() {
				t.Fatalf("legacy until %v after the deadline, want zero", st.LegacyUntil)
			}
		})
	}
}

// TestLegacyTicketsUntilRefusesFarDeadlines: a deadline more than a week
// ahead (the longest key lifetime) is refused by NewSource, naming the
// option, the rule and the value, so a forgotten option cannot keep legacy
// tickets open for ever; a deadline in the past just means off.
func TestLegacyTicketsUntilRefusesFarDeadlines(t *testing.T) {
	fc := newFakeClock(t0)
	fv := newFakeVault(t, fc.Now, t0, period, retain)
	far := t0.Add(legacyWeek + time.Second)
	_, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web", withClock(fc), WithLegacyTicketsUntil(far))
	if err == nil || !strings.Contains(err.Error(), "WithLegacyTicketsUntil: must be at most 168h0m0s after now") || !strings.Contains(err.Error(), far.Format(time.RFC3339)) {
		t.Fatalf("a deadline a week and a second ahead: got %v, want an error naming the option, the rule and the value", err)
	}
	src, err := NewSource(context.Background(), fv.client(t, fv.token), "ticketkeys", "web", withClock(fc), WithLegacyTicketsUntil(t0.Add(-time.Hour)))
	if err != nil {
		t.Fatalf("a deadline in the past: %v", err)
	}
	defer src.Close()
	if st := src.Status(); !st.LegacyUntil.IsZero() {
		t.Fatalf("a deadline in the past: legacy until %v, want zero (off)", st.LegacyUntil)
	}
}

// TestForgedTicketCostIsCapped (issue 18 item 6): against a 256-key window,
// a forged ticket naming no key (small, or 13 KB) costs at most a few
// decryption attempts however many keys the window holds, and one naming a
// key costs exactly one. Counted through the Source's attempt counter.
//
// A genuine ticket without a key name made under one of the keys the legacy
// path tries resumes; one made under an older key does not (the cap's price).
func TestForgedTicketCostIsCapped(t *testing.T) {
	now := t0.Add(300*period + 10*time.Second)
	_, _, src, _ := newFakeSourceWith(t, now.Sub(t0), func(fv *fakeVault) { fv.retain = 254 * period },
		WithLegacyTicketsUntil(now.Add(time.Hour)))
	if n := len(src.Window().Keys); n != 256 {
		t.Fatalf("setup: window of %d keys, want 256", n)
	}
	cost := func(ticket []byte) uint64 {
		before := src.decryptAttempts.Load()
		if ss, _ := src.unwrapSession(ticket, tls.ConnectionState{}); ss != nil {
			t.Fatal("a forged ticket resumed")
		}
		return src.decryptAttempts.Load() - before
	}
	for _, size := range []int{200, 13 << 10} {
		forged := make([]byte, size)
		if _, err := rand.Read(forged); err != nil {
			t.Fatal(err)
		}
		if got := cost(forged); got > LegacyTicketKeys {
			t.Errorf("a forged %d-byte ticket naming no key cost %d decryption attempts against 256 keys, want at most %d", size, got, LegacyTicketKeys)
		}
		copy(forged, mustName(t, keyID(300-100)))
		if got := cost(forged); got != 1 {
			t.Errorf("a forged %d-byte ticket naming a key cost %d decryption attempts, want 1", size, got)
		}
	}

	cert := testcert.New(t, testcert.ECDSAP256)
	ss := serverSession(t, cert, hookedServer(t, cert, src), 300)
	// Tried: the current key 300, the next key 301, previous keys 299, 298.
	for n, want := range map[int64]bool{300: true, 301: true, 299: true, 298: true, 297: false, 100: false, 302: false} {
		before := src.decryptAttempts.Load()
		got, _ := src.unwrapSession(legacyTicket(t, ss, n), tls.ConnectionState{})
		if (got != nil) != want {
			t.Errorf("a genuine ticket without a key name under key %d resumed=%v, want %v", n, got != nil, want)
		}
		if cost := src.decryptAttempts.Load() - before; cost > LegacyTicketKeys {
			t.Errorf("a ticket without a key name under key %d cost %d attempts, want at most %d", n, cost, LegacyTicketKeys)
		}
	}
	if st := src.Status(); st.Tickets.Legacy != 4 {
		t.Errorf("legacy hits %d, want 4", st.Tickets.Legacy)
	}
}

// TestForgedIdentitiesPerClientHelloAreCapped (issue 18 item 6): one TLS 1.3
// ClientHello offering eight forged 1 KB identities that name no key, sent
// raw to a ConfigureServer server accepting legacy tickets against a 256-key
// window, costs at most five (crypto/tls's limit of identities tried) times
// LegacyTicketKeys decryption attempts.
func TestForgedIdentitiesPerClientHelloAreCapped(t *testing.T) {
	now := t0.Add(300*period + 10*time.Second)
	_, _, src, _ := newFakeSourceWith(t, now.Sub(t0), func(fv *fakeVault) { fv.retain = 254 * period },
		WithLegacyTicketsUntil(now.Add(time.Hour)))
	cert := testcert.New(t, testcert.ECDSAP256)
	addr := hookedServer(t, cert, src)

	var identities [][]byte
	for range 8 {
		id := make([]byte, 1024)
		if _, err := rand.Read(id); err != nil {
			t.Fatal(err)
		}
		identities = append(identities, id)
	}
	before := src.decryptAttempts.Load()
	sendClientHelloWithPSKs(t, addr, identities)
	const maxPerHello = 5 * LegacyTicketKeys
	got := src.decryptAttempts.Load() - before
	if got > maxPerHello {
		t.Fatalf("one ClientHello with 8 forged identities cost %d decryption attempts against 256 keys, want at most %d", got, maxPerHello)
	}
	if got < LegacyTicketKeys {
		t.Fatalf("one ClientHello with 8 forged identities cost %d decryption attempts: the identities did not reach the legacy path, the test proves nothing", got)
	}
	t.Logf("8 forged identities in one ClientHello: %d decryption attempts", got)
}

// sendClientHelloWithPSKs sends a TLS 1.3 ClientHello offering identities
// as pre-shared keys (with dummy binders) and waits for the server's first
// answer, by which time it has tried them all.
func sendClientHelloWithPSKs(t *testing.T, addr string, identities [][]byte) {
	t.Helper()
	u16 := func(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }
	ext := func(typ uint16, body []byte) []byte { return append([]byte{byte(typ >> 8), byte(typ)}, u16(body)...) }
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var ids, binders []byte
	for _, id := range identities {
		ids = append(ids, u16(id)...)
		ids = append(ids, 0, 0, 0, 0) // obfuscated_ticket_age
		binders = append(binders, append([]byte{32}, make([]byte, 32)...)...)
	}
	var exts []byte
	exts = append(exts, ext(10, u16([]byte{0x00, 0x1d}))...)                                          // supported_groups: x25519
	exts = append(exts, ext(13, u16([]byte{0x04, 0x03, 0x08, 0x04}))...)                              // signature_algorithms
	exts = append(exts, ext(43, []byte{2, 0x03, 0x04})...)                                            // supported_versions: TLS 1.3
	exts = append(exts, ext(51, u16(append([]byte{0x00, 0x1d}, u16(key.PublicKey().Bytes())...)))...) // key_share
	exts = append(exts, ext(45, []byte{1, 1})...)                                                     // psk_key_exchange_modes: psk_dhe_ke
	exts = append(exts, ext(41, append(u16(ids), u16(binders)...))...)                                // pre_shared_key, last
	body := []byte{0x03, 0x03}
	random := make([]byte, 32)
	_, _ = rand.Read(random)
	body = append(body, random...)
	body = append(body, 32)
	body = append(body, random...) // legacy_session_id
	body = append(body, u16([]byte{0x13, 0x01})...)
	body = append(body, 1, 0)
	body = append(body, u16(exts)...)
	hello := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	if len(hello) > 1<<14 {
		t.Fatalf("ClientHello of %d bytes does not fit one record", len(hello))
	}
	record := append([]byte{22, 0x03, 0x01}, u16(hello)...)

	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(record); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 5)
	if _, err := io.ReadFull(conn, head); err != nil {
		t.Fatalf("no answer to the ClientHello: %v", err)
	}
	if head[0] != 22 {
		t.Fatalf("the server answered the ClientHello with record type %d, want a handshake (22): the hello is malformed", head[0])
	}
}
