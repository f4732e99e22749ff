package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// schedLine renders one schedule file line.
func schedLine(key string, nb, eu, na time.Time) string {
	return fmt.Sprintf("%s %s %s %s\n", key, nb.UTC().Format(time.RFC3339), eu.UTC().Format(time.RFC3339), na.UTC().Format(time.RFC3339))
}

// startHAProxy runs Debian's HAProxy with one TLS frontend loading keysFile and its admin socket at
// admin.sock in the process's directory; it returns the frontend's address and the process.
func startHAProxy(t *testing.T, cert *testcert.Cert, dir, keysFile string) (string, *servertest.Proc) {
	t.Helper()
	crt := cert.WriteCombinedPEM(dir)
	port := servertest.FreePort(t)
	p := servertest.StartHAProxy(t, fmt.Sprintf(`
global
  stats socket {{DIR}}/admin.sock level admin
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:%d ssl crt %s tls-ticket-keys %s
  http-request return status 200 content-type text/plain string "ok"
`, port, crt, keysFile))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p.WaitListening(t, addr)
	return addr, p
}

// resumes offers the session held by cfg (a copy) to addr and reports whether HAProxy resumed it.
func resumes(t *testing.T, cfg *tls.Config, addr string) bool {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	return c.ConnectionState().DidResume
}

