package main

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
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

// startHAProxy runs Debian's HAProxy with one TLS frontend loading keysFile; it returns the frontend's
// address and the admin socket.
func startHAProxy(t *testing.T, cert *testcert.Cert, dir, keysFile string) (string, string) {
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
	return addr, filepath.Join(p.Dir, "admin.sock")
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
	addr, sock := startHAProxy(t, cert, dir, keysFile)
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

// TestParseScheduleFile proves each bad schedule line is refused naming the line, the key id, the field
// and the rule, without key material; zero-length keys sharing a not_before and 256 keys are accepted.
func TestParseScheduleFile(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	k := []string{randomKey(t, 80), randomKey(t, 80), randomKey(t, 48)}
	h := func(d int) time.Time { return base.Add(time.Duration(d) * time.Hour) }
	good := schedLine(k[0], h(0), h(1), h(13))
	cases := []struct{ name, file, want string }{
		{"fields", k[0] + "\n", "line 1: has 1 fields"},
		{"base64", "!!!! " + strings.SplitN(good, " ", 2)[1], "line 1: key is not standard padded base64"},
		{"sizes", good + schedLine(k[2], h(1), h(2), h(14)), "line 2: key is 48 bytes, earlier keys are 80"},
		{"time", strings.Replace(good, h(1).UTC().Format(time.RFC3339), "later", 1), "encrypt_until \"later\": want an RFC 3339 time"},
		{"order", schedLine(k[0], h(1), h(1), h(0)), "not_after " + h(0).UTC().Format(time.RFC3339) + " must be after not_before"},
		{"lifetime", schedLine(k[0], h(0), h(1), h(169)), "more than 168h after not_before"},
		{"encrypt_until", schedLine(k[0], h(1), h(0), h(2)), "encrypt_until " + h(0).UTC().Format(time.RFC3339) + " must not be before not_before"},
		{"duplicate id", good + schedLine(k[0], h(1), h(2), h(14)), "repeats line 1's"},
		{"shared not_before", good + schedLine(k[1], h(0), h(2), h(14)), "line 2 (key " + keyID(k[1]) + "): not_before is the same as line 1's"},
	}
	for _, c := range cases {
		_, err := parseScheduleFile([]byte(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
		for _, key := range k {
			if err != nil && strings.Contains(err.Error(), key) {
				t.Errorf("%s: error holds key material", c.name)
			}
		}
	}
	zl := schedLine(k[1], h(1), h(2), h(14)) + schedLine(k[0], h(1), h(1), h(13))
	keys, err := parseScheduleFile([]byte(zl))
	if err != nil {
		t.Fatalf("zero-length key sharing a not_before: %v", err)
	}
	if _, ids, _, _ := ringAt(keys, h(1)); ids[1] != keyID(k[1]) {
		t.Fatalf("zero-length key: encrypting %s, want %s", ids[1], keyID(k[1]))
	}
	var many strings.Builder
	for i := range maxScheduleKeys {
		raw := make([]byte, 80)
		raw[0], raw[1] = byte(i), byte(i>>8)
		many.WriteString(schedLine(base64.StdEncoding.EncodeToString(raw), base.Add(time.Duration(i)*time.Minute), base.Add(time.Duration(i+1)*time.Minute), base.Add(time.Duration(i+300)*time.Minute)))
	}
	if _, err := parseScheduleFile([]byte(many.String())); err != nil {
		t.Fatalf("256 keys: %v", err)
	}
}

// TestRingAtVectors holds -at-schedule to the schedule package's test vectors: for every vector window
// served in the haproxy format with encrypt_until (what the shipped schedule template renders), the ring
// at the read instant is the engine's tls_ticket_keys, and at every sample the ring's middle (encrypting)
// key is the vectors' encrypting key, or the schedule is exhausted where the vectors have none (before
// every not_before: the file's first key, the clock-behind rule).
func TestRingAtVectors(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "schedule", "testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Windows []struct {
			Name   string `json:"name"`
			ReadAt string `json:"read_at"`
			Reads  map[string]struct {
				Keys          []map[string]any `json:"keys"`
				TLSTicketKeys []string         `json:"tls_ticket_keys"`
			} `json:"reads"`
			Samples []struct {
				At         string `json:"at"`
				Encrypting string `json:"encrypting"`
			} `json:"samples"`
		} `json:"windows"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, w := range v.Windows {
		read, ok := w.Reads["haproxy"]
		if !ok {
			continue
		}
		var file strings.Builder
		for _, k := range read.Keys {
			fmt.Fprintf(&file, "%s %s %s %s\n", k["ticket_key"], k["not_before"], k["encrypt_until"], k["not_after"])
		}
		keys, err := parseScheduleFile([]byte(file.String()))
		if err != nil {
			t.Fatalf("%s: %v", w.Name, err)
		}
		readAt, _ := time.Parse(time.RFC3339, w.ReadAt)
		if ring, _, _, _ := ringAt(keys, readAt); !slices.Equal(ring, read.TLSTicketKeys) {
			t.Errorf("%s: ring at the read differs from the engine's tls_ticket_keys", w.Name)
		}
		for _, s := range w.Samples {
			at, _ := time.Parse(time.RFC3339Nano, s.At)
			_, ids, exhausted, _ := ringAt(keys, at)
			switch {
			case s.Encrypting == "" && !exhausted && at.Before(keys[0].NotBefore):
			case s.Encrypting == "" && !exhausted:
				t.Errorf("%s at %s: encrypting %s, the vectors: none", w.Name, s.At, ids[1])
			case s.Encrypting != "" && (exhausted || ids[1] != s.Encrypting):
				t.Errorf("%s at %s: ring %v (exhausted %v), the vectors encrypt %s", w.Name, s.At, ids, exhausted, s.Encrypting)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no vector sample checked")
	}
	t.Logf("%d samples equal the vectors", checked)
}
