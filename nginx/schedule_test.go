package nginx_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// scheduleLocations are test-only http locations that run the module's pure functions on a request
// body: /schedule parses a window file (after a first line of comma-separated Unix instants) and
// prints the schedule at each instant; /parse_time prints the Unix seconds of each line's RFC 3339 time.
func scheduleLocations(port int) string {
	return fmt.Sprintf(`    server {
        listen 127.0.0.1:%d;
        client_body_buffer_size 1m;
        client_max_body_size 4m;
        location = /schedule {
            content_by_lua_block {
                local tk = require("resty.ticketkeys")
                ngx.req.read_body()
                local body = ngx.req.get_body_data() or ""
                local ats, content = body:match("^([^\n]*)\n(.*)$")
                local w, err = tk._parse_window(content, "w")
                if not w then
                    ngx.say("error: ", err)
                    return
                end
                for at in ats:gmatch("[^,]+") do
                    local r = tk._schedule_at(w, tonumber(at))
                    local parts = {}
                    for _, i in ipairs(r.order) do
                        parts[#parts + 1] = w.ids[i] .. ":" .. r.states[i]
                    end
                    ngx.say(at, " ", r.current and w.ids[r.current] or "-", " ", (r.source or "-"):gsub(" ", "_"), " ",
                        r.next_change and string.format("%%d", r.next_change) or "-", " ",
                        table.concat(parts, ","))
                end
            }
        }
        location = /parse_time {
            content_by_lua_block {
                local tk = require("resty.ticketkeys")
                ngx.req.read_body()
                for line in (ngx.req.get_body_data() or ""):gmatch("[^\n]+") do
                    local t, err = tk._parse_time(line)
                    ngx.say(t and string.format("%%.3f", t) or ("error: " .. err))
                end
            }
        }
    }
`, port)
}

// post sends body to a test location and returns the answer's lines.
func post(t *testing.T, url, body string) []string {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: HTTP %d %v: %s", url, resp.StatusCode, err, out)
	}
	return strings.Split(strings.TrimRight(string(out), "\n"), "\n")
}

// modelKey is one key of a generated window, with Unix-second times.
type modelKey struct {
	key        []byte
	nb, eu, na int64
}

// modelAt is the schedule rule the engine (rotate.go current/window) and the Go client apply, written
// here from docs/api.md as the reference the Lua module is held to: the encrypting key is the
// latest-activated key with not_before <= now < min(encrypt_until, not_after); with none, and every key
// activating after now, the file's first key (the clock is behind); keys are listed encrypting first,
// then next keys by activation, then previous keys newest first, none at or past its not_after.
func modelAt(keys []modelKey, now int64) (cur int, source string, next int64, order []string) {
	cur, next = -1, -1
	earliest := keys[0].nb
	consider := func(t int64) {
		if t > now && (next < 0 || t < next) {
			next = t
		}
	}
	for i, k := range keys {
		stop := min(k.eu, k.na)
		if now < k.na {
			consider(k.nb)
			consider(stop)
			consider(k.na)
			if k.nb <= now && now < stop && (cur < 0 || k.nb > keys[cur].nb) {
				cur = i
			}
		}
		earliest = min(earliest, k.nb)
	}
	source = "schedule"
	if cur < 0 {
		source = "-"
		if now < earliest && now < keys[0].na {
			cur, source = 0, "clock_behind"
		}
	}
	var nexts, prevs []int
	for i, k := range keys {
		if i != cur && now < k.na {
			if k.nb > now {
				nexts = append(nexts, i)
			} else {
				prevs = append(prevs, i)
			}
		}
	}
	sort.SliceStable(nexts, func(a, b int) bool { return keys[nexts[a]].nb < keys[nexts[b]].nb })
	sort.SliceStable(prevs, func(a, b int) bool { return keys[prevs[a]].nb > keys[prevs[b]].nb })
	if cur >= 0 {
		order = append(order, luatest.ID(keys[cur].key)+":current")
	}
	for _, i := range nexts {
		order = append(order, luatest.ID(keys[i].key)+":next")
	}
	for _, i := range prevs {
		order = append(order, luatest.ID(keys[i].key)+":previous")
	}
	return cur, source, next, order
}

