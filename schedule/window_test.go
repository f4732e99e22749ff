package schedule

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// testWire is a valid go window of three hourly keys, read 30 minutes into
// the middle one: previous, current, next.
func testWire(t *testing.T, format string, keySize int) Wire {
	t.Helper()
	spec := vectorSpec{name: "t", keySize: keySize, period: time.Hour, retain: time.Hour, ahead: time.Hour,
		readAt: vectorStart.Add(90 * time.Minute), keys: grid(vectorStart, 3, time.Hour, time.Hour, time.Hour)}
	return spec.render(t, format)
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodeRefusals: each malformed window is refused with an error that
// names the field, the rule and the value, and never shows an id, a
// ticket_key or a haproxy line of the window.
func TestDecodeRefusals(t *testing.T) {
	at := func(d time.Duration) string { return rfc(vectorStart.Add(d)) }
	for _, tc := range []struct {
		name   string
		format string
		edit   func(w *Wire)
		raw    string // instead of edit: the whole input
		want   string
	}{
		{name: "not json", raw: "{", want: "window: not a JSON object of the documented shape"},
		{name: "trailing", raw: `{"format":"go"} {}`, want: "trailing data"},
		{name: "keys a string", raw: `{"format":"go","keys":"x"}`, want: `field "keys": want a list, got JSON string`},
		{name: "ticket_key a number", raw: `{"format":"go","keys":[{"ticket_key":5}]}`, want: `field "keys.ticket_key": want string, got JSON number`},
		{name: "format missing", edit: func(w *Wire) { w.Format = "" }, want: `window: format: must be "go", got ""`},
		{name: "format asked", format: FormatNginx, want: `window: format: must be "nginx", got "go"`},
		{name: "format unknown", format: "", edit: func(w *Wire) { w.Format = "caddy" }, want: `format: must be one of [nginx haproxy envoy go], got "caddy"`},
		{name: "no name", edit: func(w *Wire) { w.Name = "" }, want: `name: required, got ""`},
		{name: "key size", edit: func(w *Wire) { w.KeySize = 64 }, want: "key_size: must be 48 or 80, got 64"},
		{name: "period 0", edit: func(w *Wire) { w.RotationPeriod = 0 }, want: "rotation_period: must be 1..604800 seconds, got 0"},
		{name: "retain over", edit: func(w *Wire) { w.Retain = 604801 }, want: "retain: must be 0..604800 seconds, got 604801"},
		{name: "ttl 0", edit: func(w *Wire) { w.TTL = 0 }, want: "ttl: must be 1..604800 seconds, got 0"},
		{name: "no keys", edit: func(w *Wire) { w.Keys = nil }, want: "keys: must hold at least one key, got 0"},
		{name: "id short", edit: func(w *Wire) { w.Keys[1].ID = "abc" }, want: "keys[1].id: must be 32 hex characters, got 3 characters"},
		{name: "id not hex", edit: func(w *Wire) { w.Keys[1].ID = strings.Repeat("z", 32) }, want: "keys[1].id: must be 32 hex characters, got a non-hex character"},
		{name: "id twice", edit: func(w *Wire) { w.Keys[2].ID = w.Keys[1].ID }, want: "keys[2].id: must be unique, same as keys[1].id"},
		{name: "material twice", edit: func(w *Wire) { w.Keys[2].TicketKey = w.Keys[1].TicketKey }, want: "keys[2].ticket_key: must be unique"},
		{name: "state", edit: func(w *Wire) { w.Keys[1].State = "pending" }, want: `keys[1].state: must be current, next or previous, got "pending"`},
		{name: "two current", edit: func(w *Wire) { w.Keys[2].State = StateCurrent }, want: `keys[2].state: exactly one key must be "current", keys[0] is too`},
		{name: "no current", edit: func(w *Wire) { w.Keys[0].State = StatePrevious }, want: `keys: exactly one key must be "current", got none`},
		{name: "next before current", edit: func(w *Wire) { w.Keys[1].NotBefore = at(0); w.Keys[1].PublishAt = "" }, want: `keys[1].not_before: a "next" key must activate after the current key`},
		{name: "previous after current", edit: func(w *Wire) {
			w.Keys[2].NotBefore, w.Keys[2].EncryptUntil = at(90*time.Minute), at(90*time.Minute)
		}, want: `keys[2].not_before: a "previous" key must not activate after the current key`},
		{name: "bad time", edit: func(w *Wire) { w.Keys[0].NotBefore = "yesterday" }, want: `keys[0].not_before: must be an RFC 3339 time, got "yesterday"`},
		{name: "year", edit: func(w *Wire) { w.Keys[0].NotAfter = "1999-01-01T00:00:00Z" }, want: `keys[0].not_after: must be a year in 2000..9999`},
		{name: "reversed", edit: func(w *Wire) { w.Keys[0].NotAfter = w.Keys[0].NotBefore }, want: "keys[0].not_after: must be after not_before"},
		{name: "lifetime", edit: func(w *Wire) { w.Keys[0].NotAfter = at(time.Hour + MaxKeyLifetime + time.Second) }, want: "keys[0].not_after: must be at most 168h0m0s after not_before, got 168h0m1s"},
		{name: "encrypt_until early", edit: func(w *Wire) { w.Keys[0].EncryptUntil = at(0) }, want: "keys[0].encrypt_until: must not be before not_before"},
		{name: "publish_at late", edit: func(w *Wire) { w.Keys[0].PublishAt = at(2 * time.Hour) }, want: "keys[0].publish_at: must not be after not_before"},
		{name: "shared not_before, both encrypt", edit: func(w *Wire) {
			w.Keys[2].NotBefore, w.Keys[2].EncryptUntil = w.Keys[0].NotBefore, at(2*time.Hour)
		}, want: "must all but one be zero-length (encrypt_until = not_before)"},
		{name: "ticket_key missing", edit: func(w *Wire) { w.Keys[0].TicketKey = "" }, want: "keys[0].ticket_key: must decode to 32 bytes (the go format), got 0 bytes"},
		{name: "ticket_key not base64", edit: func(w *Wire) { w.Keys[0].TicketKey = "*" + w.Keys[0].TicketKey[1:] }, want: "keys[0].ticket_key: must be standard padded base64, got invalid base64 of 44 characters"},
		{name: "ticket_key zero", edit: func(w *Wire) { w.Keys[0].TicketKey = base64.StdEncoding.EncodeToString(make([]byte, 32)) }, want: "keys[0].ticket_key: must not be all zero bytes"},
		{name: "haproxy line in go", edit: func(w *Wire) { w.HAProxyLines = []string{"a", "b", "c"} }, want: "tls_ticket_keys: only in the haproxy format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := testWire(t, FormatGo, 80)
			w.Keys = slices.Clone(w.Keys)
			data := []byte(tc.raw)
			if tc.raw == "" {
				if tc.edit != nil {
					tc.edit(&w)
				}
				data = marshal(t, w)
			}
			format := FormatGo
			if tc.format != "" || tc.name == "format unknown" {
				format = tc.format
			}
			_, err := Decode(data, format)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			for _, k := range w.Keys {
				if (k.TicketKey != "" && strings.Contains(err.Error(), k.TicketKey)) || (len(k.ID) == 32 && strings.Contains(err.Error(), k.ID)) {
					t.Fatalf("the error shows an id or a ticket_key: %v", err)
				}
			}
		})
	}
}

