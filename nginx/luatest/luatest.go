// Package luatest runs nginx (Debian's package or an OpenResty line, servertest.NginxBuild) with the
// resty.ticketkeys Lua module (nginx/lib) for tests: it
// writes window files, starts instances with placeholder ticket keys, reads each worker's status handler
// and checks cross-instance session resumption with a Go TLS client.
//
// It builds on internal/servertest (private prefix, stop by PID) and internal/testcert. Key material is
// written only to files in test temp directories; nothing here logs it.
package luatest

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// LibDir returns the absolute path of nginx/lib (the lua_package_path root of resty.ticketkeys).
func LibDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("luatest: cannot locate the source file to find nginx/lib")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "lib")
	if _, err := os.Stat(filepath.Join(dir, "resty", "ticketkeys.lua")); err != nil {
		t.Fatalf("luatest: resty/ticketkeys.lua not found under %s: %v", dir, err)
	}
	return dir
}

// NewKey returns a random ticket key of size bytes (48 or 80); its first 16 bytes are the key name.
func NewKey(t testing.TB, size int) []byte {
	t.Helper()
	k := make([]byte, size)
	if _, err := rand.Read(k); err != nil {
		t.Fatalf("luatest: random key: %v", err)
	}
	return k
}

// NewKeys returns n random keys of size bytes.
func NewKeys(t testing.TB, n, size int) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range out {
		out[i] = NewKey(t, size)
	}
	return out
}

// ID returns the key id the status handler reports for a key: hex of its 16-byte name.
func ID(key []byte) string { return hex.EncodeToString(key[:16]) }

// IDs returns the ids of keys, in order.
func IDs(keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = ID(k)
	}
	return out
}

