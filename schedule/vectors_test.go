package schedule

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the package")

const vectorsPath = "testdata/vectors.json"

// Vectors is the shape of testdata/vectors.json (see doc.go).
type Vectors struct {
	Comment string          `json:"comment"`
	Windows []VectorWindow  `json:"windows"`
	Invalid []InvalidVector `json:"invalid"`
}

// VectorWindow is one keyring state read at one instant in several formats.
type VectorWindow struct {
	Name    string          `json:"name"`
	About   string          `json:"about"`
	ReadAt  string          `json:"read_at"`
	Secrets []VectorSecret  `json:"secrets"`
	Reads   map[string]Wire `json:"reads"`
	Samples []VectorSample  `json:"samples"`
}

// VectorSecret is one key's name and secrets (test material only), from
// which every format's ticket_key is laid out.
type VectorSecret struct {
	ID   string `json:"id"`
	AES  string `json:"aes"`
	HMAC string `json:"hmac"`
}

// VectorSample is the schedule's answer at one instant.
type VectorSample struct {
	At         string   `json:"at"`
	UnixMilli  int64    `json:"unix_ms"`
	Encrypting string   `json:"encrypting"`
	Decrypting []string `json:"decrypting"`
}

// InvalidVector is a window every reader must refuse; Field is the field
// the error names.
type InvalidVector struct {
	Name   string          `json:"name"`
	Format string          `json:"format"`
	Field  string          `json:"field"`
	Window json.RawMessage `json:"window"`
}

// vectorKey is a key of a generated keyring.
type vectorKey struct {
	nb, until, na, publish time.Time
}

// vectorSpec is a keyring state to render.
type vectorSpec struct {
	name, about    string
	keySize        int
	period, retain time.Duration
	ahead          time.Duration
	readAt         time.Time
	keys           []vectorKey
	formats        []string
	noEncryptUntil bool // as engines before v0.2.0
	sampleKeys     int  // sample around only the first and last sampleKeys keys (0: all)
}

var vectorStart = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

// grid returns n keys activating every period from start, each published
// ahead before it and decrypting retain after it stops encrypting.
func grid(start time.Time, n int, period, ahead, retain time.Duration) []vectorKey {
	keys := make([]vectorKey, n)
	for i := range keys {
		nb := start.Add(time.Duration(i) * period)
		keys[i] = vectorKey{publish: nb.Add(-ahead), nb: nb, until: nb.Add(period), na: nb.Add(period + retain)}
	}
	return keys
}

