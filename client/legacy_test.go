package client

import (
	"crypto/rand"
	"crypto/tls"
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
func TestLegacyTicketsNotReopenedByRestart(t *testing.T) {
	start := 10 * time.Second
	first := func() *tls.SessionState {
		_, _, a, _ := newFakeSource(t, start)
		cert := testcert.New(t, testcert.ECDSAP256)
		ss := serverSession(t, cert, hookedServer(t, cert, a), 0)
		_ = a.Close()
		return ss
	}()
	_, fc, b, _ := newFakeSource(t, start+legacyWeek-time.Minute) // the restart
	fc.step(t, 2*time.Minute)                                    // a week and a minute after the upgrade started
	n := keyNumberAt(fc.Now())
	if got, _ := b.unwrapSession(legacyTicket(t, first, n), tls.ConnectionState{}); got != nil {
		t.Fatalf("a ticket without a key name resumed %s after the upgrade started, on a node restarted at %s",
			fc.Now().Sub(t0.Add(start)), legacyWeek-time.Minute)
	}
}

// forgedMaxAttempts is the most decryption attempts a ticket may cost.
const forgedMaxAttempts = 4

// TestForgedTicketCostIsCapped (issue 18 item 6): against a 256-key window,
// a forged ticket naming no key (small, or 13 KB) costs at most a few
// decryption attempts however many keys the window holds, and one naming a
// key costs exactly one. Counted through the Source's attempt counter.
func TestForgedTicketCostIsCapped(t *testing.T) {
	_, _, src, _ := newFakeSourceWith(t, 300*period+10*time.Second, func(fv *fakeVault) { fv.retain = 254 * period })
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
		if got := cost(forged); got > forgedMaxAttempts {
			t.Errorf("a forged %d-byte ticket naming no key cost %d decryption attempts against 256 keys, want at most %d", size, got, forgedMaxAttempts)
		}
		copy(forged, mustName(t, keyID(300-100)))
		if got := cost(forged); got != 1 {
			t.Errorf("a forged %d-byte ticket naming a key cost %d decryption attempts, want 1", size, got)
		}
	}
}
