package nginx_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/layoutprobe"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// The arm64 tests run Debian 12's arm64 nginx 1.22.1 (with its http Lua and stream modules and the
// arm64 libluajit2) on this machine under qemu-user (servertest.Arm64Nginx): the module's own code path
// under the arm64 LuaJIT and ABI. qemu runs every instruction through its translator, so they keep to one
// worker per node and few handshakes.
//
// What qemu-user cannot show: it maps the guest's address space into the host's, so on an x86_64 host
// (47-bit user space) the emulated nginx's pointers lie below 2^47, not near 0xaaaa... (binary, heap) and
// 0xffff... (libraries) as on arm64 hardware, where the module's old pointer guard (everything at or above
// 0x800000000000 refused) refused every block. The module before the fix passes the two qemu tests too;
// TestArm64PlatformRule holds the address rule with real arm64 addresses (and fails on that module, which
// has no rule per platform).

// arm64Wait bounds how long an emulated node may take to install a window (a few seconds suffice).
const arm64Wait = 20 * time.Second

// TestArm64InstallsWindow starts one arm64 node (http and stream) and proves that the worker installs the
// window in every block, that a fresh ticket is encrypted under the window's first key, and that the
// module's layout row, computed under the arm64 LuaJIT, is the one the arm64 C compiler gives for Debian's
// nginx 1.22.1 headers (layoutprobe.Arm64Target).
func TestArm64InstallsWindow(t *testing.T) {
	b := servertest.Arm64Nginx(t)
	cert := testcert.New(t, testcert.ECDSAP256)
	keys := luatest.NewKeys(t, 2, 80)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: newWindow(t, keys), Cert: cert, Stream: true, Workers: 1})
	st := inst.WaitIDs(t, luatest.IDs(keys), arm64Wait)
	for pid, s := range st {
		kinds := map[string]int{}
		for _, blk := range s.Blocks {
			kinds[blk.Kind]++
		}
		if kinds["http"] != 2 || kinds["stream"] != 1 || s.LastError != "" || s.Source != "file" {
			t.Errorf("arm64 worker %d: blocks %v, source %q, last error %q; want 2 http blocks (https and the status server, which inherits the http-level placeholders) and 1 stream block from the file", pid, kinds, s.Source, s.LastError)
		}
	}
	for _, v := range versions {
		for _, a := range []struct {
			addr   string
			stream bool
		}{{inst.HTTPS, false}, {inst.Stream, true}} {
			id, err := luatest.TicketKeyName(cert, v.v, a.addr, a.stream)
			if err != nil {
				t.Fatal(err)
			}
			if id != luatest.ID(keys[0]) {
				t.Errorf("%s %s: ticket under key %s, want the window's first key %s", v.name, a.addr, id, luatest.ID(keys[0]))
			}
		}
	}
	if errs := errorLines(inst.Proc.Log()); len(errs) > 0 {
		t.Errorf("unexpected errors:\n%s", strings.Join(errs, "\n"))
	}

	// The layout row the module computes on arm64 (its FFI structs under the arm64 LuaJIT) is the row
	// the arm64 C compiler gives for Debian's nginx 1.22.1 headers: probe.c cross-compiled by
	// aarch64-linux-gnu-gcc against the configured tree (configured on x86_64: both are LP64 Linux, so
	// its feature macros hold for arm64) and the arm64 OpenSSL/PCRE2 headers, run under qemu.
	if _, err := exec.LookPath("aarch64-linux-gnu-gcc"); err != nil {
		t.Fatalf("aarch64-linux-gnu-gcc not found: install the Debian package gcc-aarch64-linux-gnu (scripts/debian-packages.txt)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tree, err := layoutprobe.DebianTree(ctx, cacheDir(t))
	if err != nil {
		t.Fatalf("Debian's nginx tree for the layout probe: %v", err)
	}
	probe, err := layoutprobe.ProbeTarget(ctx, tree, layoutprobe.Arm64Target(b.Sysroot))
	if err != nil {
		t.Fatal(err)
	}
	if probe.NginxVersionString != b.Version || probe.PointerSize != 8 {
		t.Fatalf("the probed headers are nginx %s (pointer size %d), the arm64 binary nginx %s", probe.NginxVersionString, probe.PointerSize, b.Version)
	}
	body := inst.Layout(t)
	var lua layoutprobe.Row
	if err := json.Unmarshal(body, &lua); err != nil {
		t.Fatalf("decode the module's arm64 row %q: %v", body, err)
	}
	if d := layoutprobe.Diff(probe, &lua); len(d) > 0 {
		t.Errorf("the module's layout on arm64 disagrees with the arm64 compiler's:\n  %s", strings.Join(d, "\n  "))
	} else {
		pj, _ := json.Marshal(probe)
		t.Logf("arm64: the module's layout matches aarch64-linux-gnu-gcc's for nginx %s: %s", b.Version, pj)
	}
}

// TestArm64ResumesAcrossNodes is the arm64 end-to-end check: two arm64 nginx nodes (one worker each,
// http and stream) install a window, then a rotation (a new window file: the next key becomes current,
// a new next key, the old current kept as previous). Resumption across the nodes is checked with the
// host's openssl s_client (-sess_out on one node, -sess_in on the other), TLS 1.2 and 1.3, before and
// after the rotation, and a session from before the rotation still resumes after it.
func TestArm64ResumesAcrossNodes(t *testing.T) {
	b := servertest.Arm64Nginx(t)
	opensslBin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl not found: install the Debian package openssl")
	}
	cert := testcert.New(t, testcert.ECDSAP256)
	_, _, caFile := cert.WritePEM(t.TempDir())
	keys := luatest.NewKeys(t, 3, 80) // current, next; keys[2] arrives with the rotation
	window := newWindow(t, keys[:2])
	cfg := luatest.Config{Nginx: b, Window: window, Cert: cert, Stream: true, Workers: 1}
	nodes := []*luatest.Instance{luatest.Start(t, cfg), luatest.Start(t, cfg)}
	for _, n := range nodes {
		n.WaitIDs(t, luatest.IDs(keys[:2]), arm64Wait)
	}
	sessions := t.TempDir()
	type target struct {
		name   string
		addr   func(*luatest.Instance) string
		stream bool
	}
	targets := []target{
		{"http", func(i *luatest.Instance) string { return i.HTTPS }, false},
		{"stream", func(i *luatest.Instance) string { return i.Stream }, true},
	}
	before := map[string]string{}
	cross := func(phase string) {
		for _, tg := range targets {
			for _, v := range []string{"-tls1_2", "-tls1_3"} {
				sess := filepath.Join(sessions, phase+"-"+tg.name+v+".pem")
				if r := sClient(t, opensslBin, caFile, v, tg.addr(nodes[0]), tg.stream, "", sess); r {
					t.Fatalf("%s %s %s: a first handshake without a session resumed", phase, tg.name, v)
				}
				if !sClient(t, opensslBin, caFile, v, tg.addr(nodes[1]), tg.stream, sess, "") {
					t.Errorf("%s %s %s: a session from node A did not resume on node B", phase, tg.name, v)
				}
				before[tg.name+v] = sess
			}
		}
	}
	cross("window")
	old := map[string]string{}
	for k, v := range before {
		old[k] = v
	}

	// Rotation: a new window file, written atomically as Agent does.
	rotated := [][]byte{keys[1], keys[2], keys[0]}
	luatest.WriteWindow(t, window, rotated)
	for _, n := range nodes {
		n.WaitIDs(t, luatest.IDs(rotated), arm64Wait)
	}
	id, err := luatest.TicketKeyName(cert, tls.VersionTLS13, nodes[1].HTTPS, false)
	if err != nil {
		t.Fatal(err)
	}
	if id != luatest.ID(keys[1]) {
		t.Errorf("after the rotation node B encrypts under %s, want the new current key %s", id, luatest.ID(keys[1]))
	}
	cross("rotated")
	// A session node A issued before the rotation (under the now previous key) resumes on node B.
	for _, tg := range targets {
		for _, v := range []string{"-tls1_2", "-tls1_3"} {
			if !sClient(t, opensslBin, caFile, v, tg.addr(nodes[1]), tg.stream, old[tg.name+v], "") {
				t.Errorf("%s %s: a session from before the rotation did not resume on node B after it", tg.name, v)
			}
		}
	}
	for i, n := range nodes {
		if errs := errorLines(n.Proc.Log()); len(errs) > 0 {
			t.Errorf("node %d: unexpected errors:\n%s", i, strings.Join(errs, "\n"))
		}
	}
}