func vectorSpecs() []vectorSpec {
	h := time.Hour
	all := []string{FormatNginx, FormatHAProxy, FormatEnvoy, FormatGo}
	var specs []vectorSpec

	// The engine's defaults, 12 h into the keyring's life: 12 previous,
	// the current and the next key.
	specs = append(specs, vectorSpec{name: "hourly-80", about: "rotation_period 1h, retain 12h, key_size 80, read 12h30m after creation",
		keySize: 80, period: h, retain: 12 * h, ahead: h, readAt: vectorStart.Add(12*h + 30*time.Minute),
		keys: grid(vectorStart, 14, h, h, 12*h), formats: all})
	specs = append(specs, vectorSpec{name: "hourly-48", about: "as hourly-80 with key_size 48 (AES-128; no envoy format)",
		keySize: 48, period: h, retain: 12 * h, ahead: h, readAt: vectorStart.Add(12*h + 30*time.Minute),
		keys: grid(vectorStart, 14, h, h, 12*h), formats: []string{FormatNginx, FormatHAProxy, FormatGo}})

	// rotate mode=now in the second the scheduled key activated: that key
	// is cut at once (encrypt_until == not_before) and shares not_before
	// with the rotated key. It never encrypts, and decrypts until not_after.
	zl := grid(vectorStart, 2, h, h, 12*h)
	at := vectorStart.Add(h)
	zl[1].until = at
	zl[1].na = at.Add(12 * h)
	zl = append(zl, vectorKey{publish: at, nb: at, until: at.Add(h), na: at.Add(13 * h)})
	zl = append(zl, vectorKey{publish: at.Add(time.Minute), nb: at.Add(h), until: at.Add(2 * h), na: at.Add(14 * h)})
	specs = append(specs, vectorSpec{name: "zero-length-same-second", about: "rotate mode=now in the second a scheduled key activated: a zero-length key shares not_before with the rotated key",
		keySize: 80, period: h, retain: 12 * h, ahead: h, readAt: at.Add(2 * time.Minute), keys: zl, formats: all})

	// A zero-length key with the same second as a following key in an
	// engine before v0.2.0 (no encrypt_until): the key the engine called
	// current encrypts.
	specs = append(specs, vectorSpec{name: "zero-length-no-encrypt-until", about: "as zero-length-same-second from an engine before v0.2.0 (no encrypt_until): encryption ends where the next key starts, the last key one rotation_period after its start",
		keySize: 80, period: h, retain: 12 * h, ahead: h, readAt: at.Add(2 * time.Minute), keys: zl,
		formats: []string{FormatNginx, FormatGo}, noEncryptUntil: true})

	// rotate mode=scheduled brought the current key's end forward: the
	// next key starts at its encrypt_until, not one period after it.
	sr := grid(vectorStart, 3, h, h, 12*h)
	cut := vectorStart.Add(h + 20*time.Minute)
	sr[1].until = cut
	sr[2] = vectorKey{publish: vectorStart.Add(h + 10*time.Minute), nb: cut, until: cut.Add(h), na: cut.Add(13 * h)}
	specs = append(specs, vectorSpec{name: "scheduled-rotation", about: "rotate mode=scheduled at 1h10m with publish_ahead 10m: the current key stops encrypting at its encrypt_until, 40 minutes before not_before + rotation_period",
		keySize: 80, period: h, retain: 12 * h, ahead: 10 * time.Minute, readAt: vectorStart.Add(h + 15*time.Minute), keys: sr, formats: all})

	// max_key_lifetime lowered to 2h: not_after and encrypt_until capped.
	lc := grid(vectorStart, 3, h, h, 12*h)
	for i := range lc {
		if lim := lc[i].nb.Add(90 * time.Minute); lc[i].na.After(lim) {
			lc[i].na = lim
			if lc[i].until.After(lim) {
				lc[i].until = lim
			}
		}
	}
	specs = append(specs, vectorSpec{name: "lifetime-capped", about: "max_key_lifetime lowered to 90m: every not_after at most 90m after not_before",
		keySize: 48, period: h, retain: 12 * h, ahead: h, readAt: vectorStart.Add(h + 30*time.Minute), keys: lc,
		formats: []string{FormatNginx, FormatHAProxy, FormatGo}})

	// rotation_period 1h with retain 24h: 26 keys (24 previous).
	specs = append(specs, vectorSpec{name: "retain-24h-26-keys", about: "rotation_period 1h, retain 24h: 26 keys in one window",
		keySize: 80, period: h, retain: 24 * h, ahead: h, readAt: vectorStart.Add(24*h + 30*time.Minute),
		keys: grid(vectorStart, 26, h, h, 24*h), formats: []string{FormatNginx, FormatGo}, sampleKeys: 2})

	// The engine's cap: 256 keys (5m period, 21h10m retain).
	p := 5 * time.Minute
	specs = append(specs, vectorSpec{name: "cap-256-keys", about: "rotation_period 5m, retain 21h10m: the engine's cap of 256 keys in one window",
		keySize: 80, period: p, retain: 254 * p, ahead: p, readAt: vectorStart.Add(254*p + p/2),
		keys: grid(vectorStart, 256, p, p, 254*p), formats: []string{FormatNginx, FormatGo}, sampleKeys: 1})
	return specs
}

