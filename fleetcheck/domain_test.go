package fleetcheck

import (
	"crypto/tls"
	"slices"
	"testing"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// startContextNode is a Go server holding the window that, like an OpenSSL
// listener with its own session-id context, resumes only sessions it (or a
// node of its context) issued: it tags each session and refuses others.
func startContextNode(t *testing.T, cert *testcert.Cert, context string, enc *Key, dec ...*Key) string {
	t.Helper()
	cfg := cert.ServerConfig()
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = [][]byte{[]byte(context)}
		return sealGo(&session{gos: ss}, enc)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		for _, k := range append([]*Key{enc}, dec...) {
			if s, err := openTicket(FormatGo, identity, k); err == nil {
				if len(s.gos.Extra) == 1 && string(s.gos.Extra[0]) == context {
					return s.gos, nil
				}
				return nil, nil
			}
		}
		return nil, nil
	}
	return serveTLS(t, cfg)
}

// TestResumptionDomains: two listeners of each of two nodes (an nginx
// node's http and stream listeners) share the keyring but never resume each
// other's tickets. Listed in one run without domains the matrix fails 16 of
// 32 offers; with domain= per listener the matrix runs inside each domain and
// is green, and the key checks still run on every listener.
func TestResumptionDomains(t *testing.T) {
	s, _, cert := goFleet(t, 0)
	prev, cur, next := s.keys[0], s.keys[1], s.keys[2]
	var nodes []Node
	for _, ctx := range []string{"http", "http", "stream", "stream"} {
		addr := startContextNode(t, cert, ctx, cur, prev, next)
		nodes = append(nodes, Node{Addr: addr, ServerName: testcert.ServerName, RootCAs: cert.Pool, Domain: ctx})
	}
	plain := slices.Clone(nodes)
	for i := range plain {
		plain[i].Domain = ""
	}
	c, err := New(Config{Keyring: "test", Format: FormatGo, Read: s.reader(), Nodes: plain})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := check(t, c); r.OK || r.Matrix.Failures != 16 || r.Matrix.Pairs != 32 {
		t.Fatalf("one domain: OK %v, matrix %+v; want 16 of 32 offers failed (the reproduction)", r.OK, r.Matrix)
	}

	c, err = New(Config{Keyring: "test", Format: FormatGo, Read: s.reader(), Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := check(t, c)
	if !r.OK || r.Matrix.Pairs != 16 || r.Matrix.Failures != 0 || r.Matrix.Domains != 2 || r.NodesReadyNext != 4 {
		t.Fatalf("two domains: OK %v, matrix %+v, ready %d; want OK, 16 pairs in 2 domains, 4 ready:\n%s", r.OK, r.Matrix, r.NodesReadyNext, table(t, r))
	}
	for _, n := range r.Nodes {
		for _, v := range n.Versions {
			for _, cell := range v.Matrix {
				if i := slices.IndexFunc(nodes, func(x Node) bool { return x.Addr == cell.To }); nodes[i].Domain != n.Domain {
					t.Errorf("%s (%s) offered to %s of domain %s", n.Addr, n.Domain, cell.To, nodes[i].Domain)
				}
			}
		}
	}
}