// TestDecodeOpenSSLFormats: a ticket_key of an OpenSSL format must start
// with its key's name, have key_size bytes, and tls_ticket_keys lines must
// be keys of the window; envoy needs 80-byte keys.
func TestDecodeOpenSSLFormats(t *testing.T) {
	for _, tc := range []struct {
		format string
		size   int
		edit   func(w *Wire)
		want   string
	}{
		{FormatNginx, 80, func(w *Wire) { w.Keys[0].ID, w.Keys[1].ID = w.Keys[1].ID, w.Keys[0].ID }, "keys[0].ticket_key: must start with the key name whose hex is the id; it does not"},
		{FormatHAProxy, 48, func(w *Wire) { w.Keys[0].TicketKey = w.Keys[0].TicketKey[:20] + "==" }, "keys[0].ticket_key: must"},
		{FormatHAProxy, 80, func(w *Wire) { w.HAProxyLines = w.HAProxyLines[:2] }, "tls_ticket_keys: must hold 3 lines (previous, current, next), got 2"},
		{FormatHAProxy, 80, func(w *Wire) { w.HAProxyLines = []string{w.Keys[0].TicketKey, w.Keys[0].TicketKey, "AAAA"} }, "tls_ticket_keys[2]: must be the ticket_key of a key of the window, matches none"},
		{FormatEnvoy, 80, func(w *Wire) { w.KeySize = 48 }, "key_size: format envoy needs 80-byte keys, got 48"},
	} {
		w := testWire(t, tc.format, tc.size)
		w.Keys = slices.Clone(w.Keys)
		w.HAProxyLines = slices.Clone(w.HAProxyLines)
		if _, err := Decode(marshal(t, w), tc.format); err != nil {
			t.Fatalf("%s/%d: the unedited window is refused: %v", tc.format, tc.size, err)
		}
		tc.edit(&w)
		_, err := Decode(marshal(t, w), tc.format)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s/%d: got %v, want an error containing %q", tc.format, tc.size, err, tc.want)
		}
	}
}