// genWindow generates the window an engine would serve at instant render, from a history at
// production scale: rotation periods from 1 min to 24 h, retain up to what keeps the window within
// the engine's 256 keys and 168 h, the next key published one period ahead, and at random points an
// operator's `rotate mode=now` at any second (the new key activates then, and the key it replaces
// stops encrypting then), in the same second as a scheduled activation too (the replaced key becomes
// zero-length: encrypt_until == not_before, sharing its not_before with the new key).
func genWindow(rng *rand.Rand, size int) (keys []modelKey, render int64) {
	periods := []int64{60, 300, 3600, 6 * 3600, 86400}
	p := periods[rng.Intn(len(periods))]
	maxRetain := min(168*3600-p, 240*p)
	retain := min(maxRetain, []int64{0, p, 12 * p, 24 * p, maxRetain, rng.Int63n(maxRetain + 1)}[rng.Intn(6)])
	t0 := int64(1_790_000_000) + rng.Int63n(86400*365)
	var all []modelKey
	nb := t0
	steps := int((retain+2*p)/p) + 3 + rng.Intn(4)
	for i := 0; i < steps; i++ {
		k := modelKey{key: make([]byte, size), nb: nb, eu: nb + p}
		rng.Read(k.key)
		if len(all) > 0 && rng.Intn(6) == 0 {
			// rotate mode=now at a random second of the previous key's period, or in its first second.
			prev := &all[len(all)-1]
			at := prev.nb + rng.Int63n(p)
			if rng.Intn(3) == 0 {
				at = prev.nb
			}
			prev.eu = at
			prev.na = at + retain
			if prev.na <= prev.nb {
				prev.na = prev.nb + 1
			}
			k.nb, k.eu = at, at+p
		}
		k.na = k.eu + retain
		if k.na <= k.nb {
			k.na = k.nb + 1
		}
		all = append(all, k)
		nb = k.eu
	}
	// Render when some key is current, a little after the last key was published (one period ahead).
	last := all[len(all)-1]
	render = last.nb - p + rng.Int63n(p)
	var cur int = -1
	for i, k := range all {
		if k.nb <= render && render < min(k.eu, k.na) {
			cur = i
		}
	}
	if cur < 0 {
		render = last.nb
		cur = len(all) - 1
	}
	// The engine's order: current, next by activation, previous newest first; none past not_after.
	keys = append(keys, all[cur])
	for i, k := range all {
		if i != cur && k.nb > render && render < k.na {
			keys = append(keys, k)
		}
	}
	for i := len(all) - 1; i >= 0; i-- {
		if k := all[i]; i != cur && k.nb <= render && render < k.na {
			keys = append(keys, k)
		}
	}
	return keys, render
}

func timedKeys(keys []modelKey) []luatest.TimedKey {
	out := make([]luatest.TimedKey, len(keys))
	for i, k := range keys {
		out[i] = luatest.TimedKey{Key: k.key, NotBefore: time.Unix(k.nb, 0), EncryptUntil: time.Unix(k.eu, 0), NotAfter: time.Unix(k.na, 0)}
	}
	return out
}

// TestScheduleRulesOverGeneratedHistories proves (issue 19 item 1) that the module's schedule, on each
// build's LuaJIT, applies the engine's rule at every instant: over generated windows at production
// scale (1 min to 24 h periods, up to 256 keys, mode=now rotations at any second, zero-length keys
// sharing a not_before), evaluated with a fake clock from the render instant through the Agent being
// away for two periods and the longest retain, at every instant of the schedule, one second either
// side and random seconds, the encrypting key, its source, the next change and the key order equal
// the reference rule (modelAt); and, independently of the reference: one key encrypts unless the
// schedule is exhausted, it covers the instant, no key at or past its not_after is listed and every
// other one is, and nothing changes before the reported next change.
func TestScheduleRulesOverGeneratedHistories(t *testing.T) {
	eachNginx(t, testScheduleRulesOverGeneratedHistories)
}

