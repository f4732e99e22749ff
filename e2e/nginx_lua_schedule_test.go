//go:build e2e

package e2e

// End-to-end proof of issue 19 item 1 (the schedule, not the file, decides which key encrypts) on every
// nginx build: a real Vault server with the engine, one real Vault Agent per node rendering the shipped
// window.ctmpl (keys with their times), two nginx nodes with the shipped snippets; then both Agents stop
// and the nodes are watched across two activations and a not_after.

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// The schedule test's keyring: a not_after (retain after the end of encryption) half-way between two
// activations, so the three instants are apart.
const (
	schedPeriod = 10 * time.Second
	schedRetain = 15 * time.Second
)

// timedKey is one key of the engine's window with its times.
type timedKey struct {
	id                                string
	notBefore, encryptUntil, notAfter time.Time
}

// readTimedWindow reads keyring's window (format nginx) with each key's times, in response order.
func readTimedWindow(t *testing.T, s *vaulttest.Server, keyring string) []timedKey {
	t.Helper()
	sec, err := s.Client.Logical().ReadWithData("ticketkeys/keys/"+keyring, map[string][]string{"format": {"nginx"}})
	if err != nil || sec == nil {
		t.Fatalf("read keyring %s: %v", keyring, err)
	}
	keys, _ := sec.Data["keys"].([]any)
	var out []timedKey
	for _, k := range keys {
		m, _ := k.(map[string]any)
		var tk timedKey
		tk.id, _ = m["id"].(string)
		for field, dst := range map[string]*time.Time{"not_before": &tk.notBefore, "encrypt_until": &tk.encryptUntil, "not_after": &tk.notAfter} {
			v, _ := m[field].(string)
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				t.Fatalf("keyring %s key %s: %s %q: %v", keyring, tk.id, field, v, err)
			}
		}
		out = append(out, tk)
	}
	return out
}

// mapCache is a ClientSessionCache that keeps the last session and offers it; clone copies it.
type mapCache struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
}

func (c *mapCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}
func (c *mapCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs != nil {
		c.cs = cs
	}
}

// ticketName returns the key name (hex) at the start of the cached session's ticket.
func (c *mapCache) ticketName(t *testing.T) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil {
		t.Fatal("no ticket cached")
	}
	ticket, _, err := c.cs.ResumptionState()
	if err != nil || len(ticket) < 16 {
		t.Fatalf("ticket of %d bytes: %v", len(ticket), err)
	}
	return fmt.Sprintf("%x", ticket[:16])
}

// heldTicket is a ticket from one TLS version, and copies of it to offer later, one per check.
type heldTicket struct {
	version uint16
	key     string
	copies  []*tls.Config
}

// takeTicket gets a ticket from addr in version and makes n copies of the client config holding it.
func takeTicket(t *testing.T, cert *testcert.Cert, version uint16, addr string, n int) heldTicket {
	t.Helper()
	cache := &mapCache{}
	cfg := cert.ClientConfig()
	cfg.MinVersion, cfg.MaxVersion = version, version
	cfg.ClientSessionCache = cache
	if _, err := luatest.Handshake(cfg, addr, false); err != nil {
		t.Fatal(err)
	}
	h := heldTicket{version: version, key: cache.ticketName(t)}
	for range n {
		c := cfg.Clone()
		c.ClientSessionCache = &mapCache{cs: cache.cs}
		h.copies = append(h.copies, c)
	}
	return h
}

// TestNginxLuaScheduleWithoutAgent proves issue 19 item 1 end to end on every nginx build (Debian's
// 1.22.1 and each OpenResty line, side by side against one Vault): two nodes fed by real Agents with the
// shipped template; both Agents stop right after an activation; then, with no Agent and no file change,
// across the next two activations and the previous key's not_after: every worker of both nodes switches
// within 1 s of each activation (the key names of tickets from fresh handshakes every 40 ms, each
// answered with the worker's PID; none under the new key before its instant): to the successor the file
// holds at the first, and at the second, where the file holds no successor, to a worker-local key rather
// than a key past its encrypt_until; tickets of the next key resume across the nodes; a ticket under the
// previous key resumes before its not_after and on no node after it (TLS 1.2 and 1.3); the window files
// never changed meanwhile.
func TestNginxLuaScheduleWithoutAgent(t *testing.T) {
	s := vaulttest.Start(t)
	if err := s.Client.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("enable approle auth: %v", err)
	}
	cert := testcert.New(t, testcert.ECDSAP256)
	servertest.EachNginx(t, func(t *testing.T, b *servertest.NginxBuild) {
		start := time.Now()
		nginxLuaScheduleWithoutAgent(t, s, cert, b, "sched-"+b.Name)
		t.Logf("%s (nginx %s): %.0f s", b.Name, b.Version, time.Since(start).Seconds())
	})
}