// TestAtScheduleRealHAProxy proves (issue 19 item 1, HAProxy) that `-at-schedule` keeps a real HAProxy on
// the schedule with no Agent: the schedule file Agent last rendered (previous k0 until its not_after,
// current k1, next k2) is run at instants chosen on a fake clock (a second before and at each instant);
// at each, HAProxy's ring and the keys file are what the instant requires and HAProxy's tickets carry the
// encrypting key's name: k1, then k2 from its not_before; k0 leaves the ring at its not_after and its
// ticket no longer resumes (it did a second before);
// after the last encrypt_until a node-local key encrypts (not a published key past its encrypt_until),
// kept across runs of the same outage. The control: the push alone (Agent's way), with Agent stopped and
// the keys file it last rendered, keeps k0 in HAProxy past its not_after.
func TestAtScheduleRealHAProxy(t *testing.T) {
	dir := t.TempDir()
	cert := testcert.New(t, testcert.RSA2048)
	keysFile := filepath.Join(dir, "tls-ticket-keys")
	schedule := filepath.Join(dir, "web.schedule")
	k := []string{randomKey(t, 80), randomKey(t, 80), randomKey(t, 80)}
	// The engine's tls_ticket_keys at render time: previous k0, current k1, next k2.
	writeKeys(t, keysFile, k)
	addr, p := startHAProxy(t, cert, dir, keysFile)
	sock := filepath.Join(p.Dir, "admin.sock")
	s := time.Now().Truncate(time.Second)
	at := func(sec int) time.Time { return s.Add(time.Duration(sec) * time.Second) }
	if err := os.WriteFile(schedule, []byte(
		schedLine(k[1], at(-10), at(10), at(40))+
			schedLine(k[2], at(10), at(20), at(50))+
			schedLine(k[0], at(-20), at(-10), at(5))), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := Options{Socket: sock, File: keysFile}

	// A ticket under k1 (encrypting now) that HAProxy will see as k0's successor... and one under k0:
	// make k0 encrypt for a moment through the old push, as it did before this window.
	writeKeys(t, keysFile, []string{k[0], k[0], k[1]})
	if _, err := Push(opts); err != nil {
		t.Fatal(err)
	}
	k0cfg := cert.ClientConfig()
	k0cfg.MaxVersion = tls.VersionTLS12
	cache := tls.NewLRUClientSessionCache(4)
	k0cfg.ClientSessionCache = cache
	if got := ticketKeyNameCfg(t, addr, k0cfg); got != keyID(k[0]) {
		t.Fatalf("setup: ticket under %s, want k0 %s", got, keyID(k[0]))
	}
	copyCfg := func() *tls.Config {
		c := k0cfg.Clone()
		c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		cs, _ := cache.Get(c.ServerName)
		c.ClientSessionCache.Put(c.ServerName, cs)
		return c
	}
	beforeExpiry, afterExpiry := copyCfg(), copyCfg()

	steps := []struct {
		name      string
		now       time.Time
		ring      []string // ids
		encrypts  string   // "" : a node-local key (none of k)
		exhausted bool
	}{
		{"as rendered", at(1), []string{keyID(k[0]), keyID(k[1]), keyID(k[2])}, keyID(k[1]), false},
		{"second before k0's not_after", at(4), []string{keyID(k[0]), keyID(k[1]), keyID(k[2])}, keyID(k[1]), false},
		{"k0's not_after", at(5), []string{keyID(k[1]), keyID(k[1]), keyID(k[2])}, keyID(k[1]), false},
		{"second before the activation", at(9), []string{keyID(k[1]), keyID(k[1]), keyID(k[2])}, keyID(k[1]), false},
		{"k2's not_before", at(10), []string{keyID(k[1]), keyID(k[2]), keyID(k[2])}, keyID(k[2]), false},
		{"last encrypt_until", at(20), nil, "", true},
		{"same outage", at(25), nil, "", true},
	}
	var local string
	for i, st := range steps {
		if i == 1 {
			if !resumes(t, beforeExpiry, addr) {
				t.Fatalf("a k0 ticket did not resume while k0 was in the ring (before its not_after)")
			}
		}
		rep, err := RunSchedule(opts, schedule, st.now)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		t.Logf("%s: %s; %s", st.name, rep, rep.Push)
		if rep.Exhausted != st.exhausted {
			t.Fatalf("%s: exhausted %v, want %v", st.name, rep.Exhausted, st.exhausted)
		}
		if st.ring != nil && !slices.Equal(rep.Ring, st.ring) {
			t.Fatalf("%s: ring %v, want %v", st.name, rep.Ring, st.ring)
		}
		if !slices.Equal(rep.Push.Ring, rep.Ring) {
			t.Fatalf("%s: HAProxy's ring %v, want %v", st.name, rep.Push.Ring, rep.Ring)
		}
		file, _ := os.ReadFile(keysFile)
		lines := strings.Fields(string(file))
		for j, l := range lines {
			if keyID(l) != rep.Ring[j] {
				t.Fatalf("%s: keys file line %d is %s, want %s", st.name, j+1, keyID(l), rep.Ring[j])
			}
		}
		got := ticketKeyName(t, addr, cert)
		switch {
		case st.encrypts != "" && got != st.encrypts:
			t.Fatalf("%s: HAProxy's ticket under %s, want %s", st.name, got, st.encrypts)
		case st.encrypts == "":
			for _, key := range k {
				if got == keyID(key) {
					t.Fatalf("%s: HAProxy encrypts with published key %s past every encrypt_until", st.name, got)
				}
			}
			if local != "" && got != local {
				t.Fatalf("%s: a new local key %s within the same outage, want %s kept", st.name, got, local)
			}
			local = got
		}
		if st.now.Equal(at(5)) && resumes(t, afterExpiry, addr) {
			t.Fatalf("a k0 ticket resumed after k0's not_after")
		}
		for _, key := range k {
			if strings.Contains(rep.String()+rep.Push.String(), key) {
				t.Fatalf("%s: the report holds key material", st.name)
			}
		}
	}

	// Control: Agent's way alone. Agent stopped after rendering the keys file (k0, k1, k2): pushing it
	// (as a timer without the schedule would) leaves k0 in HAProxy after its not_after, and k1 encrypting
	// after its encrypt_until.
	writeKeys(t, keysFile, k)
	if _, err := Push(opts); err != nil {
		t.Fatal(err)
	}
	if !resumes(t, copyCfg(), addr) {
		t.Fatalf("control: the k0 ticket should resume with k0 still in the ring (the defect this mode fixes)")
	}
	if got := ticketKeyName(t, addr, cert); got != keyID(k[1]) {
		t.Fatalf("control: ticket under %s, want k1", got)
	}
}

// ticketKeyNameCfg is ticketKeyName with the caller's config (its session cache receives the ticket).
func ticketKeyNameCfg(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	inner := cfg.ClientSessionCache
	capture := &captureCache{}
	c2 := cfg.Clone()
	c2.ClientSessionCache = teeCache{inner, capture}
	conn, err := tls.Dial("tcp", addr, c2)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	ticket, _, err := capture.state.ResumptionState()
	if err != nil || len(ticket) < 16 {
		t.Fatalf("ticket: %v", err)
	}
	return fmt.Sprintf("%x", ticket[:16])
}

type teeCache struct {
	a tls.ClientSessionCache
	b *captureCache
}

func (c teeCache) Get(k string) (*tls.ClientSessionState, bool) { return nil, false }
func (c teeCache) Put(k string, cs *tls.ClientSessionState)     { c.a.Put(k, cs); c.b.Put(k, cs) }