// WindowBytes renders keys as a window file: one standard base64 key per line.
func WindowBytes(keys [][]byte) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// WriteFileAtomic writes data to path through a temporary file in the same directory and a rename, as
// Vault Agent does, so a reader never sees a partial file.
func WriteFileAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".window-*")
	if err != nil {
		t.Fatalf("luatest: temp file beside %s: %v", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		t.Fatalf("luatest: write %s: %v", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o640); err != nil {
		tmp.Close()
		t.Fatalf("luatest: chmod %s: %v", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatalf("luatest: close %s: %v", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatalf("luatest: rename to %s: %v", path, err)
	}
}

// WriteWindow writes keys as a window file at path, atomically.
func WriteWindow(t testing.TB, path string, keys [][]byte) {
	t.Helper()
	WriteFileAtomic(t, path, WindowBytes(keys))
}

// Config describes one nginx instance.
type Config struct {
	// Nginx is the nginx build to run. If nil, Debian's nginx.
	Nginx *servertest.NginxBuild
	// Window is the path of the window file the module reads.
	Window string
	// Cert is the TLS certificate every server block serves.
	Cert *testcert.Cert
	// Capacity is the number of placeholder ssl_session_ticket_key directives (the key array capacity).
	// If zero, 3.
	Capacity int
	// Workers is worker_processes. If zero, 2.
	Workers int
	// Interval is the module's polling interval in seconds. If zero, 0.2.
	Interval float64
	// ErrorRepeat is the module's error_repeat option in seconds. If zero, the module's default.
	ErrorRepeat float64
	// Stream adds a stream{} TLS server block (answering "hello\n") with its own placeholders.
	Stream bool
	// StreamPlain adds a stream{} server without TLS (answering "plain\n").
	StreamPlain bool
	// StreamSharedCache adds a stream{} TLS server block (answering "shared\n") with
	// `ssl_session_cache shared:...` and no placeholder: nginx 1.23.2+ gives it keys of its own, which
	// the module must leave alone.
	StreamSharedCache bool
	// NoStart leaves the init_worker_by_lua_block out (nginx keeps its placeholder keys): a control.
	NoStart bool
	// ExtraHTTP is appended inside http{} (e.g. more locations or servers).
	ExtraHTTP string
	// SharedDict, if set, declares `lua_shared_dict SharedDict 1m;` in http{} and passes it to start{}
	// as shared_dict (the last good window and the per-start placeholder live there).
	SharedDict string
	// InitLua runs in init_worker_by_lua_block before start{} (test hooks only).
	InitLua string
	// StartOptions, if set, is the Lua table fields start{} gets instead of file, interval and the
	// options above (e.g. `scopes = { ... }, interval = 0.2`); shared_dict is still added with SharedDict.
	StartOptions string
}

// Instance is one running nginx with the module.
type Instance struct {
	// Proc is the nginx master (servertest).
	Proc *servertest.Proc
	// HTTPS is the address of the https server block (answers "ok\n").
	HTTPS string
	// Stream is the address of the stream TLS server block, if Config.Stream.
	Stream string
	// StreamPlain is the address of the non-TLS stream server, if Config.StreamPlain.
	StreamPlain string
	// StreamShared is the address of the stream TLS block with a shared session cache and no
	// placeholder, if Config.StreamSharedCache.
	StreamShared string
	// LayoutURL answers the module's layout row for this nginx (_layout_row) as JSON.
	LayoutURL string
	// StatusURL is the plain-http status handler URL (reuseport, so connections reach every worker).
	StatusURL string
	// FilePlaceholderID is the id (hex key name) of the placeholder key file the configuration names.
	FilePlaceholderID string
}

// Start writes placeholder keys and certificates to a temp directory and starts nginx with cfg.
func Start(t testing.TB, cfg Config) *Instance {
	t.Helper()
	if cfg.Capacity == 0 {
		cfg.Capacity = 3
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Interval == 0 {
		cfg.Interval = 0.2
	}
	if cfg.Nginx == nil {
		cfg.Nginx = servertest.DebianNginx(t)
	}
	files := t.TempDir()
	certFile, keyFile, _ := cfg.Cert.WritePEM(files)
	placeholder := filepath.Join(files, "placeholder.key")
	phKey := NewKey(t, 80)
	if err := os.WriteFile(placeholder, phKey, 0o600); err != nil {
		t.Fatalf("luatest: write placeholder: %v", err)
	}
	var ph strings.Builder
	for range cfg.Capacity {
		fmt.Fprintf(&ph, "    ssl_session_ticket_key %s;\n", placeholder)
	}
	httpsPort, statusPort := servertest.FreePort(t), servertest.FreePort(t)
	inst := &Instance{
		HTTPS:     fmt.Sprintf("127.0.0.1:%d", httpsPort),
		StatusURL: fmt.Sprintf("http://127.0.0.1:%d/ticketkeys/status", statusPort),
		LayoutURL: fmt.Sprintf("http://127.0.0.1:%d/ticketkeys/layout", statusPort),

		FilePlaceholderID: ID(phKey),
	}
	extra := ""
	if cfg.ErrorRepeat > 0 {
		extra = fmt.Sprintf(", error_repeat = %g", cfg.ErrorRepeat)
	}
	dict := ""
	if cfg.SharedDict != "" {
		extra += fmt.Sprintf(", shared_dict = %q", cfg.SharedDict)
		dict = fmt.Sprintf("    lua_shared_dict %s 1m;\n", cfg.SharedDict)
	}
	opts := fmt.Sprintf("file = %q, interval = %g%s", cfg.Window, cfg.Interval, extra)
	if cfg.StartOptions != "" {
		opts = cfg.StartOptions
		if cfg.SharedDict != "" {
			opts += fmt.Sprintf(", shared_dict = %q", cfg.SharedDict)
		}
	}
	start := fmt.Sprintf("%s    init_worker_by_lua_block { %s require(\"resty.ticketkeys\").start{ %s } }\n",
		dict, cfg.InitLua, opts)
	if cfg.NoStart {
		start = dict
	}
	var streamServers strings.Builder
	if cfg.Stream {
		streamPort := servertest.FreePort(t)
		inst.Stream = fmt.Sprintf("127.0.0.1:%d", streamPort)
		fmt.Fprintf(&streamServers, `    server {
        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
%s        return "hello\n";
    }
`, streamPort, certFile, keyFile, ph.String())
	}
	if cfg.StreamSharedCache {
		port := servertest.FreePort(t)
		inst.StreamShared = fmt.Sprintf("127.0.0.1:%d", port)
		fmt.Fprintf(&streamServers, `    server {
        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:tkstream:1m;
        return "shared\n";
    }
`, port, certFile, keyFile)
	}
	if cfg.StreamPlain {
		port := servertest.FreePort(t)
		inst.StreamPlain = fmt.Sprintf("127.0.0.1:%d", port)
		fmt.Fprintf(&streamServers, "    server {\n        listen 127.0.0.1:%d;\n        return \"plain\\n\";\n    }\n", port)
	}
	var stream string
	if streamServers.Len() > 0 {
		stream = "stream {\n" + streamServers.String() + "}\n"
	}
	conf := fmt.Sprintf(`%sworker_processes %d;
error_log {{DIR}}/error.log notice;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path {{DIR}}/body;
    proxy_temp_path {{DIR}}/proxy;
    fastcgi_temp_path {{DIR}}/fastcgi;
    uwsgi_temp_path {{DIR}}/uwsgi;
    scgi_temp_path {{DIR}}/scgi;
    keepalive_timeout 300s;
    lua_package_path "%s/?.lua;;";
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.2 TLSv1.3;
%s%s    server {
        listen 127.0.0.1:%d ssl;
        location / { return 200 "ok\n"; }
    }
    server {
        listen 127.0.0.1:%d reuseport;
        location = /ticketkeys/status { content_by_lua_block { require("resty.ticketkeys").status() } }
%s    }
%s}
%s`, cfg.Nginx.LoadModules(true), cfg.Workers, LibDir(t), certFile, keyFile, ph.String(), start, httpsPort, statusPort, LayoutLocation, cfg.ExtraHTTP, stream)
	inst.Proc = servertest.StartNginxWith(t, cfg.Nginx, conf)
	addrs := []string{inst.HTTPS, fmt.Sprintf("127.0.0.1:%d", statusPort)}
	for _, a := range []string{inst.Stream, inst.StreamShared, inst.StreamPlain} {
		if a != "" {
			addrs = append(addrs, a)
		}
	}
	inst.Proc.WaitListening(t, addrs...)
	inst.Proc.WaitWorkers(t, cfg.Workers)
	return inst
}

// LayoutLocation is an http location that answers the module's layout row for the running nginx
// (resty.ticketkeys._layout_row) as JSON, or "refused: REASON"; for a loopback test server.
const LayoutLocation = `        location = /ticketkeys/layout {
            content_by_lua_block {
                local tk = require("resty.ticketkeys")
                local row, err = tk._layout_row(ngx.config.nginx_version)
                ngx.say(row and tk._json(row) or ("refused: " .. err))
            }
        }
`

// Layout fetches the module's layout row for this nginx: a layoutprobe.Row in JSON plus "layout" (the
// row's name), or "refused: REASON" for an nginx version the module does not know.
func (i *Instance) Layout(t testing.TB) []byte {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(i.LayoutURL)
	if err != nil {
		t.Fatalf("luatest: layout %s: %v", i.LayoutURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("luatest: layout %s: HTTP %d %q %v", i.LayoutURL, resp.StatusCode, body, err)
	}
	return body
}

// Key is one key of a server block as the status handler reports it.
type Key struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Size  int    `json:"size"`
}

// Block is one TLS server block as the status handler reports it.
type Block struct {
	Kind   string `json:"kind"`
	Server int    `json:"server"`
	Where  string `json:"where"`
	// Scope is the window file whose keys the module installs in this block ("" for a block it leaves
	// alone: it matches no start{} scope and there is no top-level file).
	Scope    string `json:"scope"`
	Capacity int    `json:"capacity"`
	Keys     []Key  `json:"keys"`
}

// IDs returns the block's key ids in nginx's order (element 0 encrypts).
func (b Block) IDs() []string {
	out := make([]string, len(b.Keys))
	for i, k := range b.Keys {
		out[i] = k.ID
	}
	return out
}

// Status is one worker's status answer.
type Status struct {
	PID         int     `json:"pid"`
	Worker      int     `json:"worker"`
	Version     string  `json:"nginx_version"`
	Layout      string  `json:"layout"`
	LayoutError string  `json:"layout_error"`
	File        string  `json:"file"`
	Applies     int     `json:"applies"`
	LastError   string  `json:"last_error"`
	Blocks      []Block `json:"blocks"`
	Skipped     []Skip  `json:"skipped"`
	// Follows is "schedule" (a window file with times: the worker switches keys at their instants by
	// itself) or "file order" (a file without times); FollowsHow says it in words.
	Follows    string `json:"follows"`
	FollowsHow string `json:"follows_how"`
	// Exhausted is true while no published key may encrypt (a worker-local key encrypts).
	Exhausted bool `json:"exhausted"`
	// CurrentBy says why the encrypting key encrypts: "schedule", "clock behind", or the local key.
	CurrentBy string `json:"current_by"`
	// NextChangeAt is the next instant of the schedule (RFC 3339), SwitchedAt when (Unix seconds) the
	// encrypting key last changed, EvaluatedAt when the schedule was last applied.
	NextChangeAt string  `json:"next_change_at"`
	SwitchedAt   float64 `json:"switched_at"`
	EvaluatedAt  float64 `json:"evaluated_at"`
	// SwitchedBy is what made that change: "schedule timer" (the worker's own timer at the instant),
	// "periodic check" or "window file".
	SwitchedBy string `json:"switched_by"`
	// Window lists the installed keys, element 0 encrypting, with their schedule states (current,
	// next, previous, local; decrypt-only for a file without times) and times.
	Window []WindowKey `json:"window"`
	// Source says where the followed window came from: "file", or "shared_dict" (the last good window
	// another worker of this nginx stored, while the file is bad or unreadable); "placeholder" while
	// this nginx start's random placeholder key is installed; empty before anything is installed.
	Source string `json:"source"`
	// SharedDict is the start{} shared_dict option ("" without one).
	SharedDict string `json:"shared_dict"`
}

// WindowKey is one installed key as the status handler reports it (ids and times, never material).
type WindowKey struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	NotBefore    string `json:"not_before"`
	EncryptUntil string `json:"encrypt_until"`
	NotAfter     string `json:"not_after"`
}

// Skip is a TLS server block the module leaves alone, as the status handler reports it.
type Skip struct {
	Kind   string `json:"kind"`
	Server int    `json:"server"`
	Where  string `json:"where"`
	Reason string `json:"reason"`
}

// Status fetches one worker's status (whichever worker accepts the connection).
func (i *Instance) Status(t testing.TB) Status {
	t.Helper()
	s, err := FetchStatus(i.StatusURL)
	if err != nil {
		t.Fatalf("luatest: %v", err)
	}
	return s
}

// FetchStatus fetches one status answer from url.
func FetchStatus(url string) (Status, error) {
	var s Status
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return s, fmt.Errorf("status %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return s, fmt.Errorf("status %s: read: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("status %s: HTTP %d: %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("status %s: decode %q: %w", url, body, err)
	}
	return s, nil
}

// StatusAll returns the status of every live worker of the instance, keyed by worker PID. Connections
// to the reuseport status listener are spread over the workers by the kernel; it keeps asking (at most
// 400 requests and 10 s) until it has heard from every current worker PID, else it fails the test.
func (i *Instance) StatusAll(t testing.TB) map[int]Status {
	t.Helper()
	want := i.Proc.WorkerPIDs()
	got := map[int]Status{}
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; n < 400 && time.Now().Before(deadline); n++ {
		s, err := FetchStatus(i.StatusURL)
		if err == nil {
			got[s.PID] = s
		}
		done := true
		for _, pid := range want {
			if _, ok := got[pid]; !ok {
				done = false
			}
		}
		if done {
			return got
		}
	}
	seen := make([]int, 0, len(got))
	for pid := range got {
		seen = append(seen, pid)
	}
	slices.Sort(seen)
	t.Fatalf("luatest: heard from workers %v, want all of %v", seen, want)
	return nil
}

// WaitIDs waits (at most timeout) until every worker reports want as the key ids of every block, and
// fails the test otherwise.
func (i *Instance) WaitIDs(t testing.TB, want []string, timeout time.Duration) map[int]Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[int]Status
	for {
		last = i.StatusAll(t)
		if AllBlocksHave(last, want) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("luatest: workers did not install ids %v within %v; status %+v; log:\n%s", want, timeout, last, i.Proc.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AllBlocksHave reports whether every worker has at least one block and every block holds exactly want.
func AllBlocksHave(st map[int]Status, want []string) bool {
	if len(st) == 0 {
		return false
	}
	for _, s := range st {
		if len(s.Blocks) == 0 {
			return false
		}
		for _, b := range s.Blocks {
			if !slices.Equal(b.IDs(), want) {
				return false
			}
		}
	}
	return true
}

// Handshake connects to addr with cfg (its ClientSessionCache carries tickets between calls), reads
// the first line of the answer (an HTTP response for https, "hello" for stream) so that TLS 1.3 tickets
// are received, and reports whether the session was resumed.
func Handshake(cfg *tls.Config, addr string, stream bool) (resumed bool, err error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if !stream {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
			return false, fmt.Errorf("write %s: %w", addr, err)
		}
	}
	buf := make([]byte, 512)
	if _, err := io.ReadAtLeast(c, buf, 1); err != nil {
		return false, fmt.Errorf("read %s: %w", addr, err)
	}
	// A ticket may follow the first record; read to EOF (short answers, Connection: close).
	_, _ = io.Copy(io.Discard, c)
	return c.ConnectionState().DidResume, nil
}

// ClientConfig returns a client config for cert's CA pinned to one TLS version, with a fresh session
// cache.
func ClientConfig(cert *testcert.Cert, version uint16) *tls.Config {
	cfg := cert.ClientConfig()
	cfg.MinVersion, cfg.MaxVersion = version, version
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	return cfg
}

// CrossResumes gets a ticket from first and reports whether second resumes it.
func CrossResumes(t testing.TB, cert *testcert.Cert, version uint16, first, second string, stream bool) bool {
	t.Helper()
	cfg := ClientConfig(cert, version)
	if _, err := Handshake(cfg, first, stream); err != nil {
		t.Fatalf("luatest: %v", err)
	}
	r, err := Handshake(cfg, second, stream)
	if err != nil {
		t.Fatalf("luatest: %v", err)
	}
	return r
}

// TimedKey is one key of a window file with times (the current window.ctmpl): the key and its
// not_before, encrypt_until and not_after.
type TimedKey struct {
	Key                               []byte
	NotBefore, EncryptUntil, NotAfter time.Time
}

// TimedWindowBytes renders keys as a window file with times: per line the standard base64 key, then
// not_before, encrypt_until and not_after in RFC 3339 (UTC, whole seconds, as the engine writes them),
// separated by single spaces.
func TimedWindowBytes(keys []TimedKey) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s %s %s\n", base64.StdEncoding.EncodeToString(k.Key),
			k.NotBefore.UTC().Format(time.RFC3339), k.EncryptUntil.UTC().Format(time.RFC3339),
			k.NotAfter.UTC().Format(time.RFC3339))
	}
	return b.Bytes()
}

// WriteTimedWindow writes keys as a window file with times at path, atomically.
func WriteTimedWindow(t testing.TB, path string, keys []TimedKey) {
	t.Helper()
	WriteFileAtomic(t, path, TimedWindowBytes(keys))
}

// TicketCapture is a ClientSessionCache that keeps the last session it was given and offers none: set
// it as tls.Config.ClientSessionCache for a full handshake, then read the issued ticket's KeyName.
type TicketCapture struct{ state *tls.ClientSessionState }

func (c *TicketCapture) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (c *TicketCapture) Put(_ string, cs *tls.ClientSessionState)   { c.state = cs }

// KeyName returns the id (hex) of the key that encrypted the captured ticket: nginx (OpenSSL's ticket
// callback) puts the 16-byte key name in clear at the start of every ticket.
func (c *TicketCapture) KeyName() (string, error) {
	if c.state == nil {
		return "", fmt.Errorf("the server issued no session ticket")
	}
	ticket, _, err := c.state.ResumptionState()
	if err != nil {
		return "", fmt.Errorf("ticket: %w", err)
	}
	if len(ticket) < 16 {
		return "", fmt.Errorf("ticket of %d bytes, shorter than a key name", len(ticket))
	}
	return hex.EncodeToString(ticket[:16]), nil
}

// TicketKeyName makes one full handshake (no session offered) to addr in TLS version and returns the
// id (hex) of the key that encrypted the ticket the server issued: nginx (OpenSSL's ticket callback)
// puts the 16-byte key name in clear at the start of every ticket.
func TicketKeyName(cert *testcert.Cert, version uint16, addr string, stream bool) (string, error) {
	cfg := cert.ClientConfig()
	cfg.MinVersion, cfg.MaxVersion = version, version
	capture := &TicketCapture{}
	cfg.ClientSessionCache = capture
	if _, err := Handshake(cfg, addr, stream); err != nil {
		return "", err
	}
	key, err := capture.KeyName()
	if err != nil {
		return "", fmt.Errorf("%s: %w", addr, err)
	}
	return key, nil
}

// Probe is one fresh TLS handshake to a server answering its worker's PID ("$pid\n"): when it started
// and ended, the worker that answered and the id of the key that encrypted the ticket it issued.
type Probe struct {
	Start, End time.Time
	PID        string
	Key        string
}

// ProbeWorker makes a fresh handshake (no session offered) in TLS version to addr, GETs path (a location
// answering "$pid\n"), and returns the answering worker's PID and the ticket's key name.
func ProbeWorker(cert *testcert.Cert, version uint16, addr, path string) (Probe, error) {
	cfg := cert.ClientConfig()
	cfg.MinVersion, cfg.MaxVersion = version, version
	return ProbeWith(cfg, addr, path)
}

// ProbeWith is ProbeWorker with the client's TLS configuration given (a copy of base is used, with a
// session cache that offers no session): the PID is the body's text, whatever path answers.
func ProbeWith(base *tls.Config, addr, path string) (Probe, error) {
	p := Probe{Start: time.Now()}
	cfg := base.Clone()
	capture := &TicketCapture{}
	cfg.ClientSessionCache = capture
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return p, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path); err != nil {
		return p, fmt.Errorf("write %s: %w", addr, err)
	}
	body, err := io.ReadAll(c)
	if err != nil {
		return p, fmt.Errorf("read %s: %w", addr, err)
	}
	p.End = time.Now()
	_, text, _ := strings.Cut(string(body), "\r\n\r\n")
	p.PID = strings.TrimSpace(text)
	if p.Key, err = capture.KeyName(); err != nil {
		return p, fmt.Errorf("%s: %w", addr, err)
	}
	return p, nil
}