// vectorSecrets returns key i's test secrets for a window.
func vectorSecrets(window string, i, keySize int) (name, aes, hmac []byte) {
	n := SecretSize(keySize)
	s := sha256.Sum256([]byte(fmt.Sprintf("ticketkeys test vector %s key %d name", window, i)))
	a := sha256.Sum256([]byte(fmt.Sprintf("ticketkeys test vector %s key %d aes", window, i)))
	m := sha256.Sum256([]byte(fmt.Sprintf("ticketkeys test vector %s key %d hmac", window, i)))
	return s[:NameSize], a[:n], m[:n]
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// wireState is the engine's state of k at now, and whether it is served.
func wireState(k vectorKey, now time.Time) (string, bool) {
	switch {
	case !now.Before(k.na) || now.Before(k.publish):
		return "", false
	case now.Before(k.nb):
		return StateNext, true
	case now.Before(k.until):
		return StateCurrent, true
	default:
		return StatePrevious, true
	}
}

// render serves spec in format at spec.readAt, in the engine's order
// (current, next by activation, previous newest first) with the haproxy
// ring (previous, current, next, stood in by the current key).
func (spec vectorSpec) render(t *testing.T, format string) Wire {
	type served struct {
		i     int
		state string
	}
	var cur, next, prev []served
	for i, k := range spec.keys {
		st, ok := wireState(k, spec.readAt)
		switch {
		case !ok:
		case st == StateCurrent:
			cur = append(cur, served{i, st})
		case st == StateNext:
			next = append(next, served{i, st})
		default:
			prev = append(prev, served{i, st})
		}
	}
	slices.Reverse(prev) // newest first
	w := Wire{Name: spec.name, Format: format, KeySize: spec.keySize, RotationPeriod: int64(spec.period / time.Second),
		Retain: int64(spec.retain / time.Second), PublishAhead: int64(spec.ahead / time.Second), TTL: 60}
	enc := map[int]string{}
	for _, s := range slices.Concat(cur, next, prev) {
		k := spec.keys[s.i]
		name, aes, hmac := vectorSecrets(spec.name, s.i, spec.keySize)
		m, err := Render(format, name, aes, hmac)
		if err != nil {
			t.Fatal(err)
		}
		enc[s.i] = base64.StdEncoding.EncodeToString(m)
		wk := WireKey{ID: hex.EncodeToString(name), State: s.state, NotBefore: rfc(k.nb), NotAfter: rfc(k.na), TicketKey: enc[s.i]}
		if !spec.noEncryptUntil { // engines since v0.2.0 publish encrypt_until and publish_at
			wk.EncryptUntil = rfc(k.until)
			wk.PublishAt = rfc(k.publish)
		}
		w.Keys = append(w.Keys, wk)
	}
	if format == FormatHAProxy {
		c := enc[cur[0].i]
		p, n := c, c
		if len(prev) > 0 {
			p = enc[prev[0].i]
		}
		if len(next) > 0 {
			n = enc[next[0].i]
		}
		w.HAProxyLines = []string{p, c, n}
	}
	return w
}

// sampleInstants are the instants around each sampled key's times.
func (spec vectorSpec) sampleInstants() []time.Time {
	ts := []time.Time{spec.readAt}
	for i, k := range spec.keys {
		if spec.sampleKeys > 0 && i >= spec.sampleKeys && i < len(spec.keys)-spec.sampleKeys {
			continue
		}
		for _, c := range []time.Time{k.nb, k.until, k.na} {
			ts = append(ts, c.Add(-time.Millisecond), c, c.Add(500*time.Millisecond))
		}
	}
	slices.SortFunc(ts, time.Time.Compare)
	return slices.CompactFunc(ts, time.Time.Equal)
}

// buildVectors generates the whole file from the package.
func buildVectors(t *testing.T) Vectors {
	v := Vectors{Comment: "Generated by `go generate ./schedule` (go test ./schedule -run TestVectorsUpToDate -update) from the schedule package; do not edit. Shape: schedule/doc.go. Key material here is test material only."}
	for _, spec := range vectorSpecs() {
		vw := VectorWindow{Name: spec.name, About: spec.about, ReadAt: rfc(spec.readAt), Reads: map[string]Wire{}}
		for i := range spec.keys {
			name, aes, hmac := vectorSecrets(spec.name, i, spec.keySize)
			vw.Secrets = append(vw.Secrets, VectorSecret{ID: hex.EncodeToString(name), AES: hex.EncodeToString(aes), HMAC: hex.EncodeToString(hmac)})
		}
		var decoded *Window
		for _, f := range spec.formats {
			wire := spec.render(t, f)
			raw, err := json.Marshal(wire)
			if err != nil {
				t.Fatal(err)
			}
			w, err := Decode(raw, f)
			if err != nil {
				t.Fatalf("%s/%s: the package refuses its own vector: %v", spec.name, f, err)
			}
			if decoded != nil && !sameSchedule(decoded, w) {
				t.Fatalf("%s/%s: the formats decode to different schedules", spec.name, f)
			}
			decoded = w
			vw.Reads[f] = wire
		}
		for _, at := range spec.sampleInstants() {
			s := VectorSample{At: at.Format(time.RFC3339Nano), UnixMilli: at.UnixMilli(), Decrypting: []string{}}
			if i := decoded.EncryptingAt(at); i >= 0 {
				s.Encrypting = decoded.Keys[i].ID
			}
			for _, i := range decoded.DecryptingAt(at) {
				s.Decrypting = append(s.Decrypting, decoded.Keys[i].ID)
			}
			vw.Samples = append(vw.Samples, s)
		}
		v.Windows = append(v.Windows, vw)
	}
	v.Invalid = invalidVectors(t)
	return v
}

// sameSchedule reports whether two decoded windows hold the same ids and
// times in the same order.
func sameSchedule(a, b *Window) bool {
	if len(a.Keys) != len(b.Keys) {
		return false
	}
	for i := range a.Keys {
		x, y := a.Keys[i], b.Keys[i]
		if x.ID != y.ID || !x.NotBefore.Equal(y.NotBefore) || !x.EncryptUntil.Equal(y.EncryptUntil) || !x.NotAfter.Equal(y.NotAfter) {
			return false
		}
	}
	return true
}

// invalidVectors are malformed edits of a valid window, each with the
// field its error must name.
func invalidVectors(t *testing.T) []InvalidVector {
	base := vectorSpecs()[0]
	editIn := func(format, name, field string, f func(w *Wire)) InvalidVector {
		w := base.render(t, format)
		w.Keys = slices.Clone(w.Keys)
		f(&w)
		raw, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		return InvalidVector{Name: name, Format: format, Field: field, Window: raw}
	}
	edit := func(name, field string, f func(w *Wire)) InvalidVector { return editIn(FormatNginx, name, field, f) }
	dupNB := func(w *Wire) {
		// Two keys share not_before and both encrypt for a whole period.
		w.Keys[2].NotBefore, w.Keys[2].EncryptUntil = w.Keys[3].NotBefore, w.Keys[3].EncryptUntil
	}
	return []InvalidVector{
		edit("two-current", "state", func(w *Wire) { w.Keys[2].State = StateCurrent }),
		edit("no-current", "keys", func(w *Wire) { w.Keys[0].State = StatePrevious }),
		editIn(FormatGo, "duplicate-id", "id", func(w *Wire) { w.Keys[2].ID = w.Keys[3].ID }),
		edit("not-after-before-not-before", "not_after", func(w *Wire) { w.Keys[2].NotAfter = w.Keys[2].NotBefore }),
		edit("encrypt-until-before-not-before", "encrypt_until", func(w *Wire) { w.Keys[2].EncryptUntil = w.Keys[3].NotBefore }),
		edit("shared-not-before-both-encrypting", "encrypt_until", dupNB),
		edit("ticket-key-not-base64", "ticket_key", func(w *Wire) { w.Keys[1].TicketKey = "!" + w.Keys[1].TicketKey[1:] }),
		edit("ticket-key-wrong-size", "ticket_key", func(w *Wire) { w.Keys[1].TicketKey = w.Keys[1].TicketKey[:60] }),
		edit("name-not-the-id", "ticket_key", func(w *Wire) { w.Keys[1].ID = w.Keys[2].ID; w.Keys[2].ID = base.render(t, FormatNginx).Keys[1].ID }),
		edit("bad-time", "not_before", func(w *Wire) { w.Keys[1].NotBefore = "yesterday" }),
		edit("key-size-64", "key_size", func(w *Wire) { w.KeySize = 64 }),
		edit("no-keys", "keys", func(w *Wire) { w.Keys = nil }),
		editIn(FormatHAProxy, "haproxy-line-not-a-key", "tls_ticket_keys[2]", func(w *Wire) {
			w.HAProxyLines = slices.Clone(w.HAProxyLines)
			w.HAProxyLines[2] = base.render(t, FormatNginx).Keys[1].TicketKey
		}),
		edit("lifetime-over-168h", "not_after", func(w *Wire) {
			nb, _ := time.Parse(time.RFC3339, w.Keys[1].NotBefore)
			w.Keys[1].NotAfter = rfc(nb.Add(MaxKeyLifetime + time.Second))
		}),
	}
}

// TestVectorsUpToDate: testdata/vectors.json is what the package generates
// today (run `go generate ./schedule` after a change), and every invalid
// vector is refused naming its field.
func TestVectorsUpToDate(t *testing.T) {
	v := buildVectors(t)
	for _, iv := range v.Invalid {
		_, err := Decode(iv.Window, iv.Format)
		if err == nil {
			t.Errorf("invalid vector %s: accepted", iv.Name)
			continue
		}
		if !bytes.Contains([]byte(err.Error()), []byte(iv.Field+":")) {
			t.Errorf("invalid vector %s: error %q does not name %s", iv.Name, err, iv.Field)
		}
	}
	got, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(vectorsPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("%v (run go generate ./schedule)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date: run go generate ./schedule and commit it", vectorsPath)
	}
}
