package client

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// cachedTicket returns the ticket and client state the cache holds for the
// test server name.
func cachedTicket(t *testing.T, c tls.ClientSessionCache) ([]byte, *tls.SessionState) {
	t.Helper()
	cs, ok := c.Get("localhost")
	if !ok || cs == nil {
		t.Fatal("the client holds no session ticket")
	}
	ticket, state, err := cs.ResumptionState()
	if err != nil || ticket == nil {
		t.Fatalf("resumption state: %v", err)
	}
	return ticket, state
}

// legacyServer serves like a node of the previous release: crypto/tls's own
// tickets under one key of the window, with no key name in front.
func legacyServer(t *testing.T, cert *testcert.Cert, n int64) string {
	t.Helper()
	cfg := cert.ServerConfig()
	var k [32]byte
	copy(k[:], keyMaterial(n))
	cfg.SetSessionTicketKeys([][32]byte{k})
	return serveTLS(t, cfg)
}

// TestTicketNamesItsKey: every ticket starts with the 16-byte name of the
// key that made it, and is decrypted by exactly that key: the same body
// behind another key's name does not resume, and neither does a ticket of
// the previous format when legacy tickets are off. SealTicket/OpenTicket
// move a session to the next key, and the server resumes it there.
func TestTicketNamesItsKey(t *testing.T) {
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			_, _, src, rec := newFakeSource(t, 10*time.Second) // legacy tickets off by default
			cert := testcert.New(t, testcert.ECDSAP256)
			addr := hookedServer(t, cert, src)

			c := newCache()
			get(t, cert, addr, c, v)
			ticket, state := cachedTicket(t, c)
			if id, ok := TicketKeyID(ticket); !ok || id != keyID(0) {
				t.Fatalf("ticket names key %q, want the current key 0", id)
			}
			ss, err := OpenTicket(keyID(0), keyMaterial(0), ticket)
			if err != nil || ss == nil {
				t.Fatalf("OpenTicket with the current key: %v", err)
			}
			if _, err := OpenTicket(keyID(1), keyMaterial(1), ticket); err == nil || !strings.Contains(err.Error(), "names another key") {
				t.Fatalf("OpenTicket with another key: got %v, want an error", err)
			}

			// The body of key 0's ticket behind key 1's name: key 1 alone
			// is tried, so it misses (a trial over the window would hit).
			swapped := append(append([]byte(nil), mustName(t, keyID(1))...), ticket[TicketKeyNameSize:]...)
			if resumeWith(t, cert, addr, v, swapped, state) {
				t.Fatal("a ticket behind another key's name resumed")
			}
			// The previous release's format (no name), legacy off: dropped.
			if resumeWith(t, cert, addr, v, ticket[TicketKeyNameSize:], state) {
				t.Fatal("a ticket without a key name resumed with legacy tickets off")
			}
			// A forged ticket naming the current key: one key tried, a miss.
			forged := bytes.Clone(ticket)
			forged[len(forged)-1] ^= 1
			if resumeWith(t, cert, addr, v, forged, state) {
				t.Fatal("a forged ticket resumed")
			}
			if st := src.Status(); st.Tickets.Miss != 3 || !st.LegacyUntil.IsZero() {
				t.Fatalf("misses %d (want 3), legacy until %v (want zero: off)", st.Tickets.Miss, st.LegacyUntil)
			}

			// A fleet tool re-encrypts the session under the next key.
			moved, err := SealTicket(keyID(1), keyMaterial(1), ss)
			if err != nil {
				t.Fatal(err)
			}
			if !resumeWith(t, cert, addr, v, moved, state) {
				t.Fatal("a ticket sealed under the next key did not resume")
			}
			if st := src.Status(); st.Tickets.Next != 1 {
				t.Fatalf("next-key hits %d, want 1", st.Tickets.Next)
			}
			rec.mu.Lock()
			for _, e := range rec.tickets {
				if e.Legacy {
					t.Error("a ticket was reported as legacy with legacy tickets off")
				}
			}
			rec.mu.Unlock()
		})
	}
}

