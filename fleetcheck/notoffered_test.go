package fleetcheck

import (
	"crypto/tls"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// TestTicketNeverSentIsNotOffered: Go's TLS client declines to send a
// session whose certificate chain does not verify for the target (per-node
// ca= with different CAs). Such an offer says nothing about the node: the
// matrix does not count it as "not resumed", and a retired-key ticket never
// sent does not count as refused (no false "refused everywhere").
func TestTicketNeverSentIsNotOffered(t *testing.T) {
	s := newSchedule(t, FormatGo, 80, 3, time.Now().Add(-90*time.Minute), time.Hour, 2*time.Hour)
	prev, cur, next := s.keys[0], s.keys[1], s.keys[2]
	certA, certB := testcert.New(t, testcert.ECDSAP256), testcert.New(t, testcert.ECDSAP256)
	a := startGoServer(t, certA, cur, prev, next)
	foreign := newKey(t, 80, cur.NotBefore, cur.NotAfter) // B's own tickets open under no key the check holds
	b := startGoServer(t, certB, foreign, prev, cur, next)
	nodes := append(nodesOf(certA, a.addr), nodesOf(certB, b.addr)...)
	c, err := New(Config{Keyring: "test", Format: FormatGo, Read: s.reader(), Nodes: nodes, Grace: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	r := check(t, c)
	if r.Matrix.Failures != 0 {
		t.Errorf("matrix %+v; want no failure: the cross-CA tickets are never sent:\n%s", r.Matrix, table(t, r))
	}
	s.remove(prev.ID) // purged; B still resumes it, but a ticket under it can only be crafted from A's session
	a.set(cur, next)
	time.Sleep(2 * time.Millisecond)
	for round := range 3 {
		r = check(t, c)
		if len(r.Retired) != 1 {
			t.Fatalf("round %d: retired %+v; want the purged key", round, r.Retired)
		}
		if rs := r.Retired[0]; !rs.RefusedEverywhereSince.IsZero() || !slices.Contains(rs.NotYetRefusedBy, b.addr) {
			t.Fatalf("round %d: purged key refused everywhere since %s, not yet refused by %v; but it was never sent to %s, which still resumes it:\n%s",
				round, rs.RefusedEverywhereSince.Format(time.RFC3339Nano), rs.NotYetRefusedBy, b.addr, table(t, r))
		}
	}
	n := nodeReport(t, r, b.addr)
	for _, rc := range n.Versions[0].Retired {
		if rc.Status == StatusOK || rc.Resumed {
			t.Errorf("retired key never sent to %s: %+v; want not offered", b.addr, rc)
		}
	}
}

// TestClientHelloWithoutSession: the ClientHello parser reads Go's
// ClientHello in both versions (a 216-byte TLS 1.2 one caught a length
// bug) and finds no ticket when none is offered; TestCheckHealthyFleet's
// full matrix proves it finds one when one is.
func TestClientHelloWithoutSession(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		client, server := net.Pipe()
		h := &helloConn{Conn: client}
		go func() {
			buf := make([]byte, 1<<16)
			_, _ = server.Read(buf)
			server.Close()
		}()
		c := tls.Client(h, &tls.Config{ServerName: "x", MinVersion: v, MaxVersion: v, ClientSessionCache: tls.NewLRUClientSessionCache(1)})
		_ = c.Handshake()
		if sent, ok := h.ticketSent(); !ok || sent {
			t.Errorf("%s ClientHello of %d bytes without a session: sent %v, parsed %v; want not sent, parsed", versionName(v), len(h.buf), sent, ok)
		}
	}
}
