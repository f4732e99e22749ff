package nginx_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

var versions = []struct {
	name string
	v    uint16
}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}

// eachNginx runs body as a subtest for every nginx build the module supports and the tests run, all
// at the same time: Debian's nginx 1.22.1 and each OpenResty line (built from the source kit on first
// use; skipped with a reason without the kit, failed in CI). Ports are picked free per instance.
func eachNginx(t *testing.T, body func(t *testing.T, b *servertest.NginxBuild)) {
	servertest.EachNginx(t, body)
}

// wantLayout is the layout row the build's nginx version must select (layoutOf).
func wantLayout(t *testing.T, b *servertest.NginxBuild) string {
	t.Helper()
	l, ok := layoutOf[b.Version]
	if !ok {
		t.Fatalf("no expected layout for nginx %s (%s): add it to layoutOf and to docs/nginx-lua.md", b.Version, b.Name)
	}
	return l
}

// newWindow returns a temp window path holding keys.
func newWindow(t *testing.T, keys [][]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "web.window")
	luatest.WriteWindow(t, p, keys)
	return p
}

// TestInstallsWindowInEveryWorker proves that each worker, at start, holds the window in every http and
// stream TLS server block, in file order, with the first key as the only encrypting one.
func TestInstallsWindowInEveryWorker(t *testing.T) {
	eachNginx(t, testInstallsWindowInEveryWorker)
}

func testInstallsWindowInEveryWorker(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	keys := luatest.NewKeys(t, 3, 80)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: newWindow(t, keys), Cert: cert, Stream: true})
	layout := wantLayout(t, b)
	st := inst.StatusAll(t)
	if len(st) != 2 {
		t.Fatalf("status from %d workers, want 2", len(st))
	}
	want := luatest.IDs(keys)
	for pid, s := range st {
		if s.Layout != layout || s.LayoutError != "" || s.LastError != "" || s.Applies != 1 {
			t.Errorf("worker %d: layout %q (error %q), last error %q, applies %d; want %s, no errors, 1 apply",
				pid, s.Layout, s.LayoutError, s.LastError, s.Applies, layout)
		}
		// A file without times (the earlier template) works as before and says so.
		if s.Follows != "file order" || !strings.Contains(s.FollowsHow, "has no times") {
			t.Errorf("worker %d: follows %q (%q), want \"file order\" for a window file without times", pid, s.Follows, s.FollowsHow)
		}
		kinds := map[string]int{}
		for _, b := range s.Blocks {
			kinds[b.Kind]++
			if !slices.Equal(b.IDs(), want) {
				t.Errorf("worker %d %s server %d: ids %v, want %v", pid, b.Kind, b.Server, b.IDs(), want)
			}
			for i, k := range b.Keys {
				wantState := "decrypt-only"
				if i == 0 {
					wantState = "current"
				}
				if k.State != wantState || k.Size != 80 {
					t.Errorf("worker %d %s server %d key %d: state %q size %d, want %q 80", pid, b.Kind, b.Server, i, k.State, k.Size, wantState)
				}
			}
		}
		// Two http server blocks inherit the http-level certificate (https and status) and one stream block.
		if kinds["http"] != 2 || kinds["stream"] != 1 {
			t.Errorf("worker %d: blocks %v, want 2 http and 1 stream", pid, kinds)
		}
	}
	if n := strings.Count(inst.Proc.Log(), "has no times (an old window.ctmpl): the file's order decides"); n != 2 {
		t.Errorf("%d warnings about the window file without times, want one per worker (2)", n)
	}
	t.Logf("%s (nginx %s, layout %s): 2 workers x 3 blocks hold ids %v", b.Name, b.Version, layout, want)
}

// TestCrossInstanceResumption proves the keys are really used: a ticket issued by one nginx resumes on
// another nginx with the same window (https and stream, TLS 1.2 and 1.3, 80- and 48-byte keys), and not
// on a control nginx that kept its own placeholder keys.
func TestCrossInstanceResumption(t *testing.T) {
	eachNginx(t, testCrossInstanceResumption)
}

