package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

func randomKey(t *testing.T, size int) string {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func writeKeys(t *testing.T, path string, keys []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ticketKeyName makes one TLS 1.2 handshake without resumption and returns the hex of the first 16 bytes
// of the ticket HAProxy issued: OpenSSL puts the key name there, so it names the encrypting key.
func ticketKeyName(t *testing.T, addr string, cert *testcert.Cert) string {
	t.Helper()
	cache := &captureCache{}
	cfg := cert.ClientConfig()
	cfg.MaxVersion = tls.VersionTLS12
	cfg.ClientSessionCache = cache
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if cache.state == nil {
		t.Fatalf("%s issued no session ticket", addr)
	}
	ticket, _, err := cache.state.ResumptionState()
	if err != nil || len(ticket) < 16 {
		t.Fatalf("ticket: len %d, err %v", len(ticket), err)
	}
	return hex.EncodeToString(ticket[:16])
}

type captureCache struct{ state *tls.ClientSessionState }

func (c *captureCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (c *captureCache) Put(_ string, cs *tls.ClientSessionState)   { c.state = cs }

// TestPushRealHAProxy runs Debian's HAProxy with a tls-ticket-keys file and proves, through the real admin
// socket: a push with an unchanged file sends nothing; one rotation sends exactly the new next key; a jump of
// two sends two; a full replacement sends three; after each push HAProxy's ring equals the file and its
// tickets carry the name of the file's middle (current) key; the master and worker PIDs never change.
func TestPushRealHAProxy(t *testing.T) {
	dir := t.TempDir()
	cert := testcert.New(t, testcert.RSA2048)
	keysFile := filepath.Join(dir, "tls-ticket-keys")
	k := make([]string, 9)
	for i := range k {
		k[i] = randomKey(t, 80)
	}
	writeKeys(t, keysFile, k[0:3])
	addr, p := startHAProxy(t, cert, dir, keysFile)
	master, workers := p.MasterPID, p.WorkerPIDs()
	opts := Options{Socket: filepath.Join(p.Dir, "admin.sock"), File: keysFile}

	steps := []struct {
		name  string
		file  []string
		sends int
	}{
		{"unchanged", k[0:3], 0},
		{"one rotation", k[1:4], 1},
		{"same again", k[1:4], 0},
		{"jump of two", k[3:6], 2},
		{"full replacement", k[6:9], 3},
	}
	for _, s := range steps {
		writeKeys(t, keysFile, s.file)
		rep, err := Push(opts)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if len(rep.Sent) != s.sends {
			t.Fatalf("%s: sent %d keys (%s), want %d", s.name, len(rep.Sent), rep, s.sends)
		}
		out := rep.String()
		for _, key := range k {
			if strings.Contains(out, key) {
				t.Fatalf("%s: report contains key material", s.name)
			}
		}
		t.Logf("%s: %s", s.name, out)
		if got, want := ticketKeyName(t, addr, cert), keyID(s.file[1]); got != want {
			t.Fatalf("%s: ticket key name %s, want the current (middle) key %s", s.name, got, want)
		}
	}
	if p.MasterPID != master || !slices.Equal(p.WorkerPIDs(), workers) {
		t.Fatalf("PIDs changed: master %d -> %d, workers %v -> %v", master, p.MasterPID, workers, p.WorkerPIDs())
	}

	// A reference HAProxy does not know fails with HAProxy's own message and no key material.
	_, err := Push(Options{Socket: opts.Socket, File: keysFile, Ref: "/nonexistent/keys"})
	if err == nil || !strings.Contains(err.Error(), "unable to locate") {
		t.Fatalf("unknown ref: err = %v, want HAProxy's 'unable to locate'", err)
	}
	// A key of the other size is rejected by HAProxy and reported by id.
	small := []string{randomKey(t, 48), randomKey(t, 48), randomKey(t, 48)}
	writeKeys(t, keysFile, small)
	_, err = Push(opts)
	if err == nil || !strings.Contains(err.Error(), "wrong size") {
		t.Fatalf("48-byte keys into an 80-byte ring: err = %v, want HAProxy's 'wrong size'", err)
	}
	for _, key := range append(k, small...) {
		if bytes.Contains([]byte(err.Error()), []byte(key)) {
			t.Fatal("error contains key material")
		}
	}
}

// TestMissingSocketIsNotSuccess: a wrong -socket path (issue 21: `-socket /no/such.sock` exited 0, so keys were
// never pushed while every run said all is well) fails unless HAProxy is verifiably not running: its pid file
// is absent or names no live process. A live HAProxy without its socket, or no pid file to check, is an error
// naming the socket and what to fix.
func TestMissingSocketIsNotSuccess(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys")
	writeKeys(t, keysFile, []string{randomKey(t, 80), randomKey(t, 80), randomKey(t, 80)})
	absent := filepath.Join(dir, "no-such.sock")

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pidFile := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, pidFile string
		notRunning    bool
		wantErr       string
	}{
		{"no pid file given", "", false, "-pidfile"},
		{"pid file absent", filepath.Join(dir, "haproxy.pid"), true, ""},
		{"pid file names an exited process", pidFile("dead.pid", fmt.Sprintf("%d\n", dead.Process.Pid)), true, ""},
		{"pid file names a live process", pidFile("live.pid", fmt.Sprintf("%d\n", os.Getpid())), false, fmt.Sprintf("pid %d", os.Getpid())},
		{"pid file unreadable as a pid", pidFile("junk.pid", "haproxy\n"), false, "not a process id"},
	}
	for _, tc := range cases {
		_, err := PushWithRetry(Options{Socket: absent, File: keysFile, PIDFile: tc.pidFile, Attempts: 1})
		if got := errors.Is(err, ErrNotRunning); got != tc.notRunning {
			t.Errorf("%s: err = %v; want not-running=%v", tc.name, err, tc.notRunning)
			continue
		}
		if !tc.notRunning && (err == nil || !strings.Contains(err.Error(), absent) || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: err = %v; want an error naming %s and %q", tc.name, err, absent, tc.wantErr)
		}
	}
}

// TestNotRunningAndBadFile proves a missing socket with no HAProxy pid file is reported as ErrNotRunning
// (HAProxy will load the file when it starts) and that neither it nor an invalid file is retried.
func TestNotRunningAndBadFile(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys")
	writeKeys(t, keysFile, []string{randomKey(t, 80), randomKey(t, 80), randomKey(t, 80)})
	start := time.Now()
	_, err := PushWithRetry(Options{Socket: filepath.Join(dir, "absent.sock"), File: keysFile, PIDFile: filepath.Join(dir, "haproxy.pid"), Attempts: 5, RetryDelay: time.Second})
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("absent socket: err = %v, want ErrNotRunning", err)
	}
	writeKeys(t, keysFile, []string{randomKey(t, 80)})
	_, err = PushWithRetry(Options{Socket: filepath.Join(dir, "absent.sock"), File: keysFile, Attempts: 5, RetryDelay: time.Second})
	if err == nil || !strings.Contains(err.Error(), "want at least 3") {
		t.Fatalf("one-line file: err = %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("took %v: a missing socket or a bad file was retried", d)
	}
}
