package ticketkeys

// The readers of the schedule-invariants harness that are not Go decoders of
// the engine's JSON: the HAProxy push's input (the tls-ticket-keys file and
// the -at-schedule file, as Vault Agent's haproxy template renders them) and
// the nginx Lua module's window parser and schedule rule, run by LuaJIT.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/haproxypush"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// servedKey is one key of a served window, as Agent's templates see it.
type servedKey struct {
	ticketKey, notBefore, encryptUntil, notAfter string
}

// servedKeys returns the keys of a served window in the engine's order.
func servedKeys(served map[string]any) []servedKey {
	keys, _ := served["keys"].([]map[string]interface{})
	out := make([]servedKey, len(keys))
	for i, k := range keys {
		str := func(f string) string { s, _ := k[f].(string); return s }
		out[i] = servedKey{str("ticket_key"), str("not_before"), str("encrypt_until"), str("not_after")}
	}
	return out
}

// sampleInstants are the whole seconds at which a window's readers must pick
// the same encrypting key: the read (rounded up to a second) and the
// not_before, encrypt_until and not_after of every key that still encrypts
// after it, each with the second before, sorted. Those are every instant at
// which the encrypting key can change, up to the end of the schedule; the
// previous keys (most of a window) only decrypt and are left out, which
// keeps the check linear in the keys that matter.
func sampleInstants(keys []servedKey, readAt time.Time) []int64 {
	from := readAt.Truncate(time.Second)
	if from.Before(readAt) {
		from = from.Add(time.Second)
	}
	ats := []int64{from.Unix()}
	for _, k := range keys {
		var times [3]time.Time
		for i, s := range []string{k.notBefore, k.encryptUntil, k.notAfter} {
			times[i], _ = time.Parse(time.RFC3339, s)
		}
		if end := min(times[1].Unix(), times[2].Unix()); end <= from.Unix() {
			continue
		}
		for _, t := range times {
			for _, at := range []int64{t.Unix() - 1, t.Unix()} {
				if at >= from.Unix() {
					ats = append(ats, at)
				}
			}
		}
	}
	slices.Sort(ats)
	return slices.Compact(ats)
}

// encryptingIDs is the id of the key schedule.Window.EncryptingAt picks at
// each instant, "-" where none encrypts.
func encryptingIDs(w *schedule.Window, ats []int64) []string {
	out := make([]string, len(ats))
	for i, at := range ats {
		out[i] = "-"
		if j := w.EncryptingAt(time.Unix(at, 0)); j >= 0 {
			out[i] = w.Keys[j].ID
		}
	}
	return out
}

// timedLines renders keys as Agent's templates render them for the readers
// that follow the times: per key `ticket_key not_before encrypt_until
// not_after` and a newline, in the engine's order (nginx-lua/window.ctmpl,
// and the schedule file of templates/haproxy.hcl.tmpl).
func timedLines(keys []servedKey) string {
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s %s %s\n", k.ticketKey, k.notBefore, k.encryptUntil, k.notAfter)
	}
	return b.String()
}

// idsOf names HAProxy ring lines by key id (never material).
func idsOf(ring []string) string {
	ids := make([]string, len(ring))
	for i, l := range ring {
		ids[i] = haproxypush.KeyID(l)
	}
	return strings.Join(ids, ",")
}

// checkHAProxyPush feeds a haproxy-format window to the push's own code, as
// the haproxy template renders its two files. The tls-ticket-keys file (one
// tls_ticket_keys line each): ParseKeysFile must accept it and push exactly
// those three keys. The schedule file (-at-schedule): ParseScheduleFile must
// accept it, RingAt at the read must be the engine's tls_ticket_keys, and at
// every sample instant RingAt's encrypting (middle) key must be the one
// schedule.Window.EncryptingAt picks, exhausted exactly where none does.
func checkHAProxyPush(data []byte, served map[string]any, readAt time.Time) error {
	lines, _ := served[haproxyLinesField].([]string)
	ring, err := haproxypush.ParseKeysFile([]byte(strings.Join(lines, "\n") + "\n"))
	if err != nil {
		return fmt.Errorf("keys file: %w", err)
	}
	if !slices.Equal(ring, lines) {
		return fmt.Errorf("keys file: parsed ring ids %s, tls_ticket_keys ids %s", idsOf(ring), idsOf(lines))
	}
	served0 := servedKeys(served)
	keys, err := haproxypush.ParseScheduleFile([]byte(timedLines(served0)))
	if err != nil {
		return fmt.Errorf("schedule file: %w", err)
	}
	ring, _, exhausted, _ := haproxypush.RingAt(keys, readAt)
	if exhausted || !slices.Equal(ring, lines) {
		return fmt.Errorf("schedule file: ring at the read has ids %s (exhausted %t), tls_ticket_keys ids %s",
			idsOf(ring), exhausted, idsOf(lines))
	}
	w, err := schedule.Decode(data, formatHAProxy)
	if err != nil {
		return err
	}
	ats := sampleInstants(served0, readAt)
	for i, want := range encryptingIDs(w, ats) {
		at := time.Unix(ats[i], 0)
		_, ids, exhausted, _ := haproxypush.RingAt(keys, at)
		got := "-"
		if !exhausted {
			got = ids[1]
		}
		if got != want {
			return fmt.Errorf("schedule file: at %s the push's ring encrypts with %s (exhausted %t), schedule.Window.EncryptingAt picks %s",
				at.UTC().Format(time.RFC3339), got, exhausted, want)
		}
	}
	return nil
}

// luaWindow is one nginx-format window a history served, rendered as
// window.ctmpl renders it, with the key schedule.Window.EncryptingAt picks
// at each sample instant.
type luaWindow struct {
	name   string
	readAt time.Time
	file   string
	ats    []int64
	want   []string
}

// luaChecker runs resty.ticketkeys' parser and schedule rule
// (nginx/luatest/windowcheck.lua) under LuaJIT.
type luaChecker struct {
	luajit string // "": LuaJIT is not installed
	dir    string // batch files
}

// historyLua is the LuaJIT checker of TestScheduleInvariantsOverHistories
// (nil: histories collect no nginx windows).
var historyLua *luaChecker

// findLuaJIT returns Debian's luajit (scripts/debian-packages.txt installs
// luajit2, OpenResty's branch, the one nginx's Lua module links), else the
// LuaJIT of an OpenResty build in ~/.cache/ticketkeys, else "".
func findLuaJIT() string {
	if p, err := exec.LookPath("luajit"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	builds, _ := filepath.Glob(filepath.Join(home, ".cache", "ticketkeys", "openresty-*", "luajit", "bin", "luajit"))
	if len(builds) > 0 {
		return builds[len(builds)-1]
	}
	return ""
}

// collectLua records a served nginx-format window for the end of the
// history's LuaJIT batch; a file already collected is skipped (its first
// read samples every later instant).
func (h *history) collectLua(name string, data []byte, served map[string]any, readAt time.Time) {
	if historyLua == nil || historyLua.luajit == "" {
		return
	}
	keys := servedKeys(served)
	file := timedLines(keys)
	if h.luaSeen[file] {
		return
	}
	w, err := schedule.Decode(data, formatNginx)
	if err != nil {
		return // the schedule (nginx) decoder reports it
	}
	if h.luaSeen == nil {
		h.luaSeen = map[string]bool{}
	}
	h.luaSeen[file] = true
	ats := sampleInstants(keys, readAt)
	h.luaWindows = append(h.luaWindows, luaWindow{name: name, readAt: readAt, file: file, ats: ats, want: encryptingIDs(w, ats)})
}

// checkLua runs the collected windows through the Lua module in one LuaJIT
// process: each must parse, and pick at each sample instant the key
// schedule.Window.EncryptingAt picks.
func (h *history) checkLua() {
	if len(h.luaWindows) == 0 || h.violation != "" {
		return
	}
	var batch bytes.Buffer
	for _, lw := range h.luaWindows {
		ats := make([]string, len(lw.ats))
		for i, at := range lw.ats {
			ats[i] = strconv.FormatInt(at, 10)
		}
		fmt.Fprintf(&batch, "W %d %s\n%s", strings.Count(lw.file, "\n"), strings.Join(ats, ","), lw.file)
	}
	f, err := os.CreateTemp(historyLua.dir, "windows-*.txt")
	if err != nil {
		h.violate("LuaJIT batch: %v", err)
		return
	}
	defer os.Remove(f.Name())
	_, err = f.Write(batch.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	clear(batch.Bytes())
	if err != nil {
		h.violate("LuaJIT batch: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, historyLua.luajit, filepath.Join("nginx", "luatest", "windowcheck.lua"), filepath.Join("nginx", "lib"), f.Name())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		h.violate("LuaJIT (%s) running resty.ticketkeys over %d windows: %v: %s", historyLua.luajit, len(h.luaWindows), err, strings.TrimSpace(stderr.String()))
		return
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != len(h.luaWindows) {
		h.violate("LuaJIT answered %d lines for %d windows", len(lines), len(h.luaWindows))
		return
	}
	for i, lw := range h.luaWindows {
		when := lw.readAt.Sub(testStart).Round(time.Millisecond)
		got, ok := strings.CutPrefix(lines[i], "ok ")
		if !ok {
			h.violate("resty.ticketkeys (LuaJIT) refuses the window of %q read at +%s, as window.ctmpl renders it: %s", lw.name, when, lines[i])
			return
		}
		picks := strings.Split(got, ",")
		if len(picks) != len(lw.ats) {
			h.violate("resty.ticketkeys (LuaJIT) answered %d instants for %d of the window of %q read at +%s", len(picks), len(lw.ats), lw.name, when)
			return
		}
		for j, at := range lw.ats {
			if picks[j] != lw.want[j] {
				h.violate("resty.ticketkeys (LuaJIT) encrypts with %s at %s in the window of %q read at +%s; schedule.Window.EncryptingAt picks %s",
					picks[j], time.Unix(at, 0).UTC().Format(time.RFC3339), lw.name, when, lw.want[j])
				return
			}
		}
	}
}