func testCrossInstanceResumption(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	for _, size := range []int{80, 48} {
		t.Run(fmt.Sprintf("%dbytes", size), func(t *testing.T) {
			window := newWindow(t, luatest.NewKeys(t, 3, size))
			a := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, Stream: true})
			b2 := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, Stream: true})
			control := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, Stream: true, NoStart: true})
			for _, v := range versions {
				for _, stream := range []bool{false, true} {
					from, to, ctl := a.HTTPS, b2.HTTPS, control.HTTPS
					kind := "https"
					if stream {
						from, to, ctl, kind = a.Stream, b2.Stream, control.Stream, "stream"
					}
					resumed := 0
					const tries = 10
					for range tries {
						if luatest.CrossResumes(t, cert, v.v, from, to, stream) {
							resumed++
						}
					}
					if resumed != tries {
						t.Errorf("%s %s: %d of %d tickets from instance A resumed on B, want all", v.name, kind, resumed, tries)
					}
					if luatest.CrossResumes(t, cert, v.v, from, ctl, stream) {
						t.Errorf("%s %s: a ticket from A resumed on the control nginx without the window", v.name, kind)
					}
					t.Logf("%s %s %d-byte keys: %d/%d cross-instance resumptions; control refused", v.name, kind, size, resumed, tries)
				}
			}
		})
	}
}

// keepAlive is one long-lived HTTPS connection that sends a request on demand.
type keepAlive struct {
	c *tls.Conn
	r *bufio.Reader
}

func openKeepAlive(t *testing.T, cert *testcert.Cert, addr string) *keepAlive {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cert.ClientConfig())
	if err != nil {
		t.Fatalf("long-lived connection to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, r: bufio.NewReader(c)}
}

// get sends one keep-alive request and checks the answer "ok".
func (k *keepAlive) get(t *testing.T) {
	t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(k.c, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatalf("long-lived connection: write: %v", err)
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		t.Fatalf("long-lived connection: read: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("long-lived connection: HTTP %d %q", resp.StatusCode, body)
	}
}

// TestRotationWithoutReload proves a rotation reaches running workers: PIDs unchanged, a keep-alive
// connection keeps working, a ticket of the old current key resumes on the other node while that key is
// in the window (as previous) and stops resuming once it leaves the window.
func TestRotationWithoutReload(t *testing.T) {
	eachNginx(t, testRotationWithoutReload)
}

func testRotationWithoutReload(t *testing.T, build *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	k1, k2, k3, k4 := luatest.NewKey(t, 80), luatest.NewKey(t, 80), luatest.NewKey(t, 80), luatest.NewKey(t, 80)
	window := newWindow(t, [][]byte{k1, k2})
	a := luatest.Start(t, luatest.Config{Nginx: build, Window: window, Cert: cert})
	b := luatest.Start(t, luatest.Config{Nginx: build, Window: window, Cert: cert})
	pidsA, pidsB := a.Proc.WorkerPIDs(), b.Proc.WorkerPIDs()
	long := openKeepAlive(t, cert, a.HTTPS)
	long.get(t)

	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			// A ticket made with k1 (current).
			old := luatest.ClientConfig(cert, v.v)
			if _, err := luatest.Handshake(old, a.HTTPS, false); err != nil {
				t.Fatal(err)
			}
			// Rotation: k2 becomes current, k3 next, k1 previous.
			luatest.WriteWindow(t, window, [][]byte{k2, k3, k1})
			a.WaitIDs(t, luatest.IDs([][]byte{k2, k3, k1}), 10*time.Second)
			b.WaitIDs(t, luatest.IDs([][]byte{k2, k3, k1}), 10*time.Second)
			long.get(t)
			oldClone := cloneCache(t, old, a.HTTPS)
			r, err := luatest.Handshake(old, b.HTTPS, false)
			if err != nil || !r {
				t.Fatalf("ticket of the previous key k1 did not resume on B after rotation (resumed=%v, err=%v)", r, err)
			}
			// k1 leaves the window: its tickets stop resuming.
			luatest.WriteWindow(t, window, [][]byte{k3, k4, k2})
			a.WaitIDs(t, luatest.IDs([][]byte{k3, k4, k2}), 10*time.Second)
			b.WaitIDs(t, luatest.IDs([][]byte{k3, k4, k2}), 10*time.Second)
			long.get(t)
			r, err = luatest.Handshake(oldClone, b.HTTPS, false)
			if err != nil {
				t.Fatal(err)
			}
			if r {
				t.Fatalf("a ticket of k1 resumed after k1 left the window")
			}
			// Back to a window starting at k1 for the next TLS version.
			luatest.WriteWindow(t, window, [][]byte{k1, k2})
			a.WaitIDs(t, luatest.IDs([][]byte{k1, k2}), 10*time.Second)
			b.WaitIDs(t, luatest.IDs([][]byte{k1, k2}), 10*time.Second)
		})
	}
	if got := a.Proc.WorkerPIDs(); !slices.Equal(got, pidsA) {
		t.Errorf("instance A worker PIDs changed from %v to %v: a reload or respawn happened", pidsA, got)
	}
	if got := b.Proc.WorkerPIDs(); !slices.Equal(got, pidsB) {
		t.Errorf("instance B worker PIDs changed from %v to %v", pidsB, got)
	}
	long.get(t)
	t.Logf("3 rotations per TLS version; worker PIDs %v and %v unchanged; the long-lived connection answered after each", pidsA, pidsB)
}