// sClient runs the host's openssl s_client once against addr in one TLS version (-tls1_2 or -tls1_3),
// offering the session in sessIn (if set) and saving the server's session to sessOut (if set), and
// reports whether the session was resumed. For http it sends an HTTP/1.0 request, for stream nothing;
// either way the server answers and closes, so TLS 1.3 tickets arrive before s_client ends (-ign_eof).
// s_client's output holds the session's secrets: it is parsed here and never logged (a failure shows
// only its verification and error lines).
func sClient(t *testing.T, bin, caFile, version, addr string, stream bool, sessIn, sessOut string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"s_client", "-connect", addr, "-servername", testcert.ServerName, "-CAfile", caFile,
		"-verify_return_error", version, "-ign_eof"}
	if sessIn != "" {
		args = append(args, "-sess_in", sessIn)
	}
	if sessOut != "" {
		args = append(args, "-sess_out", sessOut)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	if !stream {
		cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
	}
	out, err := cmd.CombinedOutput()
	var resumed, fresh bool
	var safe []string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "Reused, "):
			resumed = true
		case strings.HasPrefix(line, "New, "):
			fresh = true
		case strings.Contains(line, "erify return code") || strings.Contains(line, ":error:") || strings.HasPrefix(line, "connect"):
			safe = append(safe, line)
		}
	}
	if err != nil || (!resumed && !fresh) {
		t.Fatalf("openssl s_client %s %s: %v; no session line; its verification and error lines:\n%s", version, addr, err, strings.Join(safe, "\n"))
	}
	if sessOut != "" {
		if fi, err := os.Stat(sessOut); err != nil || fi.Size() == 0 {
			t.Fatalf("openssl s_client %s %s saved no session (%v)", version, addr, err)
		}
		if b, _ := os.ReadFile(sessOut); !bytes.Contains(b, []byte("BEGIN SSL SESSION PARAMETERS")) {
			t.Fatalf("openssl s_client %s %s: %s holds no session", version, addr, sessOut)
		}
	}
	return resumed
}