// TestDecodeAcceptsWhatEnginesServe: windows of up to MaxKeys keys, keys
// without encrypt_until and a zero-length key sharing not_before with the
// key that encrypts decode; the zero-length key sorts first and never
// encrypts.
func TestDecodeAcceptsWhatEnginesServe(t *testing.T) {
	// The largest window older engines allowed: one key per 5s over 168h.
	p := 5 * time.Second
	n := MaxKeys - 1
	spec := vectorSpec{name: "big", keySize: 48, period: p, retain: MaxKeyLifetime - p, ahead: p,
		readAt: vectorStart.Add(time.Duration(n-2)*p + p/2), keys: grid(vectorStart, n, p, p, MaxKeyLifetime-p)}
	w, err := Decode(marshal(t, spec.render(t, FormatNginx)), FormatNginx)
	if err != nil {
		t.Fatalf("%d keys: %v", n, err)
	}
	if len(w.Keys) != n || w.EncryptingAt(spec.readAt) != n-2 {
		t.Fatalf("%d keys decoded, key %d encrypts at the read; want %d and %d", len(w.Keys), w.EncryptingAt(spec.readAt), n, n-2)
	}
	for _, d := range []time.Duration{time.Hour, 2 * time.Hour} {
		spec.keys = append(spec.keys, vectorKey{publish: spec.readAt, nb: spec.readAt.Add(d), until: spec.readAt.Add(d + time.Second), na: spec.readAt.Add(d + 2*time.Second)})
	}
	if _, err := Decode(marshal(t, spec.render(t, FormatNginx)), FormatNginx); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("keys: must hold at most %d keys, got %d", MaxKeys, MaxKeys+1)) {
		t.Fatalf("%d keys: got %v", MaxKeys+1, err)
	}

	for _, name := range []string{"zero-length-same-second", "zero-length-no-encrypt-until"} {
		i := slices.IndexFunc(vectorSpecs(), func(s vectorSpec) bool { return s.name == name })
		spec := vectorSpecs()[i]
		w, err := Decode(marshal(t, spec.render(t, FormatNginx)), FormatNginx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cut, rotated := hexName(name, 1), hexName(name, 2)
		if w.Keys[1].ID != cut || w.Keys[2].ID != rotated {
			t.Fatalf("%s: keys sharing not_before are not ordered cut key first", name)
		}
		at := spec.keys[2].nb
		if w.Encrypts(1, at) || w.EncryptEnd(1) != at {
			t.Fatalf("%s: the zero-length key encrypts (until %s)", name, w.EncryptEnd(1))
		}
		if i := w.EncryptingAt(at); i != 2 {
			t.Fatalf("%s: key %d encrypts at the shared not_before, want the rotated key", name, i)
		}
		if !w.Decrypts(1, at.Add(time.Hour)) {
			t.Fatalf("%s: the zero-length key does not decrypt", name)
		}
	}
}

func hexName(window string, i int) string {
	name, _, _ := vectorSecrets(window, i, 80)
	return hex.EncodeToString(name)
}