// cloneCache returns a copy of cfg with a new session cache holding the session cfg has cached now (a
// ticket issued by addr), so that the ticket can be offered again after cfg's cache moved on.
func cloneCache(t *testing.T, cfg *tls.Config, addr string) *tls.Config {
	t.Helper()
	c := cfg.Clone()
	c.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	if cs, ok := cfg.ClientSessionCache.Get(cfg.ServerName); ok {
		c.ClientSessionCache.Put(cfg.ServerName, cs)
	} else {
		t.Fatalf("no cached session for %s from %s", cfg.ServerName, addr)
	}
	return c
}

// TestBadWindowKeepsKeys proves that each kind of bad window file leaves the installed keys in place and
// makes every worker log one error naming the rule, and that no key material reaches the log.
func TestBadWindowKeepsKeys(t *testing.T) {
	eachNginx(t, testBadWindowKeepsKeys)
}

func testBadWindowKeepsKeys(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	good := luatest.NewKeys(t, 3, 80)
	window := newWindow(t, good)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, Stream: true})
	want := luatest.IDs(good)
	inst.WaitIDs(t, want, 10*time.Second)

	k48 := luatest.NewKey(t, 48)
	dup := append([]byte{}, good[1][:16]...)
	dup = append(dup, luatest.NewKey(t, 64)...)
	goodText := string(luatest.WindowBytes(good))
	var material [][]byte
	material = append(material, good...)
	material = append(material, k48, dup)
	cases := []struct {
		name    string
		content []byte // nil: remove the file
		rule    string
	}{
		{"truncated", []byte(goodText[:len(goodText)-20]), "does not end with a newline"},
		{"wrong size", luatest.WindowBytes([][]byte{good[0][:47]}), "decodes to 47 bytes: a key must be 48 or 80 bytes"},
		{"mixed sizes", luatest.WindowBytes([][]byte{good[0], k48}), "a window never mixes key sizes"},
		{"duplicate names", luatest.WindowBytes([][]byte{good[1], dup}), "repeats the key name"},
		{"empty", []byte{}, "is empty"},
		{"not base64", []byte("not*base64\n"), "is not standard base64"},
		{"blank line", []byte(strings.Replace(goodText, "\n", "\n\n", 1)), "is blank"},
		{"too many keys", luatest.WindowBytes(luatest.NewKeys(t, engineMaxKeys+1, 80)), "has more than 256 keys"},
		{"unreadable", nil, "cannot read window file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(inst.Proc.Log())
			if c.content == nil {
				if err := os.Remove(window); err != nil {
					t.Fatal(err)
				}
			} else {
				luatest.WriteFileAtomic(t, window, c.content)
			}
			// Wait for both workers to log the error (bounded), then a few more intervals for repeats.
			deadline := time.Now().Add(10 * time.Second)
			var lines []string
			for time.Now().Before(deadline) {
				lines = errorLines(inst.Proc.Log()[before:])
				if len(lines) >= 2 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(1 * time.Second) // 5 polling intervals: an error must not repeat
			lines = errorLines(inst.Proc.Log()[before:])
			if len(lines) != 2 {
				t.Fatalf("got %d ticketkeys error lines, want one per worker (2):\n%s", len(lines), strings.Join(lines, "\n"))
			}
			for _, l := range lines {
				if !strings.Contains(l, c.rule) || !strings.Contains(l, "keeping the installed keys") {
					t.Errorf("error line %q does not name the rule %q and the outcome", l, c.rule)
				}
			}
			st := inst.StatusAll(t)
			if !luatest.AllBlocksHave(st, want) {
				t.Fatalf("a bad window (%s) changed the installed keys: %+v", c.name, st)
			}
			t.Logf("%s: 2 workers logged %q; ids unchanged", c.name, c.rule)
			// Restore the good window for the next case.
			luatest.WriteFileAtomic(t, window, []byte(goodText))
			time.Sleep(500 * time.Millisecond)
		})
	}
	assertNoMaterial(t, inst.Proc.Log(), material)
}