// TestArm64PlatformRule holds the module's platform rule under the host's LuaJIT (Debian's luajit2,
// no nginx): a pointer is plausible below 2^47 on x86_64 and below 2^48 on arm64 (where Debian's
// binaries and heap sit near 0xaaaa... and libraries near 0xffff...), aligned and above 64 KiB; the tested
// platforms are accepted, and any other (32-bit, big-endian, another CPU or OS) is refused naming it.
func TestArm64PlatformRule(t *testing.T) {
	luajit, err := exec.LookPath("luajit")
	if err != nil {
		t.Fatalf("luajit not found: install the Debian package luajit2 (scripts/debian-packages.txt)")
	}
	script := `
package.path = arg[1] .. "/?.lua;" .. package.path
local tk = require "resty.ticketkeys"
local function p(arch, v) io.write(arch, " ", tostring(v):gsub("ULL$", ""), " ", tostring(tk._plausible_on(arch, v)), "\n") end
for _, arch in ipairs({ "x64", "arm64" }) do
    for _, v in ipairs({ 0x10000ULL, 0x7ffffffff000ULL, 0x800000000000ULL, 0xaaaaf0001000ULL,
        0xffff80001000ULL, 0xfffffffff000ULL, 0x1000000000000ULL, 0x0f00aaaaf0001000ULL, 0xaaaaf0001004ULL, 0x8000ULL }) do
        p(arch, v)
    end
end
for _, c in ipairs({ { "Linux", "x64", true, true }, { "Linux", "arm64", true, true },
    { "Linux", "arm64be", true, false }, { "Linux", "x86", false, true }, { "Linux", "arm", false, true },
    { "Linux", "ppc", true, false }, { "OSX", "arm64", true, true } }) do
    local ok, err = tk._platform(c[1], c[2], c[3], c[4])
    io.write("platform ", c[1], " ", c[2], " ", ok and ("ok " .. ok.name) or ("refused: " .. err), "\n")
end
`
	file := filepath.Join(t.TempDir(), "platform.lua")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(luajit, file, luatest.LibDir(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("luajit: %v\n%s", err, out)
	}
	got := string(out)
	want := []string{
		// x86_64: the canonical lower half only.
		"x64 65536 true", "x64 140737488351232 true", "x64 140737488355328 false",
		"x64 187651147698176 false", "x64 281472829231104 false",
		// arm64: 48-bit user space, binaries and heap near 0xaaaa..., libraries near 0xffff....
		"arm64 65536 true", "arm64 140737488351232 true", "arm64 140737488355328 true",
		"arm64 187651147698176 true", "arm64 281472829231104 true", "arm64 281474976706560 true",
		"arm64 281474976710656 false", "arm64 1081051561716617216 false", "arm64 187651147698180 false",
		"arm64 32768 false",
		"platform Linux x64 ok x86_64", "platform Linux arm64 ok arm64 (aarch64)",
	}
	for _, w := range want {
		if !strings.Contains(got, w+"\n") {
			t.Errorf("want %q in the module's answers:\n%s", w, got)
		}
	}
	for _, refused := range []string{"Linux arm64be", "Linux x86", "Linux arm", "Linux ppc", "OSX arm64"} {
		line := ""
		for _, l := range strings.Split(got, "\n") {
			if strings.HasPrefix(l, "platform "+refused+" ") {
				line = l
			}
		}
		if !strings.Contains(line, "refused: this nginx runs on "+refused+" ") || !strings.Contains(line, "tested only on Linux x86_64 and Linux arm64") {
			t.Errorf("platform %s: %q, want a refusal naming it and the tested platforms", refused, line)
		}
	}
}

// TestArm64ModuleTests runs some of the module's tests of every build on the arm64 nginx under qemu:
// the schedule and key-field vectors on the arm64 LuaJIT (the module's parser, schedule rule and key
// element writes, both struct generations), every bad kind of window file keeping the keys, and windows
// growing and shrinking past the placeholder capacity (malloc'd key arrays).
func TestArm64ModuleTests(t *testing.T) {
	for _, c := range []struct {
		name string
		run  func(*testing.T, *servertest.NginxBuild)
	}{
		{"ScheduleVectors", testScheduleVectors},
		{"BadWindowKeepsKeys", testBadWindowKeepsKeys},
		{"GrowAndShrink", testGrowAndShrink},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, servertest.Arm64Nginx(t)) })
	}
}