// TestLayouts: Render and Split are inverse for every OpenSSL format and
// key size; the parts sit where docs/api.md says; the go key is the HKDF of
// the secrets, differs from both and depends on the name.
func TestLayouts(t *testing.T) {
	for _, size := range []int{48, 80} {
		name, aes, hmac := vectorSecrets("layout", 0, size)
		n := SecretSize(size)
		for _, f := range []string{FormatNginx, FormatHAProxy, FormatEnvoy} {
			m, err := Render(f, name, aes, hmac)
			if f == FormatEnvoy && size == 48 {
				if err == nil {
					t.Fatal("envoy rendered a 48-byte key")
				}
				continue
			}
			if err != nil || len(m) != size {
				t.Fatalf("%s/%d: %d bytes, %v", f, size, len(m), err)
			}
			wantAESAt := NameSize + n
			if f == FormatHAProxy || (f == FormatNginx && size == 48) {
				wantAESAt = NameSize
			}
			if string(m[:NameSize]) != string(name) || string(m[wantAESAt:wantAESAt+n]) != string(aes) {
				t.Fatalf("%s/%d: the name or the AES secret is not where docs/api.md puts it", f, size)
			}
			gn, ga, gh, err := Split(f, size, m)
			if err != nil || string(gn) != string(name) || string(ga) != string(aes) || string(gh) != string(hmac) {
				t.Fatalf("%s/%d: Split does not invert Render: %v", f, size, err)
			}
		}
		g, err := Render(FormatGo, name, aes, hmac)
		if err != nil || len(g) != GoKeySize {
			t.Fatalf("go/%d: %d bytes, %v", size, len(g), err)
		}
		other := slices.Clone(name)
		other[0] ^= 1
		g2, _ := GoKey(other, aes, hmac)
		if string(g) == string(g2) || strings.Contains(string(aes)+string(hmac), string(g[:8])) {
			t.Fatalf("go/%d: the derived key does not depend on the name, or reuses secret bytes", size)
		}
	}
}

// TestReaderLag pins the lag arithmetic the engine's publish_ahead check
// and the Go client share.
func TestReaderLag(t *testing.T) {
	for _, tc := range []struct {
		period, ahead, jitter, lag time.Duration
	}{
		{5 * time.Second, 5 * time.Second, 0, 3 * time.Second},           // 1 + 0 + max(1, 100ms) + 1
		{time.Hour, time.Hour, 30 * time.Second, 37 * time.Second},       // 1 + 30 + 5 + 1
		{time.Hour, 2 * time.Minute, 12 * time.Second, 19 * time.Second}, // jitter = ahead/10
		{time.Minute, time.Minute, 3 * time.Second, 8 * time.Second},     // 1 + 3 + max(1, 64s/20=3.2s) + 1 = 8.2s
	} {
		if got := TTLJitterMax(tc.period, tc.ahead); got != tc.jitter {
			t.Errorf("TTLJitterMax(%s, %s) = %s, want %s", tc.period, tc.ahead, got, tc.jitter)
		}
		if got := ReaderLag(tc.period, tc.ahead); got.Truncate(time.Second) != tc.lag || got != 2*time.Second+tc.jitter+ReaderDelay(tc.period, tc.ahead) {
			t.Errorf("ReaderLag(%s, %s) = %s, want %s", tc.period, tc.ahead, got, tc.lag)
		}
	}
	if GoClientDelayMax(time.Second) != 100*time.Millisecond || GoClientDelayMax(time.Hour) != 5*time.Second || GoClientDelayMax(40*time.Second) != 2*time.Second {
		t.Fatal("GoClientDelayMax is not min(max(d/20, 100ms), 5s)")
	}
}

