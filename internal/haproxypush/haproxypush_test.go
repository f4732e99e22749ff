package haproxypush

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func randomKey(t *testing.T, size int) string {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// schedLine renders one schedule file line.
func schedLine(key string, nb, eu, na time.Time) string {
	return fmt.Sprintf("%s %s %s %s\n", key, nb.UTC().Format(time.RFC3339), eu.UTC().Format(time.RFC3339), na.UTC().Format(time.RFC3339))
}

func TestParseKeysFile(t *testing.T) {
	k80 := []string{randomKey(t, 80), randomKey(t, 80), randomKey(t, 80), randomKey(t, 80)}
	k48 := randomKey(t, 48)
	got, err := ParseKeysFile([]byte(strings.Join(k80, "\n") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, k80[1:]) {
		t.Fatalf("four lines: got the wrong three keys (want the last three in file order)")
	}
	bad := []struct {
		name, file, wantErr string
	}{
		{"two lines", k80[0] + "\n" + k80[1] + "\n", "has 2 key line(s), want at least 3"},
		{"mixed sizes", k80[0] + "\n" + k48 + "\n" + k80[1] + "\n", "line 2: key is 48 bytes, earlier keys are 80"},
		{"bad size", k80[0] + "\n" + base64.StdEncoding.EncodeToString(make([]byte, 64)) + "\n" + k80[1] + "\n", "line 2: key is 64 bytes, want 48 or 80"},
		{"not base64", k80[0] + "\n!!!!\n" + k80[1] + "\n", "line 2: not standard base64"},
	}
	for _, tc := range bad {
		_, err := ParseKeysFile([]byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.wantErr)
		}
		for _, k := range append(k80, k48) {
			if err != nil && strings.Contains(err.Error(), k) {
				t.Errorf("%s: error contains key material", tc.name)
			}
		}
	}
}

func TestMissingSuffix(t *testing.T) {
	a, b, c, d, e, f := "a", "b", "c", "d", "e", "f"
	cases := []struct {
		have, want, send []string
	}{
		{[]string{a, b, c}, []string{a, b, c}, nil},
		{[]string{a, b, c}, []string{b, c, d}, []string{d}},
		{[]string{a, b, c}, []string{c, d, e}, []string{d, e}},
		{[]string{a, b, c}, []string{d, e, f}, []string{d, e, f}},
		// Duplicates (the engine repeats the current key when there is no previous yet).
		{[]string{b, b, c}, []string{b, c, d}, []string{d}},
		{[]string{a, b, c}, []string{c, c, d}, []string{c, d}},
	}
	for _, tc := range cases {
		got := MissingSuffix(tc.have, tc.want)
		if !slices.Equal(got, tc.send) {
			t.Errorf("MissingSuffix(%v, %v) = %v, want %v", tc.have, tc.want, got, tc.send)
		}
		// Simulate HAProxy: each set shifts the ring left and appends.
		ring := slices.Clone(tc.have)
		for _, k := range got {
			ring = append(ring[1:], k)
		}
		if !slices.Equal(ring, tc.want) {
			t.Errorf("have %v, sending %v leaves %v, want %v", tc.have, got, ring, tc.want)
		}
	}
}

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
		{"shared not_before", good + schedLine(k[1], h(0), h(2), h(14)), "line 2 (key " + KeyID(k[1]) + "): not_before is the same as line 1's"},
	}
	for _, c := range cases {
		_, err := ParseScheduleFile([]byte(c.file))
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
	keys, err := ParseScheduleFile([]byte(zl))
	if err != nil {
		t.Fatalf("zero-length key sharing a not_before: %v", err)
	}
	if _, ids, _, _ := RingAt(keys, h(1)); ids[1] != KeyID(k[1]) {
		t.Fatalf("zero-length key: encrypting %s, want %s", ids[1], KeyID(k[1]))
	}
	var many strings.Builder
	for i := range MaxScheduleKeys {
		raw := make([]byte, 80)
		raw[0], raw[1] = byte(i), byte(i>>8)
		many.WriteString(schedLine(base64.StdEncoding.EncodeToString(raw), base.Add(time.Duration(i)*time.Minute), base.Add(time.Duration(i+1)*time.Minute), base.Add(time.Duration(i+300)*time.Minute)))
	}
	if _, err := ParseScheduleFile([]byte(many.String())); err != nil {
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
		keys, err := ParseScheduleFile([]byte(file.String()))
		if err != nil {
			t.Fatalf("%s: %v", w.Name, err)
		}
		readAt, _ := time.Parse(time.RFC3339, w.ReadAt)
		if ring, _, _, _ := RingAt(keys, readAt); !slices.Equal(ring, read.TLSTicketKeys) {
			t.Errorf("%s: ring at the read differs from the engine's tls_ticket_keys", w.Name)
		}
		for _, s := range w.Samples {
			at, _ := time.Parse(time.RFC3339Nano, s.At)
			_, ids, exhausted, _ := RingAt(keys, at)
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