func nginxLuaScheduleWithoutAgent(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, b *servertest.NginxBuild, keyring string) {
	if _, err := s.Client.Logical().Write("ticketkeys/keys/"+keyring, map[string]any{
		"rotation_period": schedPeriod.String(), "publish_ahead": schedPeriod.String(), "retain": schedRetain.String(),
	}); err != nil {
		t.Fatalf("create keyring %s: %v", keyring, err)
	}
	nodes := []*luaNode{startLuaNode(t, s, cert, b, keyring, "a"), startLuaNode(t, s, cert, b, keyring, "b")}
	waitNodesHoldEngine(t, s, keyring, nodes, 30*time.Second)

	// Tickets under the current key K, taken well inside its period; then the next activation, the
	// Agents' render of it, and the Agents stop: K is previous, with its not_after ahead.
	var held []heldTicket
	var win []timedKey
	for attempt := 1; ; attempt++ {
		cur := readTimedWindow(t, s, keyring)[0]
		if wait := time.Until(cur.notBefore.Add(time.Second)); wait > 0 {
			time.Sleep(wait)
		}
		if time.Until(cur.encryptUntil) < 4*time.Second {
			if attempt == 3 {
				t.Fatalf("no key with 4 s of its period left in 3 tries")
			}
			time.Sleep(time.Until(cur.encryptUntil) + time.Second)
			continue
		}
		held = held[:0]
		for _, v := range luaVersions() {
			held = append(held, takeTicket(t, cert, v, nodes[0].inst.HTTPS, 4))
		}
		if held[0].key != cur.id || held[1].key != cur.id {
			t.Fatalf("tickets under %s and %s, want the current key %s", held[0].key, held[1].key, cur.id)
		}
		// The activation that ends K, and both Agents' render of the window after it.
		time.Sleep(time.Until(cur.encryptUntil))
		waitNodesHoldEngine(t, s, keyring, nodes, 8*time.Second)
		deadline := time.Now().Add(8 * time.Second)
		for {
			ok := true
			for _, n := range nodes {
				data, err := readFileString(n.window)
				if err != nil || !strings.HasPrefix(data, engineFirstLine(t, s, keyring)) {
					ok = false
				}
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the Agents did not render the window after the activation within 8 s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, n := range nodes {
			n.agent.Stop()
		}
		win = readTimedWindow(t, s, keyring)
		if !win[0].notBefore.Equal(cur.encryptUntil) || time.Since(cur.encryptUntil) > 6*time.Second {
			t.Fatalf("the Agents stopped %v after the activation (window %+v); too late to watch the schedule", time.Since(cur.encryptUntil), win)
		}
		break
	}
	k := held[0].key
	var kOld *timedKey
	for i := range win {
		if win[i].id == k {
			kOld = &win[i]
		}
	}
	cur, next := win[0], win[1]
	if kOld == nil || !next.notBefore.Equal(cur.encryptUntil) || !kOld.notAfter.After(cur.encryptUntil) || !kOld.notAfter.Before(next.encryptUntil) {
		t.Fatalf("window after stopping the Agents %+v: want K %s previous with its not_after between the next two activations", win, k)
	}
	x1, x2, kExpiry := cur.encryptUntil, next.encryptUntil, kOld.notAfter
	inodes := []uint64{luaInode(t, nodes[0].window), luaInode(t, nodes[1].window)}
	t.Logf("%s: Agents stopped %.1f s after the activation of %s; watching %s -> %s at %s, %s -> local at %s, %s leaving at %s",
		b.Name, time.Since(cur.notBefore).Seconds(), cur.id, cur.id, next.id, x1.Format("15:04:05"), next.id, x2.Format("15:04:05"), k, kExpiry.Format("15:04:05"))

	// Fresh handshakes to every node every 40 ms until 2 s after the second activation.
	probes := make([][]luatest.Probe, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := 0; c < 1000 && time.Now().Before(x2.Add(2*time.Second)); c++ {
				p, err := luatest.ProbeWorker(cert, tls.VersionTLS12, n.inst.HTTPS, "/pid")
				if err != nil {
					t.Errorf("%s probe: %v", n.name, err)
				} else {
					probes[i] = append(probes[i], p)
				}
				time.Sleep(40 * time.Millisecond)
			}
		}()
	}
	// After the first activation: tickets of the next key from node a resume on node b.
	time.Sleep(time.Until(x1.Add(2 * time.Second)))
	for _, v := range luaVersions() {
		for range 5 {
			if !luatest.CrossResumes(t, cert, v, nodes[0].inst.HTTPS, nodes[1].inst.HTTPS, false) {
				t.Errorf("TLS %x: a ticket from node a did not resume on node b after the first activation without Agent", v)
			}
		}
	}
	// K's tickets: resumed before its not_after, on no node after it.
	time.Sleep(time.Until(kExpiry.Add(-2 * time.Second)))
	for _, h := range held {
		if r, err := luatest.Handshake(h.copies[0], nodes[1].inst.HTTPS, false); err != nil || !r {
			t.Errorf("TLS %x: a ticket under %s did not resume on node b 2 s before its not_after (err %v)", h.version, k, err)
		}
	}
	time.Sleep(time.Until(kExpiry.Add(300 * time.Millisecond)))
	for _, h := range held {
		for i, cfg := range h.copies[1:] {
			n := nodes[i%2]
			if r, err := luatest.Handshake(cfg, n.inst.HTTPS, false); err != nil || r {
				t.Errorf("TLS %x: a ticket under %s resumed=%v on %s after its not_after (err %v)", h.version, k, r, n.name, err)
			}
		}
	}
	wg.Wait()

	// Every worker, every phase: before x1 cur; from x1+1s to x2 next; from x2+1s a local key. None under
	// next before x1, none under any published key after x2+1s.
	published := map[string]bool{}
	for _, w := range readTimedWindowIDs(win) {
		published[w] = true
	}
	for i, n := range nodes {
		phases := map[string]map[string]int{}
		var lag1, lag2 time.Duration
		for _, p := range probes[i] {
			if phases[p.PID] == nil {
				phases[p.PID] = map[string]int{}
			}
			switch {
			case p.End.Before(x1):
				if p.Key != cur.id {
					t.Errorf("%s worker %s: ticket under %s at %s, before %s's not_before; want %s", n.name, p.PID, p.Key, p.Start.Format("05.000"), next.id, cur.id)
				}
				phases[p.PID]["before"]++
			case p.Start.After(x1.Add(time.Second)) && p.End.Before(x2):
				if p.Key != next.id {
					t.Errorf("%s worker %s: ticket under %s %.3f s after %s's not_before; want %s", n.name, p.PID, p.Key, p.Start.Sub(x1).Seconds(), next.id, next.id)
				}
				phases[p.PID]["next"]++
			case p.Start.After(x2.Add(time.Second)):
				if published[p.Key] {
					t.Errorf("%s worker %s: ticket under published key %s %.3f s after the last encrypt_until", n.name, p.PID, p.Key, p.Start.Sub(x2).Seconds())
				}
				phases[p.PID]["local"]++
			}
			if p.Key == cur.id && p.Start.Sub(x1) > lag1 {
				lag1 = p.Start.Sub(x1)
			}
			if p.Key == next.id && p.Start.Sub(x2) > lag2 {
				lag2 = p.Start.Sub(x2)
			}
			if p.Key == next.id && p.End.Before(x1) {
				t.Errorf("%s worker %s: ticket under %s ended %.3f s before its not_before", n.name, p.PID, next.id, x1.Sub(p.End).Seconds())
			}
		}
		workers := n.inst.Proc.WorkerPIDs()
		if len(phases) != len(workers) {
			t.Errorf("%s: probes reached workers %v, want all of %v", n.name, phases, workers)
		}
		for pid, ph := range phases {
			if ph["before"] == 0 || ph["next"] == 0 || ph["local"] == 0 {
				t.Errorf("%s worker %s: probes per phase %v; want every phase sampled", n.name, pid, ph)
			}
		}
		for pid, st := range n.inst.StatusAll(t) {
			if st.Follows != "schedule" || !st.Exhausted || len(st.Window) == 0 || st.Window[0].State != "local" {
				t.Errorf("%s worker %d: follows %q, exhausted %v, window %+v; want the schedule, exhausted, a local key encrypting", n.name, pid, st.Follows, st.Exhausted, st.Window)
			}
			if sw := st.SwitchedAt - float64(x2.UnixNano())/1e9; sw < 0 || sw > 1 {
				t.Errorf("%s worker %d switched to its local key %.3f s after the last encrypt_until, want within 1 s", n.name, pid, sw)
			}
			for _, wk := range st.Window {
				if wk.ID == k {
					t.Errorf("%s worker %d still holds %s after its not_after", n.name, pid, k)
				}
			}
		}
		if luaInode(t, n.window) != inodes[i] {
			t.Errorf("%s: the window file changed while the Agent was stopped", n.name)
		}
		t.Logf("%s: %d probes over workers %v; last ticket under the old key %.3f s after the first activation, %.3f s after the second", n.name, len(probes[i]), phases, lag1.Seconds(), lag2.Seconds())
	}
}

// readTimedWindowIDs returns the ids of keys.
func readTimedWindowIDs(keys []timedKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.id
	}
	return out
}

// engineFirstLine is the first line the shipped template renders for keyring's window now: the current
// key's base64 and times.
func engineFirstLine(t *testing.T, s *vaulttest.Server, keyring string) string {
	t.Helper()
	sec, err := s.Client.Logical().ReadWithData("ticketkeys/keys/"+keyring, map[string][]string{"format": {"nginx"}})
	if err != nil || sec == nil {
		t.Fatalf("read keyring %s: %v", keyring, err)
	}
	keys, _ := sec.Data["keys"].([]any)
	m, _ := keys[0].(map[string]any)
	return fmt.Sprintf("%s %s %s %s\n", m["ticket_key"], m["not_before"], m["encrypt_until"], m["not_after"])
}

func readFileString(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
