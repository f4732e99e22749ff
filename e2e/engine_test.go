//go:build e2e

package e2e

// End-to-end tests of the engine's HTTP API (docs/api.md) against a real
// Vault server with the plugin built from this checkout: formats and
// layouts, ordering and times, rotation in every mode with real waits, bad
// inputs, the bootstrap scripts (register, upgrade, audit, policies), ACLs
// and the audit log. Every identifier here starts with "eapi" because
// other engineers' files share package e2e.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	ticketkeys "github.com/ticketkeys/vault-plugin-secrets-ticketkeys"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// eapiGoInfo is the HKDF info of the go format (docs/api.md).
const eapiGoInfo = "ticketkeys go session ticket key v1"

// eapiWindow is the response of a keyring read.
type eapiWindow struct {
	Name           string    `json:"name"`
	Format         string    `json:"format"`
	KeySize        int       `json:"key_size"`
	RotationPeriod int64     `json:"rotation_period"`
	Retain         int64     `json:"retain"`
	PublishAhead   int64     `json:"publish_ahead"`
	TTL            int64     `json:"ttl"`
	Keys           []eapiKey `json:"keys"`
	TLSTicketKeys  []string  `json:"tls_ticket_keys"`
}

// eapiKey is one key of a window; Raw is TicketKey decoded.
type eapiKey struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// EncryptUntil is when the key stops encrypting (issue 9 item 10).
	EncryptUntil time.Time `json:"encrypt_until"`
	TicketKey    string    `json:"ticket_key"`
	Raw          []byte    `json:"-"`
}

// eapiResp is a raw Vault API response.
type eapiResp struct {
	Status int
	Body   []byte
	Data   json.RawMessage
	Errors []string
}

var eapiHTTP = &http.Client{Timeout: 30 * time.Second}

