package fleetcheck

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// windowJSON renders keys as the engine's response data in format.
func windowJSON(t *testing.T, format string, keySize int, keys []*Key, edit func(m map[string]any)) []byte {
	t.Helper()
	var wk []map[string]any
	for _, k := range keys {
		wk = append(wk, map[string]any{"id": k.ID, "state": k.State, "not_before": k.NotBefore.Format(time.RFC3339),
			"not_after": k.NotAfter.Format(time.RFC3339), "ticket_key": base64.StdEncoding.EncodeToString(k.material(format))})
	}
	m := map[string]any{"name": "web", "format": format, "key_size": keySize, "rotation_period": 3600, "retain": 43200,
		"publish_ahead": 3600, "ttl": 100, "keys": wk}
	if edit != nil {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseWindow reads every format's layout back into the same AES, HMAC
// and go keys, and rejects malformed windows with errors that name the field
// and never echo material.
func TestParseWindow(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		format string
		size   int
	}{{FormatNginx, 80}, {FormatNginx, 48}, {FormatHAProxy, 80}, {FormatHAProxy, 48}, {FormatEnvoy, 80}, {FormatGo, 80}, {FormatGo, 48}} {
		k := newKey(t, tc.size, now, now.Add(time.Hour))
		k.State = "current"
		w, err := ParseWindow(windowJSON(t, tc.format, tc.size, []*Key{k}, nil), tc.format, now)
		if err != nil {
			t.Fatalf("%s/%d: %v", tc.format, tc.size, err)
		}
		got := w.Keys[0]
		if tc.format == FormatGo {
			if !bytes.Equal(got.gok, k.gok) {
				t.Errorf("%s/%d: go key differs", tc.format, tc.size)
			}
			continue
		}
		if !bytes.Equal(got.aes, k.aes) || !bytes.Equal(got.hmac, k.hmac) || got.name != k.name {
			t.Errorf("%s/%d: the layout was split wrongly", tc.format, tc.size)
		}
	}

	k := newKey(t, 80, now, now.Add(time.Hour))
	k.State = "current"
	secret := base64.StdEncoding.EncodeToString(k.material(FormatNginx))
	keyField := func(field string, v any) func(map[string]any) {
		return func(m map[string]any) { m["keys"].([]map[string]any)[0][field] = v }
	}
	for _, tc := range []struct {
		name   string
		format string
		edit   func(map[string]any)
		want   string
	}{
		{"format mismatch", FormatHAProxy, nil, `window: format: must be "haproxy", got "nginx"`},
		{"bad key size", FormatNginx, func(m map[string]any) { m["key_size"] = 64 }, "key_size: must be 48 or 80, got 64"},
		{"no keys", FormatNginx, func(m map[string]any) { m["keys"] = []any{} }, "keys: must hold at least one key, got 0"},
		{"bad id", FormatNginx, keyField("id", "xyz"), "keys[0].id: must be 32 hex characters, got 3 characters"},
		{"name not the id", FormatNginx, keyField("id", strings.Repeat("ab", 16)), "must start with the key name whose hex is the id"},
		{"not base64", FormatNginx, keyField("ticket_key", "!!"+secret[2:]), "keys[0].ticket_key: must be standard padded base64"},
		{"wrong length", FormatNginx, keyField("ticket_key", secret[:len(secret)-8]), "must decode to key_size (80) bytes"},
		{"bad time", FormatNginx, keyField("not_after", "tomorrow"), `keys[0].not_after: must be an RFC 3339 time, got "tomorrow"`},
		{"reversed times", FormatNginx, keyField("not_after", now.Add(-time.Hour).UTC().Format(time.RFC3339)), "keys[0].not_after: must be after not_before"},
		{"ticket_key a number", FormatNginx, keyField("ticket_key", 5), `field "keys.ticket_key": want string, got JSON number`},
	} {
		_, err := ParseWindow(windowJSON(t, FormatNginx, 80, []*Key{k}, tc.edit), tc.format, now)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), secret[20:40]) || strings.Contains(err.Error(), string(k.aes))) {
			t.Errorf("%s: the error shows material", tc.name)
		}
	}
	env := newKey(t, 48, now, now.Add(time.Hour))
	if _, err := ParseWindow(windowJSON(t, FormatEnvoy, 48, []*Key{env}, nil), FormatEnvoy, now); err == nil || !strings.Contains(err.Error(), "format envoy needs 80-byte keys") {
		t.Errorf("envoy with 48-byte keys: %v", err)
	}
}

// TestKeyAtFollowsTheVectors: for every window of the schedule package's
// test vectors (zero-length keys, encrypt_until brought forward, capped
// lifetimes, 26 and 256 keys, every format), ParseWindow accepts every read
// and KeyAt names the vectors' encrypting key at every sample instant, none
// where the schedule is exhausted. The old KeyAt ignored encrypt_until: it
// kept the last key encrypting until its not_after.
func TestKeyAtFollowsTheVectors(t *testing.T) {
	raw, err := os.ReadFile("../schedule/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Windows []struct {
			Name    string                     `json:"name"`
			Reads   map[string]json.RawMessage `json:"reads"`
			Samples []struct {
				At         time.Time `json:"at"`
				Encrypting string    `json:"encrypting"`
			} `json:"samples"`
		} `json:"windows"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, vw := range v.Windows {
		for format, read := range vw.Reads {
			w, err := ParseWindow(read, format, time.Now())
			if err != nil {
				t.Errorf("%s/%s: %v", vw.Name, format, err)
				continue
			}
			for _, s := range vw.Samples {
				got := ""
				if k := w.KeyAt(s.At); k != nil {
					got = k.ID
				}
				if got != s.Encrypting {
					t.Errorf("%s/%s at %s: KeyAt = %q, want %q", vw.Name, format, s.At.Format(time.RFC3339Nano), got, s.Encrypting)
				}
				checked++
			}
		}
	}
	if checked < 200 {
		t.Fatalf("only %d samples checked", checked)
	}
}