func mustName(t *testing.T, id string) []byte {
	t.Helper()
	b, err := hex.DecodeString(id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resumeWith connects with a client cache holding ticket (for the client
// state of an earlier connection) and reports whether the server resumed.
func resumeWith(t *testing.T, cert *testcert.Cert, addr string, v uint16, ticket []byte, state *tls.SessionState) bool {
	t.Helper()
	cs, err := tls.NewResumptionState(ticket, state)
	if err != nil {
		t.Fatal(err)
	}
	c := newCache()
	c.Put("localhost", cs)
	return get(t, cert, addr, c, v)
}

// TestLegacyTicketsDuringRollingUpgrade: tickets of the previous release
// (no key name) resume until WithLegacyTicketsUntil's deadline, and not at or
// after it, however many resumed before (the deadline is absolute).
func TestLegacyTicketsDuringRollingUpgrade(t *testing.T) {
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			deadline := t0.Add(40 * time.Second)
			_, fc, src, rec := newFakeSource(t, 10*time.Second, WithLegacyTicketsUntil(deadline))
			cert := testcert.New(t, testcert.ECDSAP256)
			addr := hookedServer(t, cert, src)
			old := legacyServer(t, cert, 0)

			legacyTicket := func() tls.ClientSessionCache {
				c := newCache()
				get(t, cert, old, c, v)
				return c
			}
			if st := src.Status(); !st.LegacyUntil.Equal(deadline) {
				t.Fatalf("legacy until %v, want the deadline", st.LegacyUntil)
			}
			if !get(t, cert, addr, legacyTicket(), v) {
				t.Fatal("+10s: a ticket of the previous release did not resume")
			}
			fc.step(t, 25*time.Second) // +35s
			if !get(t, cert, addr, legacyTicket(), v) {
				t.Fatal("+35s: a ticket of the previous release did not resume")
			}
			st := src.Status()
			if st.Tickets.Legacy != 2 || st.Tickets.Current != 2 || !st.LegacyUntil.Equal(deadline) {
				t.Fatalf("legacy hits %d (want 2), current hits %d (want 2), legacy until %v (want the deadline, not moved by hits)",
					st.Tickets.Legacy, st.Tickets.Current, st.LegacyUntil)
			}
			rec.mu.Lock()
			legacyEvents := 0
			for _, e := range rec.tickets {
				if e.Legacy && e.Hit {
					legacyEvents++
				}
			}
			rec.mu.Unlock()
			if legacyEvents != 2 {
				t.Fatalf("legacy ticket events %d, want 2", legacyEvents)
			}

			fc.step(t, 5*time.Second) // +40s: the deadline
			if get(t, cert, addr, legacyTicket(), v) {
				t.Fatal("+40s: a ticket of the previous release resumed at the deadline")
			}
			if st := src.Status(); !st.LegacyUntil.IsZero() {
				t.Fatalf("legacy until %v after the deadline, want zero", st.LegacyUntil)
			}
		})
	}
}

// TestSealOpenTicketErrors: the helpers name the argument they refuse.
func TestSealOpenTicketErrors(t *testing.T) {
	for _, tc := range []struct {
		id   string
		key  []byte
		want string
	}{
		{"abc", keyMaterial(0), "id: must be 32 hex characters, got 3"},
		{strings.Repeat("z", 32), keyMaterial(0), "non-hex"},
		{keyID(0), make([]byte, 48), "ticketKey: must be 32 bytes"},
	} {
		if _, err := SealTicket(tc.id, tc.key, &tls.SessionState{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SealTicket(%q, %d bytes): got %v, want %q", tc.id, len(tc.key), err, tc.want)
		}
		if _, err := OpenTicket(tc.id, tc.key, make([]byte, 64)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenTicket(%q, %d bytes): got %v, want %q", tc.id, len(tc.key), err, tc.want)
		}
	}
	if _, err := SealTicket(keyID(0), keyMaterial(0), nil); err == nil || !strings.Contains(err.Error(), "ss: required") {
		t.Errorf("SealTicket(nil): got %v", err)
	}
	if _, err := OpenTicket(keyID(0), keyMaterial(0), make([]byte, 16)); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("OpenTicket(16 bytes): got %v", err)
	}
	if _, err := OpenTicket(keyID(0), keyMaterial(0), append(mustName(t, keyID(0)), make([]byte, 64)...)); err == nil || !strings.Contains(err.Error(), "does not decrypt") {
		t.Errorf("OpenTicket(garbage): got %v", err)
	}
}