func testScheduleRulesOverGeneratedHistories(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	port := servertest.FreePort(t)
	luatest.Start(t, luatest.Config{Nginx: b, Window: newWindow(t, luatest.NewKeys(t, 1, 80)), Cert: cert, Workers: 1, ExtraHTTP: scheduleLocations(port)})
	url := fmt.Sprintf("http://127.0.0.1:%d/schedule", port)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	const histories = 60
	instants, maxKeys, zeroLength, exhausted := 0, 0, 0, 0
	for h := 0; h < histories; h++ {
		size := []int{48, 80}[rng.Intn(2)]
		keys, render := genWindow(rng, size)
		maxKeys = max(maxKeys, len(keys))
		var ats []int64
		end := render
		for _, k := range keys {
			if k.eu == k.nb {
				zeroLength++
			}
			for _, at := range []int64{k.nb, k.eu, k.na} {
				ats = append(ats, at-1, at, at+1)
			}
			end = max(end, k.na)
		}
		for i := 0; i < 20; i++ {
			ats = append(ats, render+rng.Int63n(end-render+2))
		}
		// At most 400 instants a window (a 248-key window has ~750 of its own): a random sample.
		rng.Shuffle(len(ats), func(i, j int) { ats[i], ats[j] = ats[j], ats[i] })
		ats = ats[:min(len(ats), 400)]
		ats = append(ats, render, keys[0].nb-3600) // and a clock one hour behind
		strs := make([]string, len(ats))
		for i, at := range ats {
			strs[i] = strconv.FormatInt(at, 10)
		}
		body := strings.Join(strs, ",") + "\n" + string(luatest.TimedWindowBytes(timedKeys(keys)))
		lines := post(t, url, body)
		if len(lines) != len(ats) {
			t.Fatalf("seed %d history %d (%d keys): %d answers for %d instants: %v", seed, h, len(keys), len(lines), len(ats), lines[:min(3, len(lines))])
		}
		for i, at := range ats {
			instants++
			cur, source, next, order := modelAt(keys, at)
			curID := "-"
			if cur >= 0 {
				curID = luatest.ID(keys[cur].key)
			} else {
				exhausted++
			}
			nextS := "-"
			if next >= 0 {
				nextS = strconv.FormatInt(next, 10)
			}
			want := fmt.Sprintf("%d %s %s %s %s", at, curID, source, nextS, strings.Join(order, ","))
			if lines[i] != want {
				t.Fatalf("seed %d history %d (%d keys, rendered at %d), instant %d:\n lua:   %s\n model: %s\nwindow:\n%s",
					seed, h, len(keys), render, at, lines[i], want, luatest.TimedWindowBytes(timedKeys(keys)))
			}
			// Independent of the reference: the invariants of the rule.
			f := strings.Fields(lines[i])
			listed := map[string]string{}
			if len(f) == 5 {
				for _, e := range strings.Split(f[4], ",") {
					id, st, _ := strings.Cut(e, ":")
					listed[id] = st
				}
			}
			currents := 0
			for _, st := range listed {
				if st == "current" {
					currents++
				}
			}
			if (f[1] == "-") != (currents == 0) || currents > 1 {
				t.Fatalf("seed %d history %d instant %d: %d current keys listed, encrypting %s", seed, h, at, currents, f[1])
			}
			for _, k := range keys {
				id := luatest.ID(k.key)
				_, in := listed[id]
				if in != (at < k.na) {
					t.Fatalf("seed %d history %d instant %d: key %s (not_after %d) listed=%v", seed, h, at, id, k.na, in)
				}
				if id == f[1] && f[2] == "schedule" && !(k.nb <= at && at < min(k.eu, k.na)) {
					t.Fatalf("seed %d history %d instant %d: encrypting key %s does not cover the instant", seed, h, at, id)
				}
			}
		}
		// Nothing changes before the reported next change: the answer one second before it is the same.
		var again []string
		for i, at := range ats {
			f := strings.Fields(lines[i])
			if n, err := strconv.ParseInt(f[3], 10, 64); err == nil && n-1 > at {
				again = append(again, fmt.Sprintf("%d,%d", at, n-1))
			}
		}
		if len(again) > 0 {
			pairs := again[:min(len(again), 40)]
			var probe []string
			for _, p := range pairs {
				a, b2, _ := strings.Cut(p, ",")
				probe = append(probe, a, b2)
			}
			res := post(t, url, strings.Join(probe, ",")+"\n"+string(luatest.TimedWindowBytes(timedKeys(keys))))
			for i := 0; i+1 < len(res); i += 2 {
				a, b2 := strings.Fields(res[i]), strings.Fields(res[i+1])
				if !slices.Equal(a[1:], b2[1:]) {
					t.Fatalf("seed %d history %d: the schedule changed between %s and %s, before its reported next change %s:\n%s\n%s", seed, h, a[0], b2[0], a[3], res[i], res[i+1])
				}
			}
		}
	}
	t.Logf("%s: seed %d, %d generated windows (up to %d keys, %d zero-length keys), %d instants (%d exhausted) equal the reference rule", b.Name, seed, histories, maxKeys, zeroLength, instants, exhausted)
}

