package fleetcheck

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// goFleet is a schedule of hourly keys (previous, current, next: the next
// key activates in 30 minutes) and n Go servers holding all three.
func goFleet(t *testing.T, n int) (*schedule, []*goServer, *testcert.Cert) {
	t.Helper()
	cert := testcert.New(t, testcert.ECDSAP256)
	s := newSchedule(t, FormatGo, 80, 3, time.Now().Add(-90*time.Minute), time.Hour, 2*time.Hour)
	prev, cur, next := s.keys[0], s.keys[1], s.keys[2]
	var servers []*goServer
	for i := 0; i < n; i++ {
		servers = append(servers, startGoServer(t, cert, cur, prev, next))
	}
	return s, servers, cert
}

func addrs(servers []*goServer) []string {
	var out []string
	for _, g := range servers {
		out = append(out, g.addr)
	}
	return out
}

func newChecker(t *testing.T, s *schedule, cert *testcert.Cert, addrs []string, tune func(*Config)) *Checker {
	t.Helper()
	cfg := Config{Keyring: "test", Format: s.format, Read: s.reader(), Nodes: nodesOf(cert, addrs...)}
	if tune != nil {
		tune(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func check(t *testing.T, c *Checker) *Report {
	t.Helper()
	r, err := c.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func nodeReport(t *testing.T, r *Report, addr string) NodeReport {
	t.Helper()
	for _, n := range r.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	t.Fatalf("no report for node %s", addr)
	return NodeReport{}
}

func table(t *testing.T, r *Report) string {
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestCheckHealthyFleet: three nodes holding the window pass every check in
// both TLS versions, with the full matrix.
func TestCheckHealthyFleet(t *testing.T) {
	s, servers, cert := goFleet(t, 3)
	r := check(t, newChecker(t, s, cert, addrs(servers), nil))
	if !r.OK || len(r.Failures) > 0 {
		t.Fatalf("healthy fleet not OK:\n%s", table(t, r))
	}
	if st := r.Settings; len(st.Versions) != 2 || st.Grace != 5 || st.NextGrace != 120 || st.MatrixFull != 16 {
		t.Errorf("settings %+v; want both versions, grace 5s, next grace 2m (publish_ahead/4 capped), matrix_full 16", st)
	}
	if r.NodesReadyNext != 3 || r.Matrix.Pairs != 3*3*2 || r.Matrix.Failures != 0 || r.Matrix.Sampled {
		t.Fatalf("ready %d, matrix %+v; want 3 ready and 18 pairs, none failed, not sampled", r.NodesReadyNext, r.Matrix)
	}
	for _, n := range r.Nodes {
		if n.Current != StatusOK || n.Next != StatusOK || !n.Reachable || n.MatrixRowOK != 6 || n.MatrixColOK != 6 {
			t.Errorf("%s: %+v", n.Addr, n)
		}
		for _, v := range n.Versions {
			if v.TicketKeyID != s.keys[1].ID || v.TicketKeyState != "current" || v.NextKeyID != s.keys[2].ID {
				t.Errorf("%s %s: ticket key %s (%s), next %s; want current %s and next %s", n.Addr, v.Version, v.TicketKeyID, v.TicketKeyState, v.NextKeyID, s.keys[1].ID, s.keys[2].ID)
			}
		}
	}
	t.Logf("\n%s", table(t, r))
}

// TestCheckStaleNode: a node without the next key is reported by address as
// not ready for it once the grace after its publication has passed, and as
// pending inside that grace (not a failure).
func TestCheckStaleNode(t *testing.T) {
	s, servers, cert := goFleet(t, 3)
	prev, cur := s.keys[0], s.keys[1]
	stale := servers[2]
	stale.set(cur, prev)

	r := check(t, newChecker(t, s, cert, addrs(servers), nil))
	if r.OK || r.NodesReadyNext != 2 {
		t.Fatalf("OK %v, ready %d; want a failure and 2 ready:\n%s", r.OK, r.NodesReadyNext, table(t, r))
	}
	n := nodeReport(t, r, stale.addr)
	if n.Next != StatusFail || n.Current != StatusOK {
		t.Fatalf("stale node: next %s, current %s; want fail, ok", n.Next, n.Current)
	}
	for _, f := range r.Failures {
		if !strings.HasPrefix(f, stale.addr+" ") || !strings.Contains(f, "next key "+s.keys[2].ID) {
			t.Errorf("failure not about the stale node's next key: %s", f)
		}
	}
	if tab := table(t, r); !strings.Contains(tab, stale.addr) || !strings.Contains(tab, "FAIL "+stale.addr) {
		t.Errorf("table does not name the stale node in a FAIL line:\n%s", tab)
	}

	// Just published: pending, and the round is OK.
	s.publish = time.Until(s.keys[2].NotBefore) + time.Second
	r = check(t, newChecker(t, s, cert, addrs(servers), func(c *Config) { c.NextGrace = time.Minute }))
	if n := nodeReport(t, r, stale.addr); n.Next != StatusPending || !r.OK {
		t.Fatalf("right after publication: stale node next %s, OK %v; want pending, OK:\n%s", n.Next, r.OK, table(t, r))
	}

	// No next key published at all: nothing to check.
	s.keys = s.keys[:2]
	r = check(t, newChecker(t, s, cert, addrs(servers), nil))
	if n := nodeReport(t, r, stale.addr); n.Next != StatusNone || !r.OK || r.Window.Next != "" {
		t.Fatalf("no next key: stale node next %s, OK %v; want none, OK", n.Next, r.OK)
	}
}

// TestCheckCurrentKey compares each node's fresh tickets with the schedule.
func TestCheckCurrentKey(t *testing.T) {
	s, servers, cert := goFleet(t, 3)
	prev, cur, next := s.keys[0], s.keys[1], s.keys[2]
	early, forged := servers[1], servers[2]
	early.set(next, cur, prev)
	fake := newKey(t, 80, cur.NotBefore, cur.NotAfter)
	fake.name, fake.ID = cur.name, cur.ID // the right name with other material
	forged.set(fake, prev, next)

	r := check(t, newChecker(t, s, cert, addrs(servers), nil))
	if n := nodeReport(t, r, servers[0].addr); n.Current != StatusOK {
		t.Errorf("healthy node: current %s", n.Current)
	}
	n := nodeReport(t, r, early.addr)
	if n.Current != StatusFail || !strings.Contains(n.Versions[0].Current.Detail, "encrypts with key "+next.ID+" (next); the schedule says "+cur.ID) {
		t.Errorf("node on the next key 30 minutes early: %s %q", n.Current, n.Versions[0].Current.Detail)
	}
	n = nodeReport(t, r, forged.addr)
	if n.Current != StatusFail || !strings.Contains(n.Versions[0].Current.Detail, "does not decrypt with that key's material") {
		t.Errorf("node with other material under the current name: %s %q", n.Current, n.Versions[0].Current.Detail)
	}
	// The forged node's tickets resume nowhere else (row), and of the others' tickets it resumes only the
	// early node's, under the next key it holds (column).
	if n.MatrixRowOK != 2 || n.MatrixColOK != 4 || r.Matrix.Failures != 6 {
		t.Errorf("forged node matrix row %d/%d column %d/%d, fleet failures %d; want row 2/6, column 4/6, 6 failures", n.MatrixRowOK, n.MatrixRowTotal, n.MatrixColOK, n.MatrixColTotal, r.Matrix.Failures)
	}

	// Two seconds before the next activation, a node already on the next key is within the grace.
	s2 := newSchedule(t, FormatGo, 80, 3, time.Now().Add(-2*time.Hour+2*time.Second).Add(time.Second), time.Hour, 2*time.Hour)
	g := startGoServer(t, cert, s2.keys[2], s2.keys[1])
	r = check(t, newChecker(t, s2, cert, []string{g.addr}, nil))
	if n := r.Nodes[0]; n.Current != StatusOK || !strings.Contains(n.Versions[0].Current.Detail, "already on the next key") {
		t.Errorf("within grace before the activation: %s %q\n%s", n.Current, n.Versions[0].Current.Detail, table(t, r))
	}
}

// TestCheckRetiredKeys: a key removed from the window (purged) is offered to
// every node in later rounds; a node still resuming it fails, and the report
// shows when the last node stopped.
func TestCheckRetiredKeys(t *testing.T) {
	s, servers, cert := goFleet(t, 3)
	prev, cur, next := s.keys[0], s.keys[1], s.keys[2]
	c := newChecker(t, s, cert, addrs(servers), func(c *Config) { c.Grace = time.Millisecond })
	if r := check(t, c); !r.OK || len(r.Retired) != 0 {
		t.Fatalf("round 1: OK %v, retired %v", r.OK, r.Retired)
	}
	s.remove(prev.ID) // purged
	for _, g := range servers[:2] {
		g.set(cur, next)
	}
	time.Sleep(2 * time.Millisecond)
	r := check(t, c)
	// Right after a purge a node may still resume the key until its next read (max_read_ttl + its delay):
	// pending, and named.
	if n := nodeReport(t, r, servers[2].addr); !r.OK || n.Retired != StatusPending || !slices.Equal(r.Retired[0].AcceptedBy, []string{servers[2].addr}) {
		t.Fatalf("round 2, just after the purge: OK %v, stale node retired %s, accepted by %v; want OK, pending, the stale node", r.OK, n.Retired, r.Retired[0].AcceptedBy)
	}
	c.retired[0].at = time.Now().Add(-10 * time.Minute) // past every reader's next read
	r = check(t, c)
	if r.OK || len(r.Retired) != 1 || r.Retired[0].ID != prev.ID || r.Retired[0].Reason != "removed" {
		t.Fatalf("round 2: OK %v, retired %+v; want a failure and the purged key", r.OK, r.Retired)
	}
	if got := r.Retired[0].AcceptedBy; !slices.Equal(got, []string{servers[2].addr}) {
		t.Fatalf("round 2: accepted by %v, want only %s", got, servers[2].addr)
	}
	if n := nodeReport(t, r, servers[2].addr); n.Retired != StatusFail {
		t.Fatalf("round 2: node still holding the purged key: retired %s", n.Retired)
	}
	if n := nodeReport(t, r, servers[0].addr); n.Retired != StatusOK {
		t.Fatalf("round 2: node that dropped it: retired %s", n.Retired)
	}
	round2 := r.Started

	servers[2].set(cur, next)
	r = check(t, c)
	if !r.OK {
		t.Fatalf("round 3: every node refuses the purged key, yet:\n%s", table(t, r))
	}
	rs := r.Retired[0]
	if len(rs.AcceptedBy) != 0 || !rs.LastAcceptedAt.Equal(round2) || !slices.Equal(rs.LastAcceptedBy, []string{servers[2].addr}) || !rs.RefusedEverywhereSince.Equal(r.Started) {
		t.Fatalf("round 3 summary %+v; want last accepted in round 2 by %s, refused everywhere since round 3", rs, servers[2].addr)
	}
	if tab := table(t, r); !strings.Contains(tab, "refused everywhere since") {
		t.Errorf("table does not show when the purged key stopped resuming:\n%s", tab)
	}
}

// TestCheckUnreachableAndVaultDown: a node that refuses connections fails by
// address; a failed window read fails the round but the matrix still runs.
func TestCheckUnreachableAndVaultDown(t *testing.T) {
	s, servers, cert := goFleet(t, 2)
	dead := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	c := newChecker(t, s, cert, append(addrs(servers), dead), nil)
	r := check(t, c)
	n := nodeReport(t, r, dead)
	if r.OK || n.Reachable || n.Current != StatusFail || len(n.Errors) == 0 {
		t.Fatalf("dead node: %+v", n)
	}
	if r.Matrix.Pairs != 2*2*2 || r.Matrix.Failures != 0 {
		t.Fatalf("matrix %+v; want the 8 pairs of the two live nodes, none failed", r.Matrix)
	}

	s.err = errors.New("vault: connection refused")
	r = check(t, newChecker(t, s, cert, addrs(servers), nil))
	if r.OK || r.VaultError == "" || r.Matrix.Pairs != 8 || r.Matrix.Failures != 0 {
		t.Fatalf("vault down: OK %v, error %q, matrix %+v", r.OK, r.VaultError, r.Matrix)
	}
}

// TestMatrixTargets: up to MatrixFull nodes every pair is offered; above,
// each node's ticket goes to itself and MatrixSample others, and the
// rotation covers every pair within ceil((n-1)/MatrixSample) rounds.
func TestMatrixTargets(t *testing.T) {
	c := &Checker{cfg: Config{MatrixFull: 16, MatrixSample: 8}}
	if got := c.targets(3, 16, 1); len(got) != 16 {
		t.Fatalf("16 nodes: %d targets, want all 16", len(got))
	}
	for _, n := range []int{17, 20, 100} {
		c.sampleBase = n / 3 // as drawn by New: the coverage holds from any start
		covered := map[[2]int]bool{}
		rounds := (n - 1 + 7) / 8
		for r := 1; r <= rounds; r++ {
			for i := 0; i < n; i++ {
				tg := c.targets(i, n, r)
				if len(tg) != 9 || tg[0] != i {
					t.Fatalf("n=%d: node %d targets %v; want itself and 8 others", n, i, tg)
				}
				for _, j := range tg {
					covered[[2]int{i, j}] = true
				}
			}
		}
		if len(covered) != n*n {
			t.Errorf("n=%d: %d of %d pairs covered in %d rounds", n, len(covered), n*n, rounds)
		}
	}
}

// TestCheckSampledMatrix runs a sampled matrix against real nodes.
func TestCheckSampledMatrix(t *testing.T) {
	s, servers, cert := goFleet(t, 4)
	r := check(t, newChecker(t, s, cert, addrs(servers), func(c *Config) { c.MatrixFull, c.MatrixSample = 2, 1 }))
	if !r.OK || !r.Matrix.Sampled || r.Matrix.Pairs != 4*2*2 {
		t.Fatalf("sampled matrix: OK %v, %+v; want 16 pairs (4 nodes x (itself + 1) x 2 versions)", r.OK, r.Matrix)
	}
}

// TestCheckHAProxyFleet runs the whole check against real HAProxy nodes
// (OpenSSL tickets, format haproxy): two hold the window, one missed the
// last push and still encrypts with the previous key.
func TestCheckHAProxyFleet(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	s := newSchedule(t, FormatHAProxy, 80, 4, time.Now().Add(-150*time.Minute), time.Hour, 3*time.Hour)
	pprev, prev, cur, next := s.keys[0], s.keys[1], s.keys[2], s.keys[3]
	var nodes []string
	for _, ring := range [][]*Key{{prev, cur, next}, {prev, cur, next}, {pprev, prev, cur}} {
		nodes = append(nodes, startHAProxyRing(t, cert, ring...))
	}
	r := check(t, newChecker(t, s, cert, nodes, nil))
	t.Logf("\n%s", table(t, r))
	for _, a := range nodes[:2] {
		if n := nodeReport(t, r, a); n.Current != StatusOK || n.Next != StatusOK {
			t.Errorf("%s holds the window: current %s, next %s", a, n.Current, n.Next)
		}
	}
	n := nodeReport(t, r, nodes[2])
	if n.Current != StatusFail || n.Next != StatusFail || n.Versions[0].TicketKeyState != "previous" {
		t.Errorf("stale HAProxy: current %s (%s), next %s; want fail (previous), fail", n.Current, n.Versions[0].TicketKeyState, n.Next)
	}
	// Its tickets (previous key) still resume everywhere, and it holds the current key of the others'
	// tickets: the matrix stays green until the next activation.
	if r.Matrix.Failures != 0 || r.NodesReadyNext != 2 || r.OK {
		t.Errorf("matrix failures %d, ready %d, OK %v; want 0, 2, false", r.Matrix.Failures, r.NodesReadyNext, r.OK)
	}
}

// TestReportHoldsNoMaterial: the JSON report and the table carry ids and
// times but no encoding of any key's secret parts.
func TestReportHoldsNoMaterial(t *testing.T) {
	s, servers, cert := goFleet(t, 2)
	servers[1].set(s.keys[1], s.keys[0]) // a failure, so details are rendered
	c := newChecker(t, s, cert, addrs(servers), func(c *Config) { c.Grace = time.Millisecond })
	check(t, c)
	s.remove(s.keys[0].ID)
	r := check(t, c)
	var out bytes.Buffer
	if err := r.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	out.WriteString(table(t, r))
	for _, k := range s.keys {
		for _, secret := range [][]byte{k.aes, k.hmac, k.gok, k.material(FormatNginx), k.material(FormatHAProxy)} {
			for _, enc := range []string{base64.StdEncoding.EncodeToString(secret), hex.EncodeToString(secret), string(secret)} {
				if bytes.Contains(out.Bytes(), []byte(enc)) {
					t.Fatalf("the report contains material of key %s", k.ID)
				}
			}
		}
		if !bytes.Contains(out.Bytes(), []byte(k.ID)) && k != s.keys[0] {
			t.Errorf("the report does not name key %s", k.ID)
		}
	}
	k := s.keys[1]
	printed := fmt.Sprintf("%v %+v %#v %v %+v %#v %s", k, k, k, *k, *k, *k, []*Key{k})
	for _, secret := range [][]byte{k.aes, k.hmac, k.gok} {
		for _, enc := range []string{fmt.Sprint(secret), fmt.Sprintf("%x", secret), fmt.Sprintf("%#v", secret)} {
			if strings.Contains(printed, enc) {
				t.Fatalf("formatting a key prints its material: %s", printed)
			}
		}
	}
}

// TestCheckClientSources checks Go nodes running the real client package
// (client.Source via ConfigureServer), with the window read through
// VaultReader from a server answering as Vault does: a fleet on one window
// is green; a node whose Source read a window without the next key (it lost
// Vault before the key was published) is not ready, by address.
func TestCheckClientSources(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	s := newSchedule(t, FormatGo, 80, 3, time.Now().Add(-90*time.Minute), time.Hour, 2*time.Hour)
	vc := vaultStub(t, s)
	stale := &schedule{format: FormatGo, keySize: 80, period: time.Hour, publish: time.Hour, keys: s.keys[:2]}
	var nodes []string
	for i := 0; i < 2; i++ {
		nodes = append(nodes, startSourceNode(t, cert, vc))
	}
	staleNode := startSourceNode(t, cert, vaultStub(t, stale))
	c, err := New(Config{Keyring: "test", Format: FormatGo, Read: VaultReader(vc, "ticketkeys", "test", FormatGo), Nodes: nodesOf(cert, nodes...)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := check(t, c); !r.OK || r.NodesReadyNext != 2 || r.Nodes[0].Versions[0].TicketKeyID != s.keys[1].ID {
		t.Fatalf("Source fleet not green:\n%s", table(t, r))
	}
	c, err = New(Config{Keyring: "test", Format: FormatGo, Read: VaultReader(vc, "ticketkeys", "test", FormatGo), Nodes: nodesOf(cert, append(nodes, staleNode)...)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := check(t, c)
	if n := nodeReport(t, r, staleNode); r.OK || n.Next != StatusFail || n.Current != StatusOK || r.Matrix.Failures != 0 {
		t.Fatalf("stale Source: OK %v, next %s, current %s, matrix failures %d; want a next-key failure only:\n%s", r.OK, n.Next, n.Current, r.Matrix.Failures, table(t, r))
	}
}

// TestCheckUnnamedTickets: nodes that install the window with tls.Config.SetSessionTicketKeys (Caddy's
// tls.stek.ticketkeys) issue tickets without a key name; with UnnamedTickets the check names each by the
// key that opens it and crafts tickets without the name, so a healthy fleet is green, every ticket under
// the current key and the next key resumed everywhere. Without the option the same fleet fails.
func TestCheckUnnamedTickets(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	s := newSchedule(t, FormatGo, 80, 3, time.Now().Add(-90*time.Minute), time.Hour, 2*time.Hour)
	prev, cur, next := s.keys[0], s.keys[1], s.keys[2]
	var nodes []string
	for range 2 {
		cfg := cert.ServerConfig()
		cfg.SetSessionTicketKeys([][32]byte{[32]byte(cur.gok), [32]byte(next.gok), [32]byte(prev.gok)})
		nodes = append(nodes, serveTLS(t, cfg))
	}

	r := check(t, newChecker(t, s, cert, nodes, func(c *Config) { c.UnnamedTickets = true }))
	if !r.OK || r.NodesReadyNext != 2 || r.Matrix.Pairs != 2*2*2 || r.Matrix.Failures != 0 {
		t.Fatalf("unnamed tickets: OK %v, ready %d, matrix %+v; want OK, 2 ready, 8 pairs resumed:\n%s", r.OK, r.NodesReadyNext, r.Matrix, table(t, r))
	}
	for _, n := range r.Nodes {
		for _, v := range n.Versions {
			if v.TicketKeyID != cur.ID || v.TicketKeyState != "current" {
				t.Errorf("%s %s: ticket key %s (%s); want the current key %s", n.Addr, v.Version, v.TicketKeyID, v.TicketKeyState, cur.ID)
			}
		}
	}

	if r := check(t, newChecker(t, s, cert, nodes, nil)); r.OK {
		t.Errorf("named check of unnamed tickets is OK; want a failure:\n%s", table(t, r))
	}
	if _, err := New(Config{Format: FormatNginx, UnnamedTickets: true, Read: s.reader(), Nodes: nodesOf(cert, nodes...)}); err == nil ||
		!strings.Contains(err.Error(), `unnamed tickets: only crypto/tls's tickets (format go) come without a key name, got format "nginx"`) {
		t.Errorf("UnnamedTickets with format nginx: %v; want an error naming the rule", err)
	}
}