// eapiCall sends one request to the Vault API at addr and returns the
// status and body. A transport error fails the test.
func eapiCall(t *testing.T, addr, token, method, path string, query url.Values, body map[string]any) eapiResp {
	t.Helper()
	u := addr + "/v1/" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("marshal request body for %s %s: %v", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, path, err)
	}
	req.Header.Set("X-Vault-Token", token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := eapiHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := eapiResp{Status: resp.StatusCode, Body: b}
	if len(b) > 0 {
		var env struct {
			Data   json.RawMessage `json:"data"`
			Errors []string        `json:"errors"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatalf("%s %s: status %d, body is not JSON (%d bytes): %v", method, path, resp.StatusCode, len(b), err)
		}
		r.Data, r.Errors = env.Data, env.Errors
	}
	return r
}

// eapiWant calls and fails the test unless the status is want.
func eapiWant(t *testing.T, want int, addr, token, method, path string, query url.Values, body map[string]any) eapiResp {
	t.Helper()
	r := eapiCall(t, addr, token, method, path, query, body)
	if r.Status != want {
		t.Fatalf("%s %s %v: status %d (errors %q), want %d", method, path, query, r.Status, r.Errors, want)
	}
	return r
}

// eapiWantError calls, expects status, and checks that the error message
// contains every one of parts (the field, the rule's subject, the value).
func eapiWantError(t *testing.T, status int, addr, token, method, path string, query url.Values, body map[string]any, parts ...string) {
	t.Helper()
	r := eapiCall(t, addr, token, method, path, query, body)
	if r.Status != status {
		t.Errorf("%s %s %v %v: status %d (errors %q), want %d", method, path, query, body, r.Status, r.Errors, status)
		return
	}
	msg := strings.Join(r.Errors, "; ")
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("%s %s %v %v: error %q does not name %q", method, path, query, body, msg, p)
		}
	}
}

// eapiRead reads keyring name in format ("" = the default) and checks
// every rule a single read must satisfy (eapiCheckWindow).
func eapiRead(t *testing.T, addr, token, name, format string) eapiWindow {
	t.Helper()
	var q url.Values
	if format != "" {
		q = url.Values{"format": {format}}
	}
	start := time.Now()
	r := eapiWant(t, http.StatusOK, addr, token, "GET", "ticketkeys/keys/"+name, q, nil)
	end := time.Now()
	var w eapiWindow
	if err := json.Unmarshal(r.Data, &w); err != nil {
		t.Fatalf("read %s format %q: decode data: %v", name, format, err)
	}
	if format == "" {
		format = "nginx"
	}
	eapiCheckWindow(t, w, name, format, start, end)
	return w
}

var eapiIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// eapiCheckWindow checks one read made between start and end: order and
// states, times, ids, material lengths and encodings, tls_ticket_keys, ttl.
func eapiCheckWindow(t *testing.T, w eapiWindow, name, format string, start, end time.Time) {
	t.Helper()
	where := fmt.Sprintf("read %s format %s", name, format)
	if w.Name != name || w.Format != format {
		t.Errorf("%s: name %q format %q in the response", where, w.Name, w.Format)
	}
	if w.RotationPeriod <= 0 {
		t.Errorf("%s: rotation_period %d, want > 0 (Vault Agent needs it to re-fetch)", where, w.RotationPeriod)
	}
	if len(w.Keys) == 0 || w.Keys[0].State != "current" {
		t.Fatalf("%s: %d keys, first state %q; want the current key first", where, len(w.Keys), eapiFirstState(w))
	}
	cur := w.Keys[0]
	// Order: current, next by activation, previous newest to oldest.
	phase := "next"
	seen := map[string]bool{}
	for i, k := range w.Keys {
		if seen[k.ID] {
			t.Errorf("%s: id %s appears twice", where, k.ID)
		}
		seen[k.ID] = true
		if !eapiIDRe.MatchString(k.ID) {
			t.Errorf("%s: key %d id %q is not 32 lower-case hex digits", where, i, k.ID)
		}
		// The server never returns a key at or after its not_after; its
		// clock read the request at or after start.
		if !start.Before(k.NotAfter) {
			t.Errorf("%s: key %s returned with not_after %s, at or before the request (%s)", where, k.ID, k.NotAfter.Format(time.RFC3339), start.Format(time.RFC3339Nano))
		}
		if i == 0 {
			if k.NotBefore.After(end) {
				t.Errorf("%s: current key %s not_before %s is after the request (%s)", where, k.ID, k.NotBefore, end)
			}
			continue
		}
		switch k.State {
		case "next":
			if phase != "next" {
				t.Errorf("%s: next key %s after a previous key", where, k.ID)
			}
			prev := w.Keys[i-1]
			if !k.NotBefore.After(prev.NotBefore) {
				t.Errorf("%s: next key %s not_before %s not after %s of the key before it", where, k.ID, k.NotBefore, prev.NotBefore)
			}
			if !k.NotBefore.After(start.Add(-time.Second)) {
				t.Errorf("%s: next key %s not_before %s is already past at the request (%s)", where, k.ID, k.NotBefore, start)
			}
		case "previous":
			before := cur.NotBefore
			if phase == "previous" {
				before = w.Keys[i-1].NotBefore
			}
			phase = "previous"
			// Equal times are possible: a key replaced by mode=now within
			// the second it activated.
			if k.NotBefore.After(before) {
				t.Errorf("%s: previous key %s not_before %s after %s (previous keys go newest to oldest, none after current)", where, k.ID, k.NotBefore, before)
			}
		default:
			t.Errorf("%s: key %d state %q, want next or previous after the current key", where, i, k.State)
		}
	}
	// Material.
	for i := range w.Keys {
		k := &w.Keys[i]
		raw, err := base64.StdEncoding.DecodeString(k.TicketKey)
		if err != nil || base64.StdEncoding.EncodeToString(raw) != k.TicketKey {
			t.Fatalf("%s: key %s ticket_key is not padded standard base64 (%v)", where, k.ID, err)
		}
		k.Raw = raw
		wantLen := w.KeySize
		if format == "go" {
			wantLen = 32
		}
		if len(raw) != wantLen {
			t.Errorf("%s: key %s is %d bytes, want %d (key_size %d)", where, k.ID, len(raw), wantLen, w.KeySize)
		}
		if format != "go" && len(raw) >= 16 && hex.EncodeToString(raw[:16]) != k.ID {
			t.Errorf("%s: key %s: the first 16 bytes (the key name) are not the id", where, k.ID)
		}
	}
	// tls_ticket_keys: haproxy only, previous/current/next with stand-ins.
	if format == "haproxy" {
		want := []string{cur.TicketKey, cur.TicketKey, cur.TicketKey}
		for _, k := range w.Keys[1:] {
			if k.State == "previous" && want[0] == cur.TicketKey {
				want[0] = k.TicketKey // the newest previous key
			}
		}
		if len(w.Keys) > 1 && w.Keys[1].State == "next" {
			want[2] = w.Keys[1].TicketKey // the next key that activates first
		}
		if !slices.Equal(w.TLSTicketKeys, want) {
			t.Errorf("%s: tls_ticket_keys are not [newest previous or current, current, first next or current] (ids %v)", where, eapiIDs(w))
		}
	} else if len(w.TLSTicketKeys) != 0 {
		t.Errorf("%s: tls_ticket_keys present (%d lines) outside the haproxy format", where, len(w.TLSTicketKeys))
	}
	// ttl: at least 1, at most the time to the earliest change visible in
	// the window, rounded up, plus the jitter bound. The server computed it
	// at some instant in [start, end]; a boundary inside that interval may
	// already have passed for the server, so only boundaries after end
	// bound it, measured from start (the earliest the server can have
	// looked). The current key never encrypts longer than rotation_period.
	if w.TTL < 1 {
		t.Errorf("%s: ttl %d, want >= 1", where, w.TTL)
	}
	bound := time.Duration(w.RotationPeriod) * time.Second
	for _, k := range w.Keys {
		for _, at := range []time.Time{k.NotBefore, k.NotAfter} {
			if d := at.Sub(start); at.After(end) && d < bound {
				bound = d
			}
		}
	}
	jitter := min(max(time.Duration(w.RotationPeriod)*time.Second/20, time.Second), 30*time.Second)
	if limit := int64((bound + jitter + 2*time.Second) / time.Second); w.TTL > limit {
		t.Errorf("%s: ttl %d exceeds the time to the next visible change plus jitter (%d s)", where, w.TTL, limit)
	}
}

func eapiFirstState(w eapiWindow) string {
	if len(w.Keys) == 0 {
		return ""
	}
	return w.Keys[0].State
}

// eapiIDs lists "state:id-prefix" of a window, safe to print (ids are key
// names, not secrets).
func eapiIDs(w eapiWindow) []string {
	out := make([]string, len(w.Keys))
	for i, k := range w.Keys {
		out[i] = k.State + ":" + k.ID[:min(8, len(k.ID))]
	}
	return out
}

// eapiWaitWindow re-reads (bounded by count and time) until cond holds.
func eapiWaitWindow(t *testing.T, addr, token, name string, timeout time.Duration, what string, cond func(eapiWindow) bool) eapiWindow {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i := 0; i < int(timeout/(250*time.Millisecond))+1; i++ {
		w := eapiRead(t, addr, token, name, "")
		if cond(w) {
			return w
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("keyring %s: %s did not happen within %s", name, what, timeout)
	return eapiWindow{}
}

func eapiByID(w eapiWindow, id string) (eapiKey, bool) {
	for _, k := range w.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return eapiKey{}, false
}

func eapiOfState(w eapiWindow, state string) []eapiKey {
	var out []eapiKey
	for _, k := range w.Keys {
		if k.State == state {
			out = append(out, k)
		}
	}
	return out
}

// eapiHistory is the response of keys/:name/history.
type eapiHistory struct {
	Keys []struct {
		ID        string    `json:"id"`
		State     string    `json:"state"`
		NotBefore time.Time `json:"not_before"`
		NotAfter  time.Time `json:"not_after"`
	} `json:"keys"`
	Destroyed []struct {
		ID          string    `json:"id"`
		NotBefore   time.Time `json:"not_before"`
		NotAfter    time.Time `json:"not_after"`
		DestroyedAt time.Time `json:"destroyed_at"`
		Reason      string    `json:"reason"`
	} `json:"destroyed"`
}

func eapiReadHistory(t *testing.T, addr, token, name string) (eapiHistory, []byte) {
	t.Helper()
	r := eapiWant(t, http.StatusOK, addr, token, "GET", "ticketkeys/keys/"+name+"/history", nil, nil)
	var h eapiHistory
	if err := json.Unmarshal(r.Data, &h); err != nil {
		t.Fatalf("history %s: decode: %v", name, err)
	}
	return h, r.Body
}

func eapiDestroyedReason(h eapiHistory, id string) string {
	for _, d := range h.Destroyed {
		if d.ID == id {
			return d.Reason
		}
	}
	return ""
}

// eapiMaterial collects, per key id, the raw material of every format
// read, so that a text can be searched for any encoding of it.
type eapiMaterial map[string][][]byte

func (m eapiMaterial) add(w eapiWindow) {
	for _, k := range w.Keys {
		m[k.ID] = append(m[k.ID], k.Raw)
		if w.Format != "go" && len(k.Raw) > 16 {
			m[k.ID] = append(m[k.ID], k.Raw[16:]) // the secrets without the name
		}
	}
}

// eapiEncodings are the encodings of material searched for in texts that
// must not contain it.
var eapiEncodings = []struct {
	name string
	enc  func([]byte) string
}{
	{"base64 std", base64.StdEncoding.EncodeToString},
	{"base64 url", base64.URLEncoding.EncodeToString},
	{"base64 raw std", base64.RawStdEncoding.EncodeToString},
	{"base64 raw url", base64.RawURLEncoding.EncodeToString},
	{"hex", hex.EncodeToString},
	{"HEX", func(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }},
	{"raw bytes", func(b []byte) string { return string(b) }},
}

// eapiAssertNoMaterial fails if text contains any encoding of any
// collected material, naming the key id and encoding (never the material).
func eapiAssertNoMaterial(t *testing.T, what string, text []byte, m eapiMaterial) {
	t.Helper()
	if len(m) == 0 {
		t.Fatalf("%s: no material collected to search for", what)
	}
	n := 0
	for id, raws := range m {
		for _, raw := range raws {
			for _, e := range eapiEncodings {
				n++
				if bytes.Contains(text, []byte(e.enc(raw))) {
					t.Errorf("%s contains key %s material (%d bytes) as %s", what, id, len(raw), e.name)
				}
			}
		}
	}
	t.Logf("%s: searched %d bytes for %d encodings of material of %d keys: none found", what, len(text), n, len(m))
}

// TestEngineFormats creates keyrings of both sizes and reads them in every
// format: byte lengths, the same ids and schedule in every format, the
// layouts (nginx/envoy name|hmac|aes, haproxy name|aes|hmac for 80 bytes,
// name|aes|hmac for 48), the go key as the documented HKDF of the same
// secrets and equal to no slice of the others, tls_ticket_keys in HAProxy's
// order, defaults, list, delete and history without material.
//
// It runs on every server (vaulttest.ForEachServer): Vault and OpenBao.
func TestEngineFormats(t *testing.T) { vaulttest.ForEachServer(t, testEngineFormats) }

func testEngineFormats(t *testing.T, kind vaulttest.Kind) {
	s := vaulttest.Start(t, vaulttest.WithServer(kind))
	addr, root := s.Addr, s.RootToken

	eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/web", map[string]any{})
	eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/small", map[string]any{"key_size": 48})

	t.Run("defaults and schedule", func(t *testing.T) {
		w := eapiRead(t, addr, root, "web", "")
		if w.KeySize != 80 || w.RotationPeriod != 3600 || w.Retain != 43200 || w.PublishAhead != 3600 {
			t.Errorf("defaults: key_size %d rotation_period %d retain %d publish_ahead %d; want 80 3600 43200 3600", w.KeySize, w.RotationPeriod, w.Retain, w.PublishAhead)
		}
		// A new keyring: a current key activating now and a published next.
		if len(w.Keys) != 2 || w.Keys[1].State != "next" {
			t.Fatalf("new keyring window %v, want [current next]", eapiIDs(w))
		}
		cur, next := w.Keys[0], w.Keys[1]
		if d := time.Since(cur.NotBefore); d < -time.Second || d > 30*time.Second {
			t.Errorf("current key of a new keyring activated %s ago, want about now", d)
		}
		period, retain := time.Hour, 12*time.Hour
		if !next.NotBefore.Equal(cur.NotBefore.Add(period)) {
			t.Errorf("next not_before %s, want current not_before + rotation_period = %s", next.NotBefore, cur.NotBefore.Add(period))
		}
		for _, k := range w.Keys {
			if !k.NotAfter.Equal(k.NotBefore.Add(period + retain)) {
				t.Errorf("key %s not_after %s, want not_before + rotation_period + retain = %s", k.ID, k.NotAfter, k.NotBefore.Add(period+retain))
			}
		}
	})

	t.Run("80-byte layouts", func(t *testing.T) {
		// A previous key too, so that every state is covered. A rotation in the second the current key
		// activated starts the new key one second later (not_before stays unique): rotate after it.
		waitPastActivationSecond(eapiRead(t, addr, root, "web", ""))
		eapiWant(t, http.StatusOK, addr, root, "POST", "ticketkeys/keys/web/rotate", nil, map[string]any{"mode": "now"})
		ws := eapiReadAllFormats(t, addr, root, "web", []string{"nginx", "haproxy", "envoy", "go"})
		if got := eapiIDs(ws["nginx"]); len(got) != 3 || !strings.HasPrefix(got[1], "next:") || !strings.HasPrefix(got[2], "previous:") {
			t.Fatalf("after rotate mode=now, window %v; want [current next previous]", got)
		}
		def := eapiRead(t, addr, root, "web", "")
		if def.Format != "nginx" || !eapiSameMaterial(def, ws["nginx"]) {
			t.Errorf("a read without format is not the nginx format (format %q)", def.Format)
		}
		eapiCheckLayouts(t, ws, 80)
	})

	t.Run("48-byte layouts", func(t *testing.T) {
		eapiWant(t, http.StatusOK, addr, root, "POST", "ticketkeys/keys/small/rotate", nil, map[string]any{"mode": "now"})
		ws := eapiReadAllFormats(t, addr, root, "small", []string{"nginx", "haproxy", "go"})
		eapiCheckLayouts(t, ws, 48)
		eapiWantError(t, http.StatusBadRequest, addr, root, "GET", "ticketkeys/keys/small", url.Values{"format": {"envoy"}}, nil, "envoy", "48")
	})

	t.Run("list, history, delete", func(t *testing.T) {
		r := eapiWant(t, http.StatusOK, addr, root, "LIST", "ticketkeys/keys", nil, nil)
		var l struct {
			Keys []string `json:"keys"`
		}
		if err := json.Unmarshal(r.Data, &l); err != nil || !slices.Contains(l.Keys, "web") || !slices.Contains(l.Keys, "small") {
			t.Errorf("list: keys %q (%v), want web and small", l.Keys, err)
		}

		m := eapiMaterial{}
		for _, f := range []string{"nginx", "haproxy", "envoy", "go"} {
			m.add(eapiRead(t, addr, root, "web", f))
		}
		w := eapiRead(t, addr, root, "web", "")
		h, body := eapiReadHistory(t, addr, root, "web")
		if bytes.Contains(body, []byte("ticket_key")) {
			t.Errorf("history response has a ticket_key field")
		}
		eapiAssertNoMaterial(t, "history of web", body, m)
		if len(h.Keys) != len(w.Keys) {
			t.Errorf("history lists %d live keys, the read %d", len(h.Keys), len(w.Keys))
		}
		for _, hk := range h.Keys {
			if k, ok := eapiByID(w, hk.ID); !ok || k.State != hk.State || !k.NotBefore.Equal(hk.NotBefore) || !k.NotAfter.Equal(hk.NotAfter) {
				t.Errorf("history key %s (%s) differs from the read", hk.ID, hk.State)
			}
		}

		eapiWantStatusIn(t, addr, root, "DELETE", "ticketkeys/keys/small", nil)
		eapiWantError(t, http.StatusNotFound, addr, root, "GET", "ticketkeys/keys/small", nil, nil, "small")
		r = eapiWant(t, http.StatusOK, addr, root, "LIST", "ticketkeys/keys", nil, nil)
		l.Keys = nil
		if err := json.Unmarshal(r.Data, &l); err != nil || slices.Contains(l.Keys, "small") {
			t.Errorf("list after delete: keys %q (%v), want no small", l.Keys, err)
		}
	})

	t.Run("bad inputs", func(t *testing.T) {
		for _, c := range []struct {
			name  string
			body  map[string]any
			parts []string
		}{
			{"-bad", map[string]any{}, []string{"name", "letter or digit", "-bad"}},
			{"bad*name", map[string]any{}, []string{"name", "A-Z a-z 0-9", "bad*name"}},
			{strings.Repeat("n", 129), map[string]any{}, []string{"name", "128", strings.Repeat("n", 129)}},
			{"ok", map[string]any{"rotation_period": "1s"}, []string{"rotation_period", "5s", "24h", "1s"}},
			{"ok", map[string]any{"rotation_period": "25h"}, []string{"rotation_period", "5s", "24h", "25h"}},
			{"ok", map[string]any{"rotation_period": "soon"}, []string{"rotation_period", "duration", "soon"}},
			{"ok", map[string]any{"retain": "200h"}, []string{"retain", "168h", "200h"}},
			{"ok", map[string]any{"publish_ahead": "2h"}, []string{"publish_ahead", "rotation_period", "2h"}},
			{"ok", map[string]any{"rotation_period": "1h", "publish_ahead": "5s"}, []string{"publish_ahead", "more than 7s", "5s"}},
			{"ok", map[string]any{"rotation_period": "5s", "retain": "72h"}, []string{"would hold up to", "keys", "rotation_period 5s", "retain 72h", "256"}},
			{"ok", map[string]any{"key_size": 64}, []string{"key_size", "48 or 80", "64"}},
			{"ok", map[string]any{"rotation_period": "24h", "retain": "168h"}, []string{"rotation_period + retain", "max_key_lifetime", "24h", "168h"}},
		} {
			eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/keys/"+c.name, nil, c.body, c.parts...)
		}
		// Nothing above created a keyring.
		eapiWantError(t, http.StatusNotFound, addr, root, "GET", "ticketkeys/keys/ok", nil, nil, "ok")

		before := eapiRead(t, addr, root, "web", "")
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/keys/web", nil, map[string]any{"key_size": 48}, "key_size", "cannot change", "48")
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/keys/web", nil, map[string]any{"retain": "200h"}, "retain", "168h", "200h")
		after := eapiRead(t, addr, root, "web", "")
		if after.KeySize != before.KeySize || after.Retain != before.Retain || !slices.Equal(eapiIDs(after), eapiIDs(before)) {
			t.Errorf("rejected updates changed keyring web: %v -> %v", eapiIDs(before), eapiIDs(after))
		}

		eapiWantError(t, http.StatusBadRequest, addr, root, "GET", "ticketkeys/keys/web", url.Values{"format": {"pem"}}, nil, "format", "nginx, haproxy, envoy, go", "pem")
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/keys/web/rotate", nil, map[string]any{"mode": "sideways"}, "mode", "scheduled", "now", "sideways")
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/keys/web/rotate", nil, map[string]any{"purge_previous": "perhaps"}, "purge_previous", "bool", "perhaps")
		for _, c := range []struct{ method, path string }{
			{"GET", "ticketkeys/keys/nope"},
			{"POST", "ticketkeys/keys/nope/rotate"},
			{"GET", "ticketkeys/keys/nope/history"},
		} {
			eapiWantError(t, http.StatusNotFound, addr, root, c.method, c.path, nil, nil, "nope")
		}

		// Mount config: range, and no keyring may be left over the cap.
		r := eapiWant(t, http.StatusOK, addr, root, "GET", "ticketkeys/config", nil, nil)
		var cfg struct {
			MaxKeyLifetime int64 `json:"max_key_lifetime"`
		}
		if err := json.Unmarshal(r.Data, &cfg); err != nil || cfg.MaxKeyLifetime != 7*24*3600 {
			t.Errorf("config max_key_lifetime %d (%v), want 604800", cfg.MaxKeyLifetime, err)
		}
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/config", nil, map[string]any{"max_key_lifetime": "30s"}, "max_key_lifetime", "1m", "168h", "30s")
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/config", nil, map[string]any{"max_key_lifetime": "200h"}, "max_key_lifetime", "1m", "168h", "200h")
		// web needs 1h + 12h.
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/config", nil, map[string]any{"max_key_lifetime": "10h"}, "max_key_lifetime", "web", "13h", "10h")
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/config", map[string]any{"max_key_lifetime": "13h"})
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/keys/web", nil, map[string]any{"retain": "12h1s"}, "max_key_lifetime", "13h", "12h0m1s")
	})

	t.Run("guarantees", func(t *testing.T) {
		// Every read's ttl is capped by max_read_ttl (default 5m) and every key
		// carries its stored encrypt_until (issue 9 items 6 and 10).
		r := eapiWant(t, http.StatusOK, addr, root, "GET", "ticketkeys/config", nil, nil)
		var cfg struct {
			MaxReadTTL int64 `json:"max_read_ttl"`
		}
		if err := json.Unmarshal(r.Data, &cfg); err != nil || cfg.MaxReadTTL != 300 {
			t.Errorf("config max_read_ttl %d (%v), want 300", cfg.MaxReadTTL, err)
		}
		for _, f := range []string{"nginx", "go"} {
			w := eapiRead(t, addr, root, "web", f)
			if w.RotationPeriod != 3600 || w.TTL > 300 || w.TTL < 270 {
				t.Errorf("format %s: ttl %d with rotation_period %d, want 270..300 (max_read_ttl 5m)", f, w.TTL, w.RotationPeriod)
			}
			for _, k := range w.Keys {
				if k.EncryptUntil.Before(k.NotBefore) || k.EncryptUntil.After(k.NotAfter) {
					t.Errorf("format %s key %s: encrypt_until %s outside [not_before %s, not_after %s]", f, k.ID, k.EncryptUntil, k.NotBefore, k.NotAfter)
				}
			}
		}
		eapiWantError(t, http.StatusBadRequest, addr, root, "POST", "ticketkeys/config", nil, map[string]any{"max_read_ttl": "1s"}, "max_read_ttl", "5s", "24h", "1s")
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/config", map[string]any{"max_read_ttl": "20s"})
		if w := eapiRead(t, addr, root, "web", "go"); w.TTL > 20 || w.TTL < 18 {
			t.Errorf("ttl %d after max_read_ttl=20s, want 18..20", w.TTL)
		}
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/config", map[string]any{"max_read_ttl": "5m"})
		// publish_ahead=0 follows rotation_period again.
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/web", map[string]any{"publish_ahead": "20m"})
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/web", map[string]any{"publish_ahead": 0})
		if w := eapiRead(t, addr, root, "web", "go"); w.PublishAhead != w.RotationPeriod {
			t.Errorf("publish_ahead %d after publish_ahead=0, want rotation_period %d", w.PublishAhead, w.RotationPeriod)
		}
	})
}

// eapiWantStatusIn accepts 200 or 204 (Vault answers 204 to writes with
// no response data).
func eapiWantStatusIn(t *testing.T, addr, token, method, path string, body map[string]any) eapiResp {
	t.Helper()
	r := eapiCall(t, addr, token, method, path, nil, body)
	if r.Status != http.StatusOK && r.Status != http.StatusNoContent {
		t.Fatalf("%s %s: status %d (errors %q), want 200 or 204", method, path, r.Status, r.Errors)
	}
	return r
}

// eapiReadAllFormats reads a keyring in each format, retrying (bounded)
// until all reads see the same window, since a schedule boundary may fall
// between two reads.
func eapiReadAllFormats(t *testing.T, addr, token, name string, formats []string) map[string]eapiWindow {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		ws := map[string]eapiWindow{}
		for _, f := range formats {
			ws[f] = eapiRead(t, addr, token, name, f)
		}
		same := true
		ref := ws[formats[0]]
		for _, f := range formats[1:] {
			w := ws[f]
			if len(w.Keys) != len(ref.Keys) {
				same = false
				break
			}
			for i := range w.Keys {
				a, b := w.Keys[i], ref.Keys[i]
				if a.ID != b.ID || a.State != b.State || !a.NotBefore.Equal(b.NotBefore) || !a.NotAfter.Equal(b.NotAfter) {
					same = false
				}
			}
		}
		if same {
			return ws
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("keyring %s: reads in %v never agreed on ids, states and times", name, formats)
	return nil
}

func eapiSameMaterial(a, b eapiWindow) bool {
	if len(a.Keys) != len(b.Keys) {
		return false
	}
	for i := range a.Keys {
		if a.Keys[i].ID != b.Keys[i].ID || !bytes.Equal(a.Keys[i].Raw, b.Keys[i].Raw) {
			return false
		}
	}
	return true
}

// eapiCheckLayouts checks that the formats of one window carry the same
// secrets in the documented layouts.
func eapiCheckLayouts(t *testing.T, ws map[string]eapiWindow, size int) {
	t.Helper()
	secret := 32
	if size == 48 {
		secret = 16
	}
	nginx, haproxy, gow := ws["nginx"], ws["haproxy"], ws["go"]
	allAES := map[string]string{}
	for i, nk := range nginx.Keys {
		hk, gk := haproxy.Keys[i], gow.Keys[i]
		name := nk.Raw[:16]
		var aes, mac []byte
		if size == 80 {
			// nginx 80: name[16] hmac[32] aes[32]; haproxy: name[16] aes[32] hmac[32].
			mac, aes = nk.Raw[16:16+secret], nk.Raw[16+secret:]
			if !bytes.Equal(hk.Raw[:16], name) || !bytes.Equal(hk.Raw[16:16+secret], aes) || !bytes.Equal(hk.Raw[16+secret:], mac) {
				t.Errorf("key %s: haproxy 80 is not name|aes|hmac of the nginx name|hmac|aes", nk.ID)
			}
			ek := ws["envoy"].Keys[i]
			if !bytes.Equal(ek.Raw, nk.Raw) {
				t.Errorf("key %s: envoy bytes differ from nginx (both name|hmac|aes)", nk.ID)
			}
		} else {
			// 48: nginx and haproxy are both name[16] aes[16] hmac[16].
			aes, mac = nk.Raw[16:16+secret], nk.Raw[16+secret:]
			if !bytes.Equal(hk.Raw, nk.Raw) {
				t.Errorf("key %s: haproxy 48 differs from nginx 48 (both name|aes|hmac)", nk.ID)
			}
		}
		if prev, dup := allAES[string(aes)]; dup {
			t.Errorf("keys %s and %s share an AES secret", prev, nk.ID)
		}
		allAES[string(aes)] = nk.ID
		if bytes.Equal(aes, mac) {
			t.Errorf("key %s: AES and HMAC secrets are equal", nk.ID)
		}
		// go: 32 bytes of HKDF-SHA256(aes‖hmac, salt name, info), and no
		// slice of any other format's bytes.
		want, err := hkdf.Key(sha256.New, append(slices.Clone(aes), mac...), name, eapiGoInfo, 32)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gk.Raw, want) {
			t.Errorf("key %s: go key is not HKDF-SHA256(aes||hmac, salt=name, info=%q)", nk.ID, eapiGoInfo)
		}
		for f, w := range ws {
			if f == "go" {
				continue
			}
			for _, k := range w.Keys {
				if bytes.Contains(k.Raw, gk.Raw) || bytes.Contains(k.Raw, gk.Raw[:16]) || bytes.Contains(k.Raw, gk.Raw[16:]) {
					t.Errorf("go key %s overlaps the %s bytes of key %s", nk.ID, f, k.ID)
				}
			}
		}
	}
}

// TestEngineRotation waits for real rotations of a 5-second keyring and
// rotates keyrings in each mode, checking the schedule after each step and
// the history's reasons.
// It runs on every server (vaulttest.ForEachServer): Vault and OpenBao.
func TestEngineRotation(t *testing.T) { vaulttest.ForEachServer(t, testEngineRotation) }

func testEngineRotation(t *testing.T, kind vaulttest.Kind) {
	s := vaulttest.Start(t, vaulttest.WithServer(kind))
	addr, root := s.Addr, s.RootToken

	t.Run("scheduled by time", func(t *testing.T) {
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/fast", map[string]any{"rotation_period": "5s", "retain": "5s"})
		w0 := eapiRead(t, addr, root, "fast", "")
		if w0.PublishAhead != 5 || len(w0.Keys) != 2 {
			t.Fatalf("fast: publish_ahead %d, window %v; want 5 and [current next]", w0.PublishAhead, eapiIDs(w0))
		}
		a, b := w0.Keys[0], w0.Keys[1]
		if !b.NotBefore.Equal(a.NotBefore.Add(5 * time.Second)) {
			t.Errorf("next activates at %s, want current + 5s = %s", b.NotBefore, a.NotBefore.Add(5*time.Second))
		}
		// B becomes current by itself; A stays as previous until its not_after.
		w1 := eapiWaitWindow(t, addr, root, "fast", 12*time.Second, "next key becoming current", func(w eapiWindow) bool { return w.Keys[0].ID == b.ID })
		if time.Now().Before(b.NotBefore) {
			t.Errorf("key %s became current before its not_before %s", b.ID, b.NotBefore)
		}
		if pa, ok := eapiByID(w1, a.ID); ok && pa.State != "previous" {
			t.Errorf("old current key is %q, want previous", pa.State)
		} else if !ok && time.Now().Before(a.NotAfter.Add(-time.Second)) {
			t.Errorf("old current key %s vanished before its not_after %s", a.ID, a.NotAfter)
		}
		nexts := eapiOfState(w1, "next")
		if len(nexts) == 0 || !nexts[0].NotBefore.Equal(b.NotBefore.Add(5*time.Second)) {
			t.Errorf("after the rotation, window %v: want a next key at %s", eapiIDs(w1), b.NotBefore.Add(5*time.Second))
		}
		// A leaves the window at its not_after (eapiRead checks every read
		// for keys at or past not_after).
		eapiWaitWindow(t, addr, root, "fast", time.Until(a.NotAfter)+5*time.Second, "old key leaving at not_after", func(w eapiWindow) bool {
			_, ok := eapiByID(w, a.ID)
			return !ok
		})
		if time.Now().Before(a.NotAfter) {
			t.Errorf("key %s left the window before its not_after %s", a.ID, a.NotAfter)
		}
	})

	t.Run("mode scheduled", func(t *testing.T) {
		// publish_ahead 10s of 1h: the scheduled next key is not readable
		// yet, so the new key is the only next.
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/sched", map[string]any{"rotation_period": "1h", "retain": "1h", "publish_ahead": "10s"})
		w0 := eapiRead(t, addr, root, "sched", "")
		if len(w0.Keys) != 1 {
			t.Fatalf("sched: window %v, want only the current key (next not published yet)", eapiIDs(w0))
		}
		a := w0.Keys[0]
		t0 := time.Now().Truncate(time.Second)
		resp := eapiRotate(t, addr, root, "sched", map[string]any{"mode": "scheduled"})
		t1 := time.Now().Truncate(time.Second)
		w1 := eapiRead(t, addr, root, "sched", "")
		eapiCheckRotateResponse(t, resp, w1)
		n, ok := eapiByID(w1, resp.RotatedKeyID)
		if !ok || n.State != "next" || w1.Keys[0].ID != a.ID {
			t.Fatalf("after rotate scheduled: window %v, rotated key %s; want the old current and the new key as next", eapiIDs(w1), resp.RotatedKeyID)
		}
		// The engine rounds the rotation instant up to the second before adding publish_ahead.
		if n.NotBefore.Before(t0.Add(10*time.Second)) || n.NotBefore.After(t1.Add(11*time.Second)) {
			t.Errorf("scheduled key activates at %s, want rotation time (rounded up) + publish_ahead (10s) in [%s, %s]", n.NotBefore, t0.Add(10*time.Second), t1.Add(11*time.Second))
		}
		if !n.NotAfter.Equal(n.NotBefore.Add(2 * time.Hour)) {
			t.Errorf("scheduled key not_after %s, want not_before + 1h + 1h", n.NotAfter)
		}
		w2 := eapiWaitWindow(t, addr, root, "sched", 15*time.Second, "scheduled key activating", func(w eapiWindow) bool { return w.Keys[0].ID == n.ID })
		// The old key stops encrypting early but keeps its published
		// not_after (published times never move), which leaves it at least
		// retain after it stopped.
		pa, ok := eapiByID(w2, a.ID)
		if !ok || pa.State != "previous" || !pa.NotAfter.Equal(a.NotAfter) || pa.NotAfter.Before(n.NotBefore.Add(time.Hour)) {
			t.Errorf("after activation: window %v; want the old key previous with its published not_after %s (>= new not_before + retain %s)", eapiIDs(w2), a.NotAfter, n.NotBefore.Add(time.Hour))
		}
		// scheduled + purge_previous: the previous key goes, current stays.
		resp = eapiRotate(t, addr, root, "sched", map[string]any{"mode": "scheduled", "purge_previous": true})
		w3 := eapiRead(t, addr, root, "sched", "")
		eapiCheckRotateResponse(t, resp, w3)
		if w3.Keys[0].ID != n.ID || len(eapiOfState(w3, "previous")) != 0 {
			t.Errorf("after rotate scheduled purge_previous: window %v; want current %s and no previous", eapiIDs(w3), n.ID[:8])
		}
		h, _ := eapiReadHistory(t, addr, root, "sched")
		if r := eapiDestroyedReason(h, a.ID); r != "purged" {
			t.Errorf("history: purged key %s reason %q, want purged", a.ID, r)
		}
	})

	t.Run("mode scheduled keeps published keys", func(t *testing.T) {
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/sched2", map[string]any{"rotation_period": "1h", "retain": "1h"})
		w0 := eapiRead(t, addr, root, "sched2", "")
		if len(w0.Keys) != 2 {
			t.Fatalf("sched2: window %v, want [current next]", eapiIDs(w0))
		}
		t0 := time.Now().Truncate(time.Second)
		resp := eapiRotate(t, addr, root, "sched2", map[string]any{"mode": "scheduled"})
		w1 := eapiRead(t, addr, root, "sched2", "")
		eapiCheckRotateResponse(t, resp, w1)
		// No published key moves or disappears; the new key comes after
		// them and activates no earlier than publish_ahead from now.
		for _, k := range w0.Keys {
			k1, ok := eapiByID(w1, k.ID)
			if !ok || k1.State != k.State || !k1.NotBefore.Equal(k.NotBefore) {
				t.Errorf("rotate scheduled moved or removed published key %s (%s)", k.ID, k.State)
			}
		}
		n, ok := eapiByID(w1, resp.RotatedKeyID)
		if !ok || n.State != "next" || !n.NotBefore.After(w0.Keys[1].NotBefore) || n.NotBefore.Before(t0.Add(time.Hour)) {
			t.Errorf("new key %s in %v: want a next key after the published next, activating >= now + publish_ahead", resp.RotatedKeyID, eapiIDs(w1))
		}
	})

	t.Run("mode now and purge_previous", func(t *testing.T) {
		eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/now", map[string]any{"rotation_period": "1h", "retain": "1h"})
		w0 := eapiRead(t, addr, root, "now", "")
		if len(w0.Keys) != 2 {
			t.Fatalf("now: window %v, want [current next]", eapiIDs(w0))
		}
		a, b := w0.Keys[0], w0.Keys[1]
		waitPastActivationSecond(w0) // in the current key's own second the new key would start a second later
		t0 := time.Now().Truncate(time.Second)
		resp := eapiRotate(t, addr, root, "now", map[string]any{"mode": "now"})
		t1 := time.Now().Truncate(time.Second)
		w1 := eapiRead(t, addr, root, "now", "haproxy")
		eapiCheckRotateResponse(t, resp, w1)
		c := w1.Keys[0]
		if c.ID != resp.RotatedKeyID || c.NotBefore.Before(t0) || c.NotBefore.After(t1) {
			t.Errorf("after rotate now: current %s activating %s; want the rotated key %s activating in [%s, %s]", c.ID, c.NotBefore, resp.RotatedKeyID, t0, t1)
		}
		if _, ok := eapiByID(w1, b.ID); ok {
			t.Errorf("pending next key %s survived rotate mode=now", b.ID)
		}
		pa, ok := eapiByID(w1, a.ID)
		if !ok || pa.State != "previous" || !pa.NotAfter.Equal(a.NotAfter) || pa.NotAfter.Before(c.NotBefore.Add(time.Hour)) {
			t.Errorf("old current after rotate now: %v; want previous with its published not_after %s (>= new not_before + retain)", eapiIDs(w1), a.NotAfter)
		}
		nexts := eapiOfState(w1, "next")
		if len(nexts) != 1 || !nexts[0].NotBefore.Equal(c.NotBefore.Add(time.Hour)) {
			t.Errorf("after rotate now: window %v; want one next key at new not_before + 1h (schedule restarts)", eapiIDs(w1))
		}
		h, _ := eapiReadHistory(t, addr, root, "now")
		if r := eapiDestroyedReason(h, b.ID); r != "discarded" {
			t.Errorf("history: discarded next key %s reason %q, want discarded", b.ID, r)
		}

		resp = eapiRotate(t, addr, root, "now", map[string]any{"mode": "now", "purge_previous": true})
		w2 := eapiRead(t, addr, root, "now", "haproxy")
		eapiCheckRotateResponse(t, resp, w2)
		if w2.Keys[0].ID != resp.RotatedKeyID || len(eapiOfState(w2, "previous")) != 0 {
			t.Errorf("after rotate now purge_previous: window %v; want the new key current and no previous", eapiIDs(w2))
		}
		h, _ = eapiReadHistory(t, addr, root, "now")
		for _, id := range []string{a.ID, c.ID} {
			if r := eapiDestroyedReason(h, id); r != "purged" {
				t.Errorf("history: key %s reason %q, want purged", id, r)
			}
		}
		for _, d := range h.Destroyed {
			if d.DestroyedAt.IsZero() || d.NotBefore.IsZero() || d.NotAfter.IsZero() {
				t.Errorf("history: destroyed key %s lacks times", d.ID)
			}
		}
	})
}

// eapiRotateResp is the response of keys/:name/rotate.
type eapiRotateResp struct {
	RotatedKeyID string `json:"rotated_key_id"`
	Keys         []struct {
		ID        string    `json:"id"`
		State     string    `json:"state"`
		NotBefore time.Time `json:"not_before"`
		NotAfter  time.Time `json:"not_after"`
	} `json:"keys"`
	body []byte
}

func eapiRotate(t *testing.T, addr, token, name string, body map[string]any) eapiRotateResp {
	t.Helper()
	r := eapiWant(t, http.StatusOK, addr, token, "POST", "ticketkeys/keys/"+name+"/rotate", nil, body)
	var out eapiRotateResp
	if err := json.Unmarshal(r.Data, &out); err != nil {
		t.Fatalf("rotate %s: decode: %v", name, err)
	}
	if !eapiIDRe.MatchString(out.RotatedKeyID) {
		t.Fatalf("rotate %s: rotated_key_id %q is not an id", name, out.RotatedKeyID)
	}
	out.body = r.Body
	return out
}

// eapiCheckRotateResponse checks that a rotate response describes the
// window read right after it, without material.
func eapiCheckRotateResponse(t *testing.T, resp eapiRotateResp, w eapiWindow) {
	t.Helper()
	if bytes.Contains(resp.body, []byte("ticket_key")) {
		t.Errorf("rotate response has a ticket_key field")
	}
	m := eapiMaterial{}
	m.add(w)
	for _, k := range w.Keys {
		for _, e := range eapiEncodings {
			if bytes.Contains(resp.body, []byte(e.enc(k.Raw))) {
				t.Errorf("rotate response contains material of key %s as %s", k.ID, e.name)
			}
		}
	}
	if len(resp.Keys) != len(w.Keys) {
		t.Errorf("rotate response lists %d keys, the read after it %d", len(resp.Keys), len(w.Keys))
		return
	}
	for i, k := range resp.Keys {
		if k.ID != w.Keys[i].ID || k.State != w.Keys[i].State || !k.NotBefore.Equal(w.Keys[i].NotBefore) {
			t.Errorf("rotate response key %d (%s %s) differs from the read (%s %s)", i, k.State, k.ID, w.Keys[i].State, w.Keys[i].ID)
		}
	}
}

// eapiRepoRoot is the checkout (the e2e tests run in e2e/).
func eapiRepoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "bootstrap", "register.sh")); err != nil {
		t.Fatalf("repository root %s has no bootstrap/register.sh: %v", root, err)
	}
	return root
}

// eapiScript runs a bootstrap script against s with the root token and
// returns its stdout; a failure is returned with stderr.
func eapiScript(t *testing.T, s *vaulttest.Server, script string, args ...string) (string, error) {
	t.Helper()
	return eapiScriptEnv(t, s, nil, script, args...)
}

// eapiScriptEnv is eapiScript with env (KEY=VALUE) added to the script's
// environment. The CLI is the server's own (vault or bao) with the
// environment it reads (vaulttest.Kind.CLIEnv).
func eapiScriptEnv(t *testing.T, s *vaulttest.Server, env []string, script string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(eapiRepoRoot(t), script)}, args...)...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"VAULT=" + s.VaultBin,
	}
	cmd.Env = append(append(cmd.Env, s.Kind.CLIEnv(s.Addr, s.RootToken)...), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %q: %w; stderr: %s", script, args, err, stderr.String())
	}
	return stdout.String(), nil
}

// eapiMount reads sys/mounts/ticketkeys.
func eapiMount(t *testing.T, s *vaulttest.Server) (typ, version, sha string) {
	t.Helper()
	r := eapiWant(t, http.StatusOK, s.Addr, s.RootToken, "GET", "sys/mounts/ticketkeys", nil, nil)
	var m struct {
		Type           string `json:"type"`
		RunningVersion string `json:"running_plugin_version"`
		RunningSHA256  string `json:"running_sha256"`
	}
	if err := json.Unmarshal(r.Data, &m); err != nil {
		t.Fatalf("sys/mounts/ticketkeys: %v", err)
	}
	return m.Type, m.RunningVersion, m.RunningSHA256
}

// TestEngineBootstrapACLAudit registers and upgrades the plugin with
// bootstrap/register.sh on a non-dev server, enables auditing with
// bootstrap/audit.sh, checks the reader policy (rendered from the template
// by bootstrap/reader-policy.sh) and the operator policy, and proves that the
// audit log holds no key material in any encoding while it does hold the
// audit HMAC of a returned ticket_key.
//
// It runs on every server (vaulttest.ForEachServer). On OpenBao, which
// refuses sys/audit over the API, audit.sh without SERVER_CONFIG prints the
// configuration stanza and exits 3; with SERVER_CONFIG it declares the
// device in the server's configuration file, which a SIGHUP applies.
func TestEngineBootstrapACLAudit(t *testing.T) {
	vaulttest.ForEachServer(t, testEngineBootstrapACLAudit)
}

func testEngineBootstrapACLAudit(t *testing.T, kind vaulttest.Kind) {
	s := vaulttest.Start(t, vaulttest.WithServer(kind), vaulttest.WithoutPluginRegistration())
	addr, root := s.Addr, s.RootToken
	plugin := filepath.Join(s.PluginDir, vaulttest.PluginFile)

	// Register and enable.
	out, err := eapiScript(t, s, "bootstrap/register.sh", plugin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "enabled ticketkeys "+ticketkeys.Version+" at ticketkeys/") {
		t.Errorf("register.sh output %q: want it to say it enabled the mount", out)
	}
	if typ, ver, sha := eapiMount(t, s); typ != "ticketkeys" || ver != ticketkeys.Version || sha != s.PluginSHA256 {
		t.Fatalf("mount after register.sh: type %q version %q sha256 %s; want ticketkeys %s %s", typ, ver, sha, ticketkeys.Version, s.PluginSHA256)
	}
	if out, err := eapiScript(t, s, "bootstrap/register.sh", plugin); err != nil || !strings.Contains(out, "already runs") {
		t.Errorf("register.sh again: %q, %v; want 'already runs'", out, err)
	}
	if _, err := eapiScript(t, s, "bootstrap/register.sh", "-v", "v9.9.9", plugin); err == nil {
		t.Errorf("register.sh -v v9.9.9 succeeded for a plugin that reports %s", ticketkeys.Version)
	}
	if _, ver, _ := eapiMount(t, s); ver != ticketkeys.Version {
		t.Errorf("a failed registration changed the mount's version to %q", ver)
	}

	// Audit device.
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	if kind.AuditDeclared() {
		out, err := eapiScript(t, s, "bootstrap/audit.sh", auditLog)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(out, `audit "file" "file" {`) || !strings.Contains(err.Error(), "SERVER_CONFIG") {
			t.Fatalf("audit.sh on %s without SERVER_CONFIG: %q, %v; want exit status 3, the stanza on stdout and a message naming SERVER_CONFIG", kind.Title(), out, err)
		}
		if out, err := eapiScriptEnv(t, s, []string{"SERVER_CONFIG=" + s.ConfigPath}, "bootstrap/audit.sh", auditLog); err != nil || !strings.Contains(out, "declared file audit device at file/") {
			t.Fatalf("audit.sh with SERVER_CONFIG: %q, %v", out, err)
		}
		if out, err := eapiScriptEnv(t, s, []string{"SERVER_CONFIG=" + s.ConfigPath}, "bootstrap/audit.sh", auditLog); err != nil || !strings.Contains(out, "already declares") {
			t.Fatalf("audit.sh with SERVER_CONFIG again, before the reload: %q, %v; want 'already declares'", out, err)
		}
		s.Reload(t)
		s.WaitAuditDevice(t, "file")
	} else if out, err := eapiScript(t, s, "bootstrap/audit.sh", auditLog); err != nil || !strings.Contains(out, "enabled file audit device at file/") {
		t.Fatalf("audit.sh: %q, %v", out, err)
	}
	if out, err := eapiScript(t, s, "bootstrap/audit.sh", auditLog); err != nil || !strings.Contains(out, "already enabled") {
		t.Errorf("audit.sh again: %q, %v; want 'already enabled'", out, err)
	}

	eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/web", map[string]any{"rotation_period": "5s", "retain": "10s"})
	eapiWantStatusIn(t, addr, root, "POST", "ticketkeys/keys/other", map[string]any{})

	// Reader policy from the template.
	out, err = eapiScript(t, s, "bootstrap/reader-policy.sh", "web")
	if err != nil {
		t.Fatal(err)
	}
	readerPolicy := strings.TrimSpace(out)
	if readerPolicy != "ticketkeys-reader-web" {
		t.Fatalf("reader-policy.sh printed %q, want ticketkeys-reader-web", readerPolicy)
	}
	if _, err := eapiScript(t, s, "bootstrap/reader-policy.sh", "web*"); err == nil {
		t.Errorf("reader-policy.sh accepted a keyring name with a glob")
	}
	reader := s.NewToken(t, readerPolicy)

	// A node's AppRole from bootstrap/node-approle.sh logs in to a token that reads its keyring only.
	t.Run("node approle", func(t *testing.T) {
		dir := t.TempDir()
		out, err := eapiScript(t, s, "bootstrap/node-approle.sh", "web", "edge-1", dir)
		if err != nil {
			t.Fatal(err)
		}
		if role := strings.TrimSpace(out); role != "ticketkeys-edge-1" {
			t.Fatalf("node-approle.sh printed %q, want the role name ticketkeys-edge-1", role)
		}
		var ids [2]string
		for i, f := range []string{"role-id", "secret-id"} {
			st, err := os.Stat(filepath.Join(dir, f))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v, mode %v; want a 0600 file", f, err, st)
			}
			b, _ := os.ReadFile(filepath.Join(dir, f))
			ids[i] = strings.TrimSpace(string(b))
			if strings.Contains(out, ids[i]) {
				t.Fatalf("node-approle.sh printed the %s", f)
			}
		}
		login := eapiWant(t, http.StatusOK, addr, "", "POST", "auth/approle/login", nil, map[string]any{"role_id": ids[0], "secret_id": ids[1]})
		var auth struct {
			Auth struct {
				ClientToken string `json:"client_token"`
			} `json:"auth"`
		}
		if err := json.Unmarshal(login.Body, &auth); err != nil || auth.Auth.ClientToken == "" {
			t.Fatalf("approle login: no client token (%v)", err)
		}
		node := auth.Auth.ClientToken
		eapiRead(t, addr, node, "web", "haproxy")
		if r := eapiCall(t, addr, node, "GET", "ticketkeys/keys/other", nil, nil); r.Status != http.StatusForbidden {
			t.Errorf("node token read another keyring: status %d, want 403", r.Status)
		}
		// Run again (a second node on the same Vault): approle is already enabled.
		if _, err := eapiScript(t, s, "bootstrap/node-approle.sh", "web", "edge-2", t.TempDir()); err != nil {
			t.Fatal(err)
		}
	})

	m := eapiMaterial{}
	var ticketKeys []string
	t.Run("reader", func(t *testing.T) {
		for _, f := range []string{"", "nginx", "haproxy", "envoy", "go"} {
			w := eapiRead(t, addr, reader, "web", f)
			m.add(w)
			for _, k := range w.Keys {
				ticketKeys = append(ticketKeys, k.TicketKey)
			}
		}
		for _, c := range []struct {
			method, path string
			query        url.Values
			body         map[string]any
		}{
			{"GET", "ticketkeys/keys/other", nil, nil},
			{"GET", "ticketkeys/keys/other", url.Values{"format": {"haproxy"}}, nil},
			{"GET", "ticketkeys/keys/webx", nil, nil},
			{"GET", "ticketkeys/config", nil, nil},
			{"POST", "ticketkeys/config", nil, map[string]any{"max_key_lifetime": "1h"}},
			{"POST", "ticketkeys/keys/web", nil, map[string]any{"retain": "0s"}},
			{"DELETE", "ticketkeys/keys/web", nil, nil},
			{"POST", "ticketkeys/keys/web/rotate", nil, map[string]any{"mode": "now"}},
			{"GET", "ticketkeys/keys/web/history", nil, nil},
			{"LIST", "ticketkeys/keys", nil, nil},
			{"POST", "ticketkeys/keys/new", nil, map[string]any{}},
		} {
			if r := eapiCall(t, addr, reader, c.method, c.path, c.query, c.body); r.Status != http.StatusForbidden {
				t.Errorf("reader token: %s %s %v: status %d, want 403", c.method, c.path, c.query, r.Status)
			}
		}
	})

	t.Run("operator", func(t *testing.T) {
		hcl, err := os.ReadFile(filepath.Join(eapiRepoRoot(t), "bootstrap/policies/ticketkeys-operator.hcl"))
		if err != nil {
			t.Fatal(err)
		}
		s.WritePolicy(t, "ticketkeys-operator", string(hcl))
		op := s.NewToken(t, "ticketkeys-operator")
		eapiWant(t, http.StatusOK, addr, op, "GET", "ticketkeys/config", nil, nil)
		eapiWantStatusIn(t, addr, op, "POST", "ticketkeys/config", map[string]any{"max_key_lifetime": "168h"})
		eapiWantStatusIn(t, addr, op, "POST", "ticketkeys/keys/op1", map[string]any{"rotation_period": "30m"})
		eapiWantStatusIn(t, addr, op, "POST", "ticketkeys/keys/op1", map[string]any{"retain": "1h"})
		m.add(eapiRead(t, addr, op, "op1", "haproxy"))
		eapiWant(t, http.StatusOK, addr, op, "LIST", "ticketkeys/keys", nil, nil)
		eapiRotate(t, addr, op, "op1", map[string]any{"mode": "scheduled"})
		eapiReadHistory(t, addr, op, "op1")
		eapiWantStatusIn(t, addr, op, "DELETE", "ticketkeys/keys/op1", nil)
		for _, c := range []struct{ method, path string }{
			{"GET", "sys/mounts"},
			{"GET", "sys/audit"},
			{"GET", "sys/plugins/catalog/secret/ticketkeys"},
			{"POST", "sys/mounts/other"},
		} {
			if r := eapiCall(t, addr, op, c.method, c.path, nil, map[string]any{"type": "kv"}); r.Status != http.StatusForbidden {
				t.Errorf("operator token: %s %s: status %d, want 403", c.method, c.path, r.Status)
			}
		}
	})

	t.Run("audit log", func(t *testing.T) {
		if len(ticketKeys) == 0 {
			t.Fatal("the reader subtest collected no keys")
		}
		// Root reads of both keyrings in every format, too.
		for _, name := range []string{"web", "other"} {
			for _, f := range []string{"nginx", "haproxy", "envoy", "go"} {
				m.add(eapiRead(t, addr, root, name, f))
			}
		}
		// Snapshot before asking for a hash: the audit-hash request itself
		// is audited and would put the HMAC into the log.
		snap, err := os.ReadFile(auditLog)
		if err != nil {
			t.Fatal(err)
		}
		eapiAssertNoMaterial(t, "audit log", snap, m)

		// The reads were audited, every ticket_key as an HMAC.
		sc := bufio.NewScanner(bytes.NewReader(snap))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		hashed := 0
		for sc.Scan() {
			var e struct {
				Type    string `json:"type"`
				Request struct {
					Path string `json:"path"`
				} `json:"request"`
				Response struct {
					Data struct {
						Keys          json.RawMessage `json:"keys"`
						TLSTicketKeys []string        `json:"tls_ticket_keys"`
					} `json:"data"`
				} `json:"response"`
			}
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("audit log line is not JSON: %v", err)
			}
			// Keyring reads, rotations and histories carry a list of key
			// objects (a LIST response has names instead).
			var keys []struct {
				TicketKey string `json:"ticket_key"`
			}
			if e.Type != "response" || !strings.HasPrefix(e.Request.Path, "ticketkeys/keys/") || json.Unmarshal(e.Response.Data.Keys, &keys) != nil || len(keys) == 0 {
				continue
			}
			for _, k := range keys {
				if k.TicketKey != "" && !strings.HasPrefix(k.TicketKey, "hmac-sha256:") {
					t.Errorf("audit entry for %s: ticket_key is not an HMAC", e.Request.Path)
				}
			}
			for _, l := range e.Response.Data.TLSTicketKeys {
				if !strings.HasPrefix(l, "hmac-sha256:") {
					t.Errorf("audit entry for %s: a tls_ticket_keys line is not an HMAC", e.Request.Path)
				}
			}
			hashed++
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if want := 5 + 8 + 1; hashed < want {
			t.Errorf("audit log has %d keyring read responses, want at least %d", hashed, want)
		}
		h, err := s.Client.Sys().AuditHash("file", ticketKeys[0])
		if err != nil {
			t.Fatalf("sys/audit-hash/file: %v", err)
		}
		if !strings.HasPrefix(h, "hmac-sha256:") || !bytes.Contains(snap, []byte(h)) {
			t.Errorf("audit log lacks the audit HMAC of a ticket_key the reader received")
		}
		t.Logf("audit log: %d keyring read responses, all ticket keys HMAC'd; the HMAC of one returned ticket_key is present", hashed)
	})

	// Control: the search above can find material. With ticket_key
	// exempted from hashing (audit_non_hmac_response_keys), a read puts the
	// key into the audit log in clear, and the same search must see it.
	t.Run("audit control", func(t *testing.T) {
		fi, err := os.Stat(auditLog)
		if err != nil {
			t.Fatal(err)
		}
		eapiWantStatusIn(t, addr, root, "POST", "sys/mounts/ticketkeys/tune", map[string]any{"audit_non_hmac_response_keys": []string{"ticket_key"}})
		defer eapiWantStatusIn(t, addr, root, "POST", "sys/mounts/ticketkeys/tune", map[string]any{"audit_non_hmac_response_keys": []string{""}})
		w := eapiRead(t, addr, root, "other", "haproxy")
		b, err := os.ReadFile(auditLog)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, k := range w.Keys {
			if bytes.Contains(b[fi.Size():], []byte(k.TicketKey)) {
				found++
			}
		}
		if found != len(w.Keys) {
			t.Errorf("with ticket_key exempted from hashing, the audit log shows %d of %d keys in clear: the material search cannot be trusted", found, len(w.Keys))
		}
	})

	t.Run("upgrade", func(t *testing.T) {
		before := eapiRead(t, addr, root, "other", "")
		// A different binary of the same version: the same build with
		// trailing bytes, which an ELF loader ignores.
		b, err := os.ReadFile(plugin)
		if err != nil {
			t.Fatal(err)
		}
		rebuilt := filepath.Join(s.PluginDir, vaulttest.PluginFile+"-rebuilt")
		if err := os.WriteFile(rebuilt, append(b, []byte("ticketkeys e2e upgrade marker\n")...), 0o755); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(append(b, []byte("ticketkeys e2e upgrade marker\n")...))
		newSHA := hex.EncodeToString(sum[:])
		out, err := eapiScript(t, s, "bootstrap/register.sh", rebuilt)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "upgraded ticketkeys/") {
			t.Errorf("register.sh with a new binary: output %q, want 'upgraded ticketkeys/'", out)
		}
		if _, ver, sha := eapiMount(t, s); ver != ticketkeys.Version || sha != newSHA {
			t.Errorf("after upgrade the mount runs %s sha256 %s, want %s %s", ver, sha, ticketkeys.Version, newSHA)
		}
		after := eapiRead(t, addr, root, "other", "")
		if after.Keys[0].ID != before.Keys[0].ID || !eapiSameMaterial(after, before) {
			t.Errorf("after upgrade keyring other changed: %v -> %v", eapiIDs(before), eapiIDs(after))
		}
	})
}

// eapiMeasurePurgePropagation runs `rotate mode=now purge_previous=true` on
// keyring and polls every node's keys (held(i): what node i serves from,
// e.g. its rendered files or its HAProxy ring) until none holds any purged
// key, in raw or base64 form. It logs each node's propagation time and fails
// when a node still holds a purged key after limit (issue 9 item 6).
func eapiMeasurePurgePropagation(t *testing.T, s *vaulttest.Server, keyring, format string, names []string, held func(i int) []byte, limit time.Duration) {
	t.Helper()
	before := readWindow(t, s, keyring, format)
	if _, err := s.Client.Logical().Write("ticketkeys/keys/"+keyring+"/rotate", map[string]any{"mode": "now", "purge_previous": true}); err != nil {
		t.Fatalf("emergency rotation: %v", err)
	}
	start := time.Now()
	holdsPurged := func(b []byte) bool {
		for _, k := range before.Keys {
			if bytes.Contains(b, k.Raw) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString(k.Raw))) {
				return true
			}
		}
		return false
	}
	took := make([]time.Duration, len(names))
	for pending := len(names); pending > 0; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > limit {
			for i, d := range took {
				if d == 0 {
					t.Errorf("%s still holds a purged key %s after the emergency rotation", names[i], limit)
				}
			}
			return
		}
		for i := range names {
			if took[i] == 0 && !holdsPurged(held(i)) {
				took[i] = time.Since(start)
				pending--
			}
		}
	}
	var parts []string
	for i, d := range took {
		parts = append(parts, fmt.Sprintf("%s %s", names[i], d.Round(10*time.Millisecond)))
	}
	t.Logf("emergency rotation (mode=now purge_previous=true) reached every node: %s (bound: max_read_ttl + Agent 1s + render)", strings.Join(parts, ", "))
}

// waitPastActivationSecond sleeps until the clock is past the second in which w's current key activated:
// `rotate mode=now` in that very second starts the new key at the next second, so that not_before stays
// unique (docs/api.md); tests that want the rotated key current at once rotate after it.
func waitPastActivationSecond(w eapiWindow) {
	if len(w.Keys) == 0 {
		return
	}
	if until := time.Until(w.Keys[0].NotBefore.Add(time.Second + 50*time.Millisecond)); until > 0 {
		time.Sleep(until)
	}
}