// errorLines returns the ticketkeys lines at level error in an nginx log excerpt.
func errorLines(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "[error]") && strings.Contains(l, "ticketkeys: ") {
			out = append(out, l)
		}
	}
	return out
}

// assertNoMaterial fails if the log holds any key's base64, its secret bytes in hex, or a long prefix
// of either.
func assertNoMaterial(t *testing.T, log string, keys [][]byte) {
	t.Helper()
	for i, k := range keys {
		b64 := base64.StdEncoding.EncodeToString(k)
		secretHex := hex.EncodeToString(k[16:])
		for _, s := range []string{b64[:24], b64[len(b64)-24:], secretHex[:24], string(k[16:32])} {
			if strings.Contains(log, s) {
				t.Fatalf("key %d material appears in the nginx log", i)
			}
		}
	}
}

// TestGrowAndShrink proves windows larger than the placeholder capacity (malloc'd arrays, grown twice)
// and smaller ones (in place) install and are used, for 80- and 48-byte keys.
func TestGrowAndShrink(t *testing.T) {
	eachNginx(t, testGrowAndShrink)
}

func testGrowAndShrink(t *testing.T, build *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	for _, size := range []int{80, 48} {
		t.Run(fmt.Sprintf("%dbytes", size), func(t *testing.T) {
			first := luatest.NewKeys(t, 1, size)
			window := newWindow(t, first)
			a := luatest.Start(t, luatest.Config{Nginx: build, Window: window, Cert: cert, Capacity: 1, Stream: true})
			b := luatest.Start(t, luatest.Config{Nginx: build, Window: window, Cert: cert, Capacity: 1, Stream: true})
			for _, n := range []int{5, 2, 9, 1, 16, 3} {
				keys := luatest.NewKeys(t, n, size)
				luatest.WriteWindow(t, window, keys)
				ids := luatest.IDs(keys)
				st := a.WaitIDs(t, ids, 10*time.Second)
				b.WaitIDs(t, ids, 10*time.Second)
				for pid, s := range st {
					for _, blk := range s.Blocks {
						if blk.Capacity < n {
							t.Errorf("worker %d %s server %d: capacity %d < %d keys", pid, blk.Kind, blk.Server, blk.Capacity, n)
						}
					}
				}
				for _, v := range versions {
					if !luatest.CrossResumes(t, cert, v.v, a.HTTPS, b.HTTPS, false) {
						t.Errorf("%d keys %s: https ticket from A did not resume on B", n, v.name)
					}
					if !luatest.CrossResumes(t, cert, v.v, b.Stream, a.Stream, true) {
						t.Errorf("%d keys %s: stream ticket from B did not resume on A", n, v.name)
					}
				}
				t.Logf("%d-byte keys, window of %d: installed in every worker and block, cross-instance resumption in TLS 1.2 and 1.3", size, n)
			}
			if errs := errorLines(a.Proc.Log() + b.Proc.Log()); len(errs) > 0 {
				t.Errorf("unexpected errors:\n%s", strings.Join(errs, "\n"))
			}
		})
	}
}

// TestKilledWorkerComesBack proves a worker respawned by the master (which holds only placeholders)
// installs the current window before serving: its status shows the window and tickets from another node
// resume on it.
func TestKilledWorkerComesBack(t *testing.T) {
	eachNginx(t, testKilledWorkerComesBack)
}

func testKilledWorkerComesBack(t *testing.T, build *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	window := newWindow(t, luatest.NewKeys(t, 2, 80))
	a := luatest.Start(t, luatest.Config{Nginx: build, Window: window, Cert: cert, Stream: true})
	b := luatest.Start(t, luatest.Config{Nginx: build, Window: window, Cert: cert, Stream: true})
	// Rotate once so that the current window differs from anything the master could have had.
	keys := luatest.NewKeys(t, 3, 80)
	luatest.WriteWindow(t, window, keys)
	a.WaitIDs(t, luatest.IDs(keys), 10*time.Second)
	b.WaitIDs(t, luatest.IDs(keys), 10*time.Second)

	before := a.Proc.WorkerPIDs()
	victim := before[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatalf("kill worker %d: %v", victim, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var after []int
	for time.Now().Before(deadline) {
		after = a.Proc.WorkerPIDs()
		if len(after) == len(before) && !slices.Contains(after, victim) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(after) != len(before) || slices.Contains(after, victim) {
		t.Fatalf("master did not respawn worker %d: workers %v", victim, after)
	}
	st := a.StatusAll(t)
	if !luatest.AllBlocksHave(st, luatest.IDs(keys)) {
		t.Fatalf("after respawn, workers %v do not all hold the current window: %+v", after, st)
	}
	for pid, s := range st {
		if !slices.Contains(before, pid) && s.Applies != 1 {
			t.Errorf("respawned worker %d: applies %d, want 1 (installed at start)", pid, s.Applies)
		}
	}
	// Every connection to A (either worker) resumes a ticket from B.
	for _, v := range versions {
		for i := range 20 {
			if !luatest.CrossResumes(t, cert, v.v, b.HTTPS, a.HTTPS, false) {
				t.Fatalf("%s try %d: ticket from B not resumed on A after the worker respawn; A %+v; B %+v", v.name, i, a.StatusAll(t), b.StatusAll(t))
			}
		}
	}
	t.Logf("worker %d killed; workers now %v all hold the current window; 40/40 resumptions", victim, after)
}

// TestLayoutGate proves the version gate maps nginx versions to the known layouts (every supported
// line, up to OpenResty 1.31.1's nginx 1.31.1) and refuses the rest with a reason naming the version and
// the known range: a newer nginx is never mapped to the newest row.
func TestLayoutGate(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	port := servertest.FreePort(t)
	extra := fmt.Sprintf(`    server {
        listen 127.0.0.1:%d;
        location = /layout {
            content_by_lua_block {
                local tk = require("resty.ticketkeys")
                local l, err = tk._find_layout(tonumber(ngx.var.arg_v))
                ngx.say(l and l.name or ("refused: " .. err))
            }
        }
    }
`, port)
	inst := luatest.Start(t, luatest.Config{Window: newWindow(t, luatest.NewKeys(t, 1, 80)), Cert: cert, ExtraHTTP: extra})
	_ = inst
	cases := map[int]string{
		1021004: "nginx-1.21.4",
		1022001: "nginx-1.21.4",
		1023001: "nginx-1.21.4",
		1023002: "nginx-1.23.2",
		1025000: "nginx-1.23.2",
		1025001: "nginx-1.25.1",
		1025003: "nginx-1.25.1",
		1025005: "nginx-1.25.5",
		1027001: "nginx-1.25.5",
		1029001: "nginx-1.29.1",
		1029002: "nginx-1.29.1",
		1029999: "nginx-1.29.1",
		1030000: "nginx-1.29.1",
		1031001: "nginx-1.29.1",
		1031002: "refused: nginx 1.31.2 (1031002) is newer than the newest nginx this module was checked against (1.31.1); known: nginx 1.21.4 to 1.31.1; refusing to write, nginx keeps its own keys",
		1033000: "refused: nginx 1.33.0 (1033000) is newer than the newest nginx this module was checked against (1.31.1)",
		1021003: "refused: nginx 1.21.3 (1021003) is older than the oldest nginx this module knows (1.21.4); known: nginx 1.21.4 to 1.31.1",
	}
	for v, want := range cases {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/layout?v=%d", port, v))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), want) {
			t.Errorf("version %d: %q, want prefix %q", v, body, want)
		}
	}
}

// TestStatusOffByDefault proves the status handler exists only where a location calls it: the https
// server answers its own content for the status path.
func TestStatusOffByDefault(t *testing.T) {
	eachNginx(t, testStatusOffByDefault)
}

func testStatusOffByDefault(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: newWindow(t, luatest.NewKeys(t, 1, 80)), Cert: cert})
	c, err := tls.Dial("tcp", inst.HTTPS, cert.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /ticketkeys/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(c)
	if strings.Contains(string(body), "blocks") || !strings.HasSuffix(string(body), "ok\n") {
		t.Fatalf("status path on a server without the handler answered %q", body)
	}
}

// TestLayoutGuardsRefuse proves the layout guards on every line: with a deliberately wrong layout (a
// wrong ssl flag offset, a wrong core ctx offset, a stream SSL_CTX offset 8 bytes off, the other key
// struct generation) the worker writes nothing, keeps its keys and says which guard failed; with the
// right layout again the next window installs.
func TestLayoutGuardsRefuse(t *testing.T) {
	eachNginx(t, testLayoutGuardsRefuse)
}

func testLayoutGuardsRefuse(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	port := servertest.FreePort(t)
	// One worker, so the hook and the status handler talk to the same process.
	extra := fmt.Sprintf(`    server {
        listen 127.0.0.1:%d;
        location = /break {
            content_by_lua_block {
                local tk = require("resty.ticketkeys")
                local l = tk._find_layout(ngx.config.nginx_version)
                local field, value = ngx.var.arg_field, ngx.unescape_uri(ngx.var.arg_value)
                local saved = l[field]
                if value:sub(1, 1) == "+" then
                    l[field] = saved + tonumber(value:sub(2))
                else
                    l[field] = tonumber(value) or value
                end
                local ok, err = tk.refresh()
                l[field] = saved
                ngx.say(ok and "installed" or err)
            }
        }
    }
`, port)
	first := luatest.NewKeys(t, 2, 80)
	window := newWindow(t, first)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, Workers: 1, Stream: true, ExtraHTTP: extra, Interval: 3600})
	want := luatest.IDs(first)
	inst.WaitIDs(t, want, 10*time.Second)
	var row struct {
		Stream struct {
			SSLCtx int `json:"ssl_ctx"`
		} `json:"stream"`
		Key struct {
			SizeField *int `json:"size_field"`
		} `json:"key"`
	}
	if err := json.Unmarshal(inst.Layout(t), &row); err != nil {
		t.Fatal(err)
	}
	// The other key struct generation names an index symbol this nginx does not export.
	otherKey, otherSymbol := "v2", "ngx_ssl_ticket_keys_index"
	if row.Key.SizeField == nil {
		otherKey, otherSymbol = "v1", "ngx_ssl_session_ticket_keys_index"
	}
	cases := []struct{ field, value, reason string }{
		{"http_ssl_enable", "8", "ssl enable flag is"},
		{"http_core_ctx", "0", "does not point back at itself"},
		{"stream_core_ctx", "+8", "does not point back at itself"},
		{"stream_ssl_ctx", "0", "SSL_CTX pointer at offset 0 is not plausible"},
		// 8 bytes on, the "SSL_CTX" is ngx_ssl_t.log and the "log" is buffer_size, a small number.
		{"stream_ssl_ctx", "+8", fmt.Sprintf("ngx_ssl_t.log after the SSL_CTX at offset %d is not a plausible pointer", row.Stream.SSLCtx+8)},
		{"key", otherKey, "symbol " + otherSymbol + " not found"},
	}
	for _, c := range cases {
		luatest.WriteWindow(t, window, luatest.NewKeys(t, 3, 80))
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/break?field=%s&value=%s", port, c.field, url.QueryEscape(c.value)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), c.reason) || !strings.Contains(string(body), "refusing to write") {
			t.Fatalf("%s=%s: refresh answered %q, want a refusal naming %q; log:\n%s", c.field, c.value, body, c.reason, inst.Proc.Log())
		}
		if st := inst.StatusAll(t); !luatest.AllBlocksHave(st, want) {
			t.Fatalf("%s=%s: keys changed despite the failed guard: %+v", c.field, c.value, st)
		}
		t.Logf("%s=%s: refused (%s), keys unchanged", c.field, c.value, strings.TrimSpace(string(body)))
	}
	// The right layout installs the next window.
	next := luatest.NewKeys(t, 3, 80)
	luatest.WriteWindow(t, window, next)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/break?field=none&value=x", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != "installed" {
		t.Fatalf("correct layout: refresh answered %q, want installed", body)
	}
	inst.WaitIDs(t, luatest.IDs(next), 5*time.Second)
}

// A failure that lasts is not logged once and then forgotten: while the window file stays unreadable,
// every worker logs it again at error level every error_repeat seconds, naming the keys it serves
// meanwhile; a worker that never had a window says it serves the placeholder keys.
func TestLastingFailureIsLoggedPeriodically(t *testing.T) {
	eachNginx(t, testLastingFailureIsLoggedPeriodically)
}

func testLastingFailureIsLoggedPeriodically(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	good := luatest.NewKeys(t, 3, 80)
	window := newWindow(t, good)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, ErrorRepeat: 1})
	inst.WaitIDs(t, luatest.IDs(good), 10*time.Second)

	before := len(inst.Proc.Log())
	if err := os.Remove(window); err != nil {
		t.Fatal(err)
	}
	// Two workers, a repeat every second: at least 3 lines each within 3.5 s (bounded wait).
	deadline := time.Now().Add(10 * time.Second)
	var lines []string
	for time.Now().Before(deadline) {
		if lines = errorLines(inst.Proc.Log()[before:]); len(lines) >= 6 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(lines) < 6 {
		t.Fatalf("got %d ticketkeys error lines while the window file was missing, want repeats (>= 6 for 2 workers):\n%s",
			len(lines), strings.Join(lines, "\n"))
	}
	current := luatest.IDs(good)[0]
	for _, l := range lines {
		if !strings.Contains(l, "cannot read window file") || !strings.Contains(l, "serves the window installed") ||
			!strings.Contains(l, "current id "+current) {
			t.Errorf("error line %q does not say the file is unreadable and which window the worker serves (current id %s)", l, current)
		}
	}

	// A node whose file never existed says it serves nginx's placeholder keys.
	missing := filepath.Join(t.TempDir(), "never.window")
	cold := luatest.Start(t, luatest.Config{Nginx: b, Window: missing, Cert: cert, ErrorRepeat: 1})
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if lines = errorLines(cold.Proc.Log()); len(lines) >= 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(lines) == 0 || !strings.Contains(lines[0], "serves nginx's placeholder keys") {
		t.Fatalf("a worker without a window logged %q; want it to say it serves the placeholder keys", lines)
	}
	assertNoMaterial(t, inst.Proc.Log(), good)
}
