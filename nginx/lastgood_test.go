package nginx_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
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

// reloadAndSettle reloads inst (SIGHUP) and waits until none of the workers from before remain and the
// new ones are all running.
func reloadAndSettle(t *testing.T, inst *luatest.Instance, workers int) []int {
	t.Helper()
	before := inst.Proc.WorkerPIDs()
	inst.Proc.Reload(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		now := inst.Proc.WorkerPIDs()
		old := false
		for _, p := range now {
			if slices.Contains(before, p) {
				old = true
			}
		}
		if !old && len(now) == workers {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reload: workers %v (before %v), want %d new ones; log:\n%s", now, before, workers, inst.Proc.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killAndSettle kills one worker of inst and waits until the master has respawned it.
func killAndSettle(t *testing.T, inst *luatest.Instance) int {
	t.Helper()
	before := inst.Proc.WorkerPIDs()
	victim := before[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatalf("kill worker %d: %v", victim, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := inst.Proc.WorkerPIDs()
		if len(after) == len(before) && !slices.Contains(after, victim) {
			return victim
		}
		if time.Now().After(deadline) {
			t.Fatalf("master did not respawn worker %d: workers %v", victim, after)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// resumesFrom fails the test unless tickets from other resume on inst, https and stream, TLS 1.2 and
// 1.3, tries times each (so that both workers of inst answer some).
func resumesFrom(t *testing.T, cert *testcert.Cert, other, inst *luatest.Instance, tries int, when string) {
	t.Helper()
	for _, v := range versions {
		for i := range tries {
			if !luatest.CrossResumes(t, cert, v.v, other.HTTPS, inst.HTTPS, false) {
				t.Fatalf("%s: %s try %d: https ticket from the other node not resumed; status %+v", when, v.name, i, inst.StatusAll(t))
			}
			if !luatest.CrossResumes(t, cert, v.v, other.Stream, inst.Stream, true) {
				t.Fatalf("%s: %s try %d: stream ticket from the other node not resumed; status %+v", when, v.name, i, inst.StatusAll(t))
			}
		}
	}
}

// TestLastGoodWindowAcrossReloadAndRespawn proves issue 19 item 3: with start{ shared_dict = ... }, the
// workers of a reload and a respawned worker, which find the window file bad or unreadable, install the
// last good window another worker of this nginx stored, say so in their status and log, and keep
// resuming the tickets of a node holding the same window; a good file wins again and replaces it.
func TestLastGoodWindowAcrossReloadAndRespawn(t *testing.T) {
	eachNginx(t, testLastGoodWindowAcrossReloadAndRespawn)
}

func testLastGoodWindowAcrossReloadAndRespawn(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	keys := luatest.NewKeys(t, 3, 80)
	ids := luatest.IDs(keys)
	fileA, fileB := newWindow(t, keys), newWindow(t, keys)
	a := luatest.Start(t, luatest.Config{Nginx: b, Window: fileA, Cert: cert, Stream: true, SharedDict: "ticketkeys"})
	other := luatest.Start(t, luatest.Config{Nginx: b, Window: fileB, Cert: cert, Stream: true})
	a.WaitIDs(t, ids, 10*time.Second)
	other.WaitIDs(t, ids, 10*time.Second)

	good := string(luatest.WindowBytes(keys))
	luatest.WriteFileAtomic(t, fileA, []byte(good[:len(good)-20])) // truncated: bad
	time.Sleep(500 * time.Millisecond)
	reloadAndSettle(t, a, 2)
	st := a.WaitIDs(t, ids, 10*time.Second)
	for pid, s := range st {
		if s.Source != "shared_dict" || s.SharedDict != "ticketkeys" {
			t.Errorf("worker %d after reload: source %q shared_dict %q, want the last good window from shared_dict ticketkeys", pid, s.Source, s.SharedDict)
		}
	}
	if !strings.Contains(a.Proc.Log(), "the last good window from lua_shared_dict ticketkeys") {
		t.Errorf("no log line says the workers installed the last good window from the shared dict; log:\n%s", a.Proc.Log())
	}
	resumesFrom(t, cert, other, a, 10, "bad file, after reload")

	if err := os.Remove(fileA); err != nil { // unreadable now
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	victim := killAndSettle(t, a)
	a.WaitIDs(t, ids, 10*time.Second)
	resumesFrom(t, cert, other, a, 10, "unreadable file, after a respawn")
	reloadAndSettle(t, a, 2)
	a.WaitIDs(t, ids, 10*time.Second)
	resumesFrom(t, cert, other, a, 10, "unreadable file, after a second reload")

	// A good file wins and becomes the last good window: a reload during the next bad period keeps it.
	next := luatest.NewKeys(t, 2, 80)
	luatest.WriteWindow(t, fileA, next)
	luatest.WriteWindow(t, fileB, next)
	st = a.WaitIDs(t, luatest.IDs(next), 10*time.Second)
	for pid, s := range st {
		if s.Source != "file" {
			t.Errorf("worker %d with a good file: source %q, want file", pid, s.Source)
		}
	}
	other.WaitIDs(t, luatest.IDs(next), 10*time.Second)
	luatest.WriteFileAtomic(t, fileA, []byte("not*base64\n"))
	time.Sleep(500 * time.Millisecond)
	reloadAndSettle(t, a, 2)
	a.WaitIDs(t, luatest.IDs(next), 10*time.Second)
	resumesFrom(t, cert, other, a, 5, "the newer window, bad file, after reload")
	assertNoMaterial(t, a.Proc.Log(), append(keys, next...))
	t.Logf("bad file + reload, unreadable file + killed worker %d + reload, newer window + bad file + reload: every worker held the last good window (source shared_dict) and resumed the other node's tickets", victim)
}

// TestPlaceholderIsFreshPerStart proves issue 19 item 5: without any window (no file, an empty shared
// dict), the workers of one nginx start encrypt with one random placeholder they share, new at every
// start (never the placeholder file's key), kept across a reload, and replaced by the first window.
func TestPlaceholderIsFreshPerStart(t *testing.T) {
	eachNginx(t, testPlaceholderIsFreshPerStart)
}

func testPlaceholderIsFreshPerStart(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	missing := filepath.Join(t.TempDir(), "web.window")
	var seen []string
	var first *luatest.Instance
	for start := range 2 {
		inst := luatest.Start(t, luatest.Config{Nginx: b, Window: missing, Cert: cert, Stream: true, SharedDict: "ticketkeys"})
		if first == nil {
			first = inst
		}
		id := placeholderOf(t, cert, inst)
		if slices.Contains(seen, id) {
			t.Fatalf("start %d: placeholder %s repeats an earlier start's (%v)", start, id, seen)
		}
		seen = append(seen, id)
	}
	// A reload keeps the placeholder (the shared dict survives it): old and new workers share it.
	was := seen[0]
	reloadAndSettle(t, first, 2)
	if id := placeholderOf(t, cert, first); id != was {
		t.Errorf("after a reload the placeholder is %s, want the same %s", id, was)
	}
	keys := luatest.NewKeys(t, 2, 80)
	luatest.WriteWindow(t, missing, keys)
	first.WaitIDs(t, luatest.IDs(keys), 10*time.Second)
	t.Logf("two starts: placeholders %v, each shared by both workers (status and tickets), none the file's; kept across a reload; replaced by the window", seen)
}

// placeholderOf returns the one placeholder key id every worker and block of inst reports, after
// checking that it is not the placeholder file's, that the status calls it the placeholder, and that
// TLS 1.2 tickets from both workers carry it.
func placeholderOf(t *testing.T, cert *testcert.Cert, inst *luatest.Instance) string {
	t.Helper()
	var id string
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := inst.StatusAll(t)
		id = ""
		same := true
		for _, s := range st {
			for _, blk := range s.Blocks {
				if len(blk.Keys) != 1 || (id != "" && blk.Keys[0].ID != id) || s.Source != "placeholder" {
					same = false
				}
				if len(blk.Keys) > 0 {
					id = blk.Keys[0].ID
				}
			}
		}
		if same && id != "" && id != inst.FilePlaceholderID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers do not all hold one fresh placeholder (file placeholder %s): %+v", inst.FilePlaceholderID, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 12 {
		for _, addr := range []struct {
			a      string
			stream bool
		}{{inst.HTTPS, false}, {inst.Stream, true}} {
			got, err := luatest.TicketKeyName(cert, tls.VersionTLS12, addr.a, addr.stream)
			if err != nil {
				t.Fatal(err)
			}
			if got != id {
				t.Fatalf("try %d: ticket from %s under key %s, want the placeholder %s", i, addr.a, got, id)
			}
		}
	}
	return id
}

// faultLocation is a loopback server whose /fault?malloc=N sets the module's test-only fault hook (the
// Nth malloc from now fails; 0: none; with always=1 every malloc from then on fails and the hook stays
// set), runs refresh() and answers "installed" or the error.
func faultLocation(port int) string {
	return fmt.Sprintf(`    server {
        listen 127.0.0.1:%d;
        location = /fault {
            content_by_lua_block {
                local tk = require("resty.ticketkeys")
                local n = tonumber(ngx.var.arg_malloc) or 0
                local always = ngx.var.arg_always == "1"
                tk._test = n > 0 and { malloc_fail = n, malloc_fail_always = always } or nil
                local ok, err = tk.refresh()
                if not always then
                    tk._test = nil
                end
                ngx.say(ok and "installed" or err)
            }
        }
    }
`, port)
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body))
}

// TestInstallIsAllOrNone proves issue 19 item 6 (b, c): a malloc failure while installing a window
// larger than the placeholder capacity changes no block at all (the http block's array is prepared but
// not switched when the stream block's allocation fails), and the same content installs on the next
// refresh without a change of the file.
func TestInstallIsAllOrNone(t *testing.T) {
	eachNginx(t, testInstallIsAllOrNone)
}

func testInstallIsAllOrNone(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	port := servertest.FreePort(t)
	first := luatest.NewKeys(t, 1, 80)
	window := newWindow(t, first)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, Workers: 1, Capacity: 1,
		Stream: true, Interval: 3600, ExtraHTTP: faultLocation(port)})
	inst.WaitIDs(t, luatest.IDs(first), 10*time.Second)
	url := fmt.Sprintf("http://127.0.0.1:%d/fault", port)
	// Each round needs larger arrays than the last (a shrink stays in place, keeping the capacity).
	for round, n := range []int{2, 1} {
		bigger := luatest.NewKeys(t, 3+2*round, 80)
		luatest.WriteWindow(t, window, bigger)
		got := getBody(t, fmt.Sprintf("%s?malloc=%d", url, n))
		if !strings.Contains(got, "malloc of") || !strings.Contains(got, "no block changed") {
			t.Fatalf("malloc %d failing: refresh answered %q, want the malloc failure and no block changed", n, got)
		}
		st := inst.StatusAll(t)
		if !luatest.AllBlocksHave(st, luatest.IDs(first)) {
			t.Fatalf("malloc %d failing: the blocks are not all on the previous window %v: %+v", n, luatest.IDs(first), st)
		}
		// The same content, unchanged file: the next refresh installs it.
		if got := getBody(t, url+"?malloc=0"); got != "installed" {
			t.Fatalf("retry without a file change answered %q, want installed", got)
		}
		inst.WaitIDs(t, luatest.IDs(bigger), 5*time.Second)
		first = bigger
		// Back to one key, in place, for the next round.
		one := luatest.NewKeys(t, 1, 80)
		luatest.WriteWindow(t, window, one)
		if got := getBody(t, url+"?malloc=0"); got != "installed" {
			t.Fatalf("one key: %q", got)
		}
		first = one
	}
}

// TestRefusedLayoutRepeats proves issue 19 item 6 (a): a worker whose nginx the version gate refuses
// logs it again every error_repeat, not once.
func TestRefusedLayoutRepeats(t *testing.T) {
	eachNginx(t, testRefusedLayoutRepeats)
}

func testRefusedLayoutRepeats(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	// Test hook: this worker's copy of its layout row ends before its own version, so the gate refuses it.
	refuse := `local l = require("resty.ticketkeys")._find_layout(ngx.config.nginx_version); l.max = l.min - 1;`
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: newWindow(t, luatest.NewKeys(t, 1, 80)), Cert: cert,
		ErrorRepeat: 1, InitLua: refuse})
	deadline := time.Now().Add(10 * time.Second)
	var lines []string
	for time.Now().Before(deadline) {
		if lines = errorLines(inst.Proc.Log()); len(lines) >= 6 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(lines) < 6 {
		t.Fatalf("got %d error lines in 10 s with error_repeat 1, want the refusal repeated (>= 6 for 2 workers):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		// The emptied row is in the middle ("falls in no known layout row") or the last one ("is newer").
		if !strings.Contains(l, "("+b.Version) && !strings.Contains(l, "nginx "+b.Version) || !strings.Contains(l, "refusing to write") {
			t.Errorf("error line %q does not name the refusal", l)
		}
	}
}

// TestRepeatedErrorNamesCurrentCause proves issue 19 item 6 (d): when the cause of a lasting failure
// changes, the next error line and the status name the new cause, later repeats never the old one, and
// the status clears when the failure ends.
func TestRepeatedErrorNamesCurrentCause(t *testing.T) {
	eachNginx(t, testRepeatedErrorNamesCurrentCause)
}

func testRepeatedErrorNamesCurrentCause(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	keys := luatest.NewKeys(t, 2, 80)
	window := newWindow(t, keys)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, ErrorRepeat: 1, SharedDict: "ticketkeys"})
	inst.WaitIDs(t, luatest.IDs(keys), 10*time.Second)
	causes := []struct {
		write func()
		rule  string
	}{
		{func() { luatest.WriteFileAtomic(t, window, []byte("not*base64\n")) }, "is not standard base64"},
		{func() { _ = os.Remove(window) }, "cannot read window file"},
		{func() { luatest.WriteFileAtomic(t, window, []byte{}) }, "is empty"},
	}
	for i, c := range causes {
		c.write()
		time.Sleep(300 * time.Millisecond)
		before := len(inst.Proc.Log())
		time.Sleep(2500 * time.Millisecond)
		lines := errorLines(inst.Proc.Log()[before:])
		if len(lines) < 2 {
			t.Fatalf("cause %d (%s): %d error lines in 2.5 s with error_repeat 1, want repeats", i, c.rule, len(lines))
		}
		for _, l := range lines {
			if !strings.Contains(l, c.rule) {
				t.Fatalf("cause %d: a repeat names another cause than %q: %q", i, c.rule, l)
			}
		}
		for pid, s := range inst.StatusAll(t) {
			if !strings.Contains(s.LastError, c.rule) {
				t.Fatalf("cause %d: worker %d status last_error %q, want %q", i, pid, s.LastError, c.rule)
			}
		}
	}
	luatest.WriteWindow(t, window, keys)
	time.Sleep(600 * time.Millisecond)
	for pid, s := range inst.StatusAll(t) {
		if s.LastError != "" {
			t.Errorf("worker %d: last_error %q after the file is good again, want none", pid, s.LastError)
		}
	}

	// Two causes at once (an install that fails, a file that is gone) are both named; when one ends,
	// the repeats name only the other.
	port := servertest.FreePort(t)
	one := luatest.NewKeys(t, 1, 80)
	w2 := newWindow(t, one)
	n := luatest.Start(t, luatest.Config{Nginx: b, Window: w2, Cert: cert, Workers: 1, Capacity: 1, ErrorRepeat: 1,
		ExtraHTTP: faultLocation(port)})
	n.WaitIDs(t, luatest.IDs(one), 10*time.Second)
	fault := fmt.Sprintf("http://127.0.0.1:%d/fault", port)
	getBody(t, fault+"?malloc=1&always=1")
	luatest.WriteWindow(t, w2, luatest.NewKeys(t, 3, 80))
	linesAfter := func(what string, settle time.Duration) []string {
		time.Sleep(settle)
		from := len(n.Proc.Log())
		time.Sleep(2500 * time.Millisecond)
		lines := errorLines(n.Proc.Log()[from:])
		if len(lines) < 2 {
			t.Fatalf("%s: %d error lines in 2.5 s with error_repeat 1, want repeats; log:\n%s", what, len(lines), n.Proc.Log())
		}
		return lines
	}
	for _, l := range linesAfter("install failing", 500*time.Millisecond) {
		if !strings.Contains(l, "malloc of") {
			t.Fatalf("install failing: %q does not name the malloc failure", l)
		}
	}
	if err := os.Remove(w2); err != nil {
		t.Fatal(err)
	}
	for _, l := range linesAfter("install failing, file gone", 300*time.Millisecond) {
		if !strings.Contains(l, "malloc of") || !strings.Contains(l, "cannot read window file") {
			t.Fatalf("install failing and file gone: %q does not name both causes", l)
		}
	}
	getBody(t, fault+"?malloc=0") // the install works again (from the window in memory)
	for _, l := range linesAfter("file gone", 300*time.Millisecond) {
		if strings.Contains(l, "malloc of") || !strings.Contains(l, "cannot read window file") {
			t.Fatalf("file gone, install working: %q names a cause that ended, or not the current one", l)
		}
	}
}