// randomWindow generates a schedule as the engine can leave it: keys on a
// grid of random period, some cut by rotations (mode=now, sometimes in the
// second they activated: zero-length; mode=scheduled: brought forward),
// lifetimes capped, encrypt_until sometimes absent (old engines), then read
// at a random instant.
func randomWindow(t *testing.T, r *rand.Rand) (vectorSpec, *Window) {
	periods := []time.Duration{5 * time.Second, time.Minute, time.Hour, 24 * time.Hour}
	period := periods[r.IntN(len(periods))]
	retain := time.Duration(r.IntN(12)) * period
	if period == 24*time.Hour {
		retain = min(retain, 6*period)
	}
	spec := vectorSpec{name: "random", keySize: []int{48, 80}[r.IntN(2)], period: period, retain: retain, ahead: period,
		noEncryptUntil: r.IntN(5) == 0}
	// A lowered max_key_lifetime caps every key alike.
	var lifetime time.Duration
	if r.IntN(6) == 0 {
		lifetime = time.Duration(1+r.IntN(3)) * period
	}
	nb := vectorStart
	n := 1 + r.IntN(20)
	for i := 0; i < n; i++ {
		until := nb.Add(period)
		if i < n-1 && r.IntN(4) == 0 {
			// Cut by a rotation, which inserts its successor: in its first second (zero-length) or later.
			cut := time.Duration(r.Int64N(int64(period/time.Second))) * time.Second
			if r.IntN(2) == 0 {
				cut = 0
			}
			until = nb.Add(cut)
		}
		// Every key readable from the start: a rotated key is published the
		// moment it is made, with the key it cuts.
		k := vectorKey{publish: vectorStart.Add(-period), nb: nb, until: until, na: until.Add(retain)}
		if !k.na.After(k.nb) {
			k.na = k.nb.Add(time.Second)
		}
		if limit := nb.Add(lifetime); lifetime > 0 && k.na.After(limit) {
			k.na = limit
			if k.until.After(limit) {
				k.until = limit
			}
		}
		spec.keys = append(spec.keys, k)
		nb = until
	}
	// Read at an instant where a key is current, as the engine does.
	for range 100 {
		i := r.IntN(len(spec.keys))
		k := spec.keys[i]
		if k.until.After(k.nb) {
			spec.readAt = k.nb.Add(time.Duration(r.Int64N(int64(k.until.Sub(k.nb)))))
			break
		}
	}
	if spec.readAt.IsZero() {
		return randomWindow(t, r)
	}
	data := marshal(t, spec.render(t, FormatGo))
	w, err := Decode(data, FormatGo)
	if err != nil {
		t.Fatalf("generated window refused: %v\n%s", err, data)
	}
	return spec, w
}

// TestRuleOverGeneratedSchedules: over thousands of generated schedules,
// at instants around every key's times, at most one key encrypts and
// EncryptingAt names it; it is a key whose published encrypting interval
// covers the instant (old engines: up to the next activation); zero-length
// keys never encrypt; no key encrypts or decrypts at or after its
// not_after; the encrypting key decrypts; the set changes only at
// NextChange.
func TestRuleOverGeneratedSchedules(t *testing.T) {
	r := rand.New(rand.NewPCG(18, 2026))
	windows, instants := 0, 0
	for range 3000 {
		spec, w := randomWindow(t, r)
		windows++
		served := map[string]vectorKey{}
		for i, k := range spec.keys {
			served[hexName("random", i)] = k
		}
		var ts []time.Time
		for _, k := range w.Keys {
			for _, c := range []time.Time{k.NotBefore, k.EncryptUntil, k.NotAfter} {
				if !c.IsZero() {
					ts = append(ts, c.Add(-time.Nanosecond), c, c.Add(time.Nanosecond))
				}
			}
		}
		for _, at := range ts {
			instants++
			cur := w.EncryptingAt(at)
			n := 0
			for i := range w.Keys {
				if w.Encrypts(i, at) {
					n++
				}
			}
			if n > 1 {
				t.Fatalf("%d keys encrypt at %s", n, at)
			}
			if (cur >= 0) != (n == 1) {
				t.Fatalf("EncryptingAt = %d while %d keys encrypt", cur, n)
			}
			if cur >= 0 {
				k := w.Keys[cur]
				sk := served[k.ID]
				end := sk.until
				if spec.noEncryptUntil {
					end = w.EncryptEnd(cur) // derived: the next activation, or one period
				}
				if at.Before(k.NotBefore) || !at.Before(end) || !at.Before(k.NotAfter) || !sk.until.After(sk.nb) {
					t.Fatalf("key %s encrypts at %s outside its interval [%s, %s) (not_after %s)\nread at %s; served %+v", k.ID[:8], at, k.NotBefore, end, k.NotAfter, spec.readAt, sk)
				}
				if !w.Decrypts(cur, at) {
					t.Fatal("the encrypting key does not decrypt")
				}
			}
			for _, i := range w.DecryptingAt(at) {
				if !at.Before(w.Keys[i].NotAfter) {
					t.Fatalf("key %d decrypts at its not_after", i)
				}
			}
			// Nothing changes strictly between at and NextChange(at).
			if next, ok := w.NextChange(at); ok {
				mid := at.Add(next.Sub(at) / 2)
				if mid.After(at) && (w.EncryptingAt(mid) != cur || !slices.Equal(w.DecryptingAt(mid), w.DecryptingAt(at))) {
					t.Fatalf("the keys changed between %s and %s, before NextChange %s", at, mid, next)
				}
			}
		}
	}
	t.Logf("%d generated windows, %d instants", windows, instants)
}