// TestTimedWindowErrors proves that a window file with times is refused, naming the line, the key id,
// the field and the rule, for each way its times can be wrong, and that what the engine can serve is
// accepted: zero-length keys (encrypt_until == not_before), two keys sharing a not_before when one of
// them is zero-length, 256 keys; and that RFC 3339 times read as Go reads them (offsets, fractions,
// leap days) or are refused.
func TestTimedWindowErrors(t *testing.T) {
	eachNginx(t, testTimedWindowErrors)
}

func testTimedWindowErrors(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	port := servertest.FreePort(t)
	luatest.Start(t, luatest.Config{Nginx: b, Window: newWindow(t, luatest.NewKeys(t, 1, 80)), Cert: cert, Workers: 1, ExtraHTTP: scheduleLocations(port)})
	url := fmt.Sprintf("http://127.0.0.1:%d/schedule", port)
	base := time.Unix(1_800_000_000, 0)
	k := luatest.NewKeys(t, 3, 80)
	tk := func(i int, nb, eu, na time.Duration) luatest.TimedKey {
		return luatest.TimedKey{Key: k[i], NotBefore: base.Add(nb), EncryptUntil: base.Add(eu), NotAfter: base.Add(na)}
	}
	good := luatest.TimedWindowBytes([]luatest.TimedKey{tk(0, 0, time.Hour, 13*time.Hour), tk(1, time.Hour, 2*time.Hour, 14*time.Hour)})
	line0 := strings.SplitN(string(good), "\n", 2)[0]
	fields := strings.Fields(line0)
	cases := []struct {
		name, content, want string
	}{
		{"mixed forms", string(good) + string(luatest.WindowBytes(k[2:3])), "line 3 has no times but line 1 has"},
		{"two fields", fields[0] + " " + fields[1] + "\n", "line 1 has 2 fields"},
		{"bad time", strings.Replace(string(good), fields[1], "2027-02-30T00:00:00Z", 1), "line 1 (key " + luatest.ID(k[0]) + ") not_before \"2027-02-30T00:00:00Z\" is not a valid date and time"},
		{"no zone", strings.Replace(string(good), fields[2], strings.TrimSuffix(fields[2], "Z"), 1), "encrypt_until \"" + strings.TrimSuffix(fields[2], "Z") + "\" has no time zone"},
		{"not a time", strings.Replace(string(good), fields[3], "soon", 1), "not_after \"soon\" is not an RFC 3339 time"},
		{"not_after before not_before", string(luatest.TimedWindowBytes([]luatest.TimedKey{tk(0, time.Hour, time.Hour, 0)})), "not_after " + base.UTC().Format(time.RFC3339) + " must be after not_before"},
		{"longer than 168h", string(luatest.TimedWindowBytes([]luatest.TimedKey{tk(0, 0, time.Hour, 169*time.Hour)})), "is more than 168h after not_before"},
		{"encrypt_until before not_before", string(luatest.TimedWindowBytes([]luatest.TimedKey{tk(0, time.Hour, 0, 2*time.Hour)})), "encrypt_until " + base.UTC().Format(time.RFC3339) + " must not be before not_before"},
		{"two encrypting keys share a not_before", string(luatest.TimedWindowBytes([]luatest.TimedKey{tk(0, 0, time.Hour, 2*time.Hour), tk(1, 0, 2*time.Hour, 3*time.Hour)})), "line 2 (key " + luatest.ID(k[1]) + ") not_before is the same as line 1's"},
	}
	for _, c := range cases {
		got := post(t, url, "1\n"+c.content)
		if !strings.HasPrefix(got[0], "error: ") || !strings.Contains(got[0], c.want) {
			t.Errorf("%s: got %q, want an error containing %q", c.name, got[0], c.want)
		}
		for _, key := range k {
			if strings.Contains(got[0], strings.TrimSpace(string(luatest.WindowBytes([][]byte{key})))) {
				t.Errorf("%s: the error holds key material", c.name)
			}
		}
	}
	// Accepted: a zero-length key sharing its not_before with the key that replaced it in that second
	// (it never encrypts), and the engine's cap of 256 keys.
	zl := luatest.TimedWindowBytes([]luatest.TimedKey{tk(1, time.Hour, 2*time.Hour, 14*time.Hour), tk(0, time.Hour, time.Hour, 13*time.Hour), tk(2, 0, time.Hour, 12*time.Hour)})
	at := base.Add(time.Hour).Unix()
	got := post(t, url, fmt.Sprintf("%d\n%s", at, zl))
	want := fmt.Sprintf("%d %s schedule %d %s:current,%s:previous,%s:previous", at, luatest.ID(k[1]), base.Add(2*time.Hour).Unix(), luatest.ID(k[1]), luatest.ID(k[0]), luatest.ID(k[2]))
	if got[0] != want {
		t.Errorf("zero-length key sharing a not_before: got %q, want %q", got[0], want)
	}
	many := make([]luatest.TimedKey, engineMaxKeys)
	for i := range many {
		d := time.Duration(i-200) * time.Minute
		many[i] = luatest.TimedKey{Key: luatest.NewKey(t, 48), NotBefore: base.Add(d), EncryptUntil: base.Add(d + time.Minute), NotAfter: base.Add(d + 5*time.Hour)}
	}
	if got := post(t, url, fmt.Sprintf("%d\n%s", base.Unix(), luatest.TimedWindowBytes(many))); !strings.HasPrefix(got[0], fmt.Sprintf("%d %s schedule", base.Unix(), luatest.ID(many[200].Key))) {
		t.Errorf("256 timed keys: got %.200q, want key 200 encrypting", got[0])
	}

	// Times: what Go's RFC 3339 parser reads, the module reads to the same instant; what it refuses,
	// the module refuses.
	timeCases := []string{
		"2026-11-29T21:00:00Z", "2028-02-29T23:59:59Z", "2100-03-01T00:00:00Z", "2000-01-01T00:00:00Z",
		"9999-12-31T23:59:59Z", "2026-11-29T21:00:00+02:00", "2026-11-29T21:00:00-09:30",
		"2026-11-29T21:00:00.25Z", "2026-11-29t21:00:00z",
		"2027-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-29T24:00:00Z", "2026-11-29T21:00:60Z",
		"2026-11-29T21:00:00", "2026-11-29 21:00:00Z", "1999-12-31T23:59:59Z", "2026-11-29T21:00:00.Z",
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for range 200 {
		tm := time.Unix(946684800+rng.Int63n(8_000_000_000), 0).In(time.FixedZone("", (rng.Intn(48)-24)*1800))
		timeCases = append(timeCases, tm.Format(time.RFC3339))
	}
	res := post(t, fmt.Sprintf("http://127.0.0.1:%d/parse_time", port), strings.Join(timeCases, "\n")+"\n")
	for i, s := range timeCases {
		gt, err := time.Parse(time.RFC3339, s)
		if err == nil && (gt.Year() < 2000 || gt.UTC().Year() > 9999) {
			err = fmt.Errorf("year out of range")
		}
		if s == "2026-11-29t21:00:00z" {
			// RFC 3339 allows lower-case t and z; Go refuses them, the module accepts them (same instant).
			gt, err = time.Parse(time.RFC3339, "2026-11-29T21:00:00Z")
		}
		if err != nil {
			if !strings.HasPrefix(res[i], "error: ") {
				t.Errorf("time %q: Go refuses it (%v), the module read %s", s, err, res[i])
			}
			continue
		}
		want := fmt.Sprintf("%d.%03d", gt.Unix(), gt.Nanosecond()/1e6)
		if res[i] != want {
			t.Errorf("time %q: module %s, Go %s", s, res[i], want)
		}
	}
}

// pidServer is an extra https server of the instance answering the worker's PID, for probes.
func pidServer(port int) string {
	return fmt.Sprintf("    server {\n        listen 127.0.0.1:%d ssl;\n        location / { return 200 \"$pid\\n\"; }\n    }\n", port)
}

// TestSwitchesOnScheduleWithoutFileChanges proves (issue 19 item 1) with real nginx timers that a
// worker follows the times of the window file by itself while the file does not change (Agent
// stopped): every worker switches the encrypting key at the next key's not_before (its own report:
// by its schedule timer, not its periodic check; the tickets' key names, read by a client making fresh handshakes every 30 ms: none
// under the old key once 1 s has passed, none under the new key before the instant); a ticket under a
// key resumes while that key is in the window and never once its not_after has passed (TLS 1.2 and
// 1.3); when the last published key stops encrypting, a worker-local key encrypts (no key past its
// encrypt_until) and the status says the schedule is exhausted; a new window with a current key ends
// that, the local key still decrypting; and the status says the worker follows the schedule.
func TestSwitchesOnScheduleWithoutFileChanges(t *testing.T) {
	eachNginx(t, testSwitchesOnScheduleWithoutFileChanges)
}

func testSwitchesOnScheduleWithoutFileChanges(t *testing.T, b *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	k := luatest.NewKeys(t, 4, 80)
	id := luatest.IDs(k)
	// s is the first whole second at least 3 s ahead: k0 encrypts until the test file changes.
	s := time.Now().Add(3 * time.Second).Truncate(time.Second).Add(time.Second)
	at := func(sec int) time.Time { return s.Add(time.Duration(sec) * time.Second) }
	window := newWindowTimed(t, []luatest.TimedKey{
		{Key: k[0], NotBefore: at(-60), EncryptUntil: at(60), NotAfter: at(120)},
	})
	pidPort := servertest.FreePort(t)
	inst := luatest.Start(t, luatest.Config{Nginx: b, Window: window, Cert: cert, Stream: true, ExtraHTTP: pidServer(pidPort)})
	pidAddr := fmt.Sprintf("127.0.0.1:%d", pidPort)
	inst.WaitIDs(t, id[:1], 10*time.Second)
	// Tickets under k0, for the not_after checks (one copy per check; TLS 1.2 and 1.3).
	type held struct {
		name         string
		before, afte []*tls.Config
	}
	var tickets []held
	for _, v := range versions {
		h := held{name: v.name}
		cfg := luatest.ClientConfig(cert, v.v)
		if _, err := luatest.Handshake(cfg, inst.HTTPS, false); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			h.before = append(h.before, cloneCache(t, cfg, inst.HTTPS))
			h.afte = append(h.afte, cloneCache(t, cfg, inst.HTTPS))
		}
		tickets = append(tickets, h)
	}
	if time.Now().After(at(-1)) {
		t.Fatalf("setup took until %v, past the schedule's start %v", time.Now(), s)
	}
	// The window Agent rendered last, then Agent stops: k0 previous until its not_after at s+6, k1
	// current until s+3, k2 next from s+3 to s+9; nothing after s+9.
	luatest.WriteTimedWindow(t, window, []luatest.TimedKey{
		{Key: k[1], NotBefore: at(-10), EncryptUntil: at(3), NotAfter: at(25)},
		{Key: k[2], NotBefore: at(3), EncryptUntil: at(9), NotAfter: at(30)},
		{Key: k[0], NotBefore: at(-60), EncryptUntil: at(-10), NotAfter: at(6)},
	})
	inst.WaitIDs(t, []string{id[1], id[2], id[0]}, 5*time.Second)
	for pid, st := range inst.StatusAll(t) {
		if st.Follows != "schedule" || !strings.Contains(st.FollowsHow, "whether or not Agent or Vault is reachable") || st.NextChangeAt != at(3).UTC().Format(time.RFC3339) {
			t.Errorf("worker %d: follows %q (%q), next change %q; want the schedule, next change at %s", pid, st.Follows, st.FollowsHow, st.NextChangeAt, at(3).UTC().Format(time.RFC3339))
		}
	}

	// Probe fresh handshakes every 30 ms until s+11.5.
	var probes []luatest.Probe
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < 2000 && time.Now().Before(at(11).Add(500*time.Millisecond)); n++ {
			if p, err := luatest.ProbeWorker(cert, tls.VersionTLS12, pidAddr, "/"); err == nil {
				probes = append(probes, p)
			} else {
				t.Errorf("probe: %v", err)
			}
			time.Sleep(30 * time.Millisecond)
		}
	}()
	// k0 tickets resume before k0's not_after (s+6) and never after it.
	sleepUntil(at(5))
	for _, h := range tickets {
		for i, cfg := range h.before {
			if r, err := luatest.Handshake(cfg, inst.HTTPS, false); err != nil || !r {
				t.Errorf("%s: k0 ticket %d not resumed at s+5, before k0's not_after (err %v)", h.name, i, err)
			}
		}
	}
	sleepUntil(at(6).Add(100 * time.Millisecond))
	for _, h := range tickets {
		for i, cfg := range h.afte {
			if r, err := luatest.Handshake(cfg, inst.HTTPS, false); err != nil || r {
				t.Errorf("%s: k0 ticket %d resumed=%v after k0's not_after (err %v)", h.name, i, r, err)
			}
		}
	}
	<-done
	sts := inst.StatusAll(t)

	// Every probe: before s+3 k1; from s+4 to s+9 k2; from s+10 a key that is none of the published.
	workers := map[string]map[string]int{}
	lastOld, firstNew := time.Time{}, time.Time{}
	for _, p := range probes {
		if workers[p.PID] == nil {
			workers[p.PID] = map[string]int{}
		}
		switch {
		case p.End.Before(at(3)):
			if p.Key != id[1] {
				t.Errorf("probe %s-%s (worker %s): ticket under %s before k2's not_before, want k1 %s", p.Start.Format("05.000"), p.End.Format("05.000"), p.PID, p.Key, id[1])
			}
			workers[p.PID]["k1"]++
		case p.Start.After(at(4)) && p.End.Before(at(9)):
			if p.Key != id[2] {
				t.Errorf("probe at s+%.3f (worker %s): ticket under %s, want k2 %s (more than 1 s after its not_before)", p.Start.Sub(s).Seconds(), p.PID, p.Key, id[2])
			}
			workers[p.PID]["k2"]++
		case p.Start.After(at(10)):
			if slices.Contains(id, p.Key) {
				t.Errorf("probe at s+%.3f (worker %s): ticket under published key %s after the last key's encrypt_until", p.Start.Sub(s).Seconds(), p.PID, p.Key)
			}
			workers[p.PID]["local"]++
		}
		if p.Key == id[1] {
			lastOld = p.Start
		}
		if p.Key == id[2] && (firstNew.IsZero() || p.End.Before(firstNew)) {
			firstNew = p.End
		}
	}
	if len(workers) != 2 {
		t.Errorf("probes reached workers %v, want both", workers)
	}
	for pid, n := range workers {
		if n["k1"] == 0 || n["k2"] == 0 || n["local"] == 0 {
			t.Errorf("worker %s: probes per phase %v: want each phase sampled", pid, n)
		}
	}
	if !firstNew.IsZero() && firstNew.Before(at(3)) {
		t.Errorf("a ticket under k2 ended at s%+.3f, before its not_before", firstNew.Sub(s).Seconds())
	}
	// Each worker's own report: the switch to the local key at s+9 is the last switch.
	for pid, st := range sts {
		if !st.Exhausted || !strings.Contains(st.CurrentBy, "local") || len(st.Window) == 0 || st.Window[0].State != "local" {
			t.Errorf("worker %d after the last encrypt_until: exhausted %v, current by %q, window %+v; want a local key encrypting", pid, st.Exhausted, st.CurrentBy, st.Window)
		}
		// The worker's own timer made the switch, not its once-a-second check of the file; how soon
		// after the instant it fires is a bench figure, not a test bound.
		if lag := st.SwitchedAt - float64(at(9).UnixNano())/1e9; lag < 0 || lag >= 1 || st.SwitchedBy != "schedule timer" {
			t.Errorf("worker %d switched to its local key at s+%.3f by %q, want by the schedule timer at s+9 (before the next periodic check)", pid, st.SwitchedAt-float64(s.Unix()), st.SwitchedBy)
		}
		for _, wk := range st.Window {
			if wk.ID == id[0] {
				t.Errorf("worker %d still holds k0 after its not_after", pid)
			}
		}
	}
	log := inst.Proc.Log()
	switches := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "installed a window") && strings.Contains(l, "(current id "+id[2]+")") &&
			strings.Contains(l, "key "+id[2]+" activated at "+at(3).UTC().Format(time.RFC3339)) {
			switches++
		}
	}
	if switches != 2 {
		t.Errorf("%d log lines say k2 activated at its not_before and was installed, want one per worker (2); log:\n%s", switches, log)
	}
	if n := strings.Count(log, "no published key may encrypt"); n != 2 {
		t.Errorf("%d log lines say the schedule is exhausted, want one per worker (2)", n)
	}
	t.Logf("%s: %d probes; last k1 ticket started s%+.3f, first k2 ticket ended s%+.3f; k0 tickets resumed before its not_after and not after; local keys after s+9", b.Name, len(probes), lastOld.Sub(s).Seconds(), firstNew.Sub(s).Seconds())

	// A window with a current key ends the exhaustion; the local key keeps decrypting for retain.
	now := time.Now().Truncate(time.Second)
	luatest.WriteTimedWindow(t, window, []luatest.TimedKey{
		{Key: k[3], NotBefore: now.Add(-time.Second), EncryptUntil: now.Add(time.Minute), NotAfter: now.Add(2 * time.Minute)},
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok := true
		for _, st := range inst.StatusAll(t) {
			if st.Exhausted || len(st.Window) != 2 || st.Window[0].ID != id[3] || st.Window[1].State != "local" {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a window with a current key: %+v; want k3 encrypting and the local key decrypt-only", inst.StatusAll(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if errs := errorLines(inst.Proc.Log()); len(errs) != 2 {
		t.Errorf("want exactly the 2 exhaustion errors, got:\n%s", strings.Join(errs, "\n"))
	}
}

// newWindowTimed returns a temp window path holding keys with times.
func newWindowTimed(t *testing.T, keys []luatest.TimedKey) string {
	t.Helper()
	p := newWindow(t, nil)
	luatest.WriteTimedWindow(t, p, keys)
	return p
}

func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }
