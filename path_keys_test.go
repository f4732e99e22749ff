package ticketkeys

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/logical"
)

func TestNewKeyringIsImmediatelyUsable(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", nil)

	resp, keys := readWindow(t, tb, "web", "nginx")
	if len(keys) != 2 || keys[0].State != stateCurrent || keys[1].State != stateNext {
		t.Fatalf("new keyring window = %v, want current then next", states(keys))
	}
	if !keys[0].NotBefore.Equal(testStart) || !keys[1].NotBefore.Equal(testStart.Add(time.Hour)) {
		t.Fatalf("activation times %v, %v; want %v and an hour later", keys[0].NotBefore, keys[1].NotBefore, testStart)
	}
	if want := testStart.Add(13 * time.Hour); !keys[0].NotAfter.Equal(want) {
		t.Fatalf("current not_after = %v, want rotation_period + retain later: %v", keys[0].NotAfter, want)
	}
	for field, want := range map[string]interface{}{"rotation_period": int64(3600), "retain": int64(43200), "publish_ahead": int64(3600), "key_size": 80, "ttl": int64(300)} {
		if resp.Data[field] != want {
			t.Errorf("%s = %#v, want %#v", field, resp.Data[field], want)
		}
	}
	if resp.Secret != nil {
		t.Fatal("read returned a lease; the window must be plain data")
	}

	// HAProxy needs three lines from the start: the current key stands in for the missing previous.
	hresp, hkeys := readWindow(t, tb, "web", "haproxy")
	lines := hresp.Data[haproxyLinesField].([]string)
	want := []string{b64(hkeys[0].Material), b64(hkeys[0].Material), b64(hkeys[1].Material)}
	if strings.Join(lines, ",") != strings.Join(want, ",") {
		t.Fatal("haproxy lines of a new keyring are not current, current, next")
	}
}

func TestFormatsShareOneSecretPerID(t *testing.T) {
	for _, size := range []int{80, 48} {
		tb := getBackend(t)
		tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"key_size": size, "rotation_period": "10m", "retain": "30m"})
		tb.clock.Advance(25 * time.Minute) // two rotations: current, next and previous keys
		tb.tick(t)

		byFormat := map[string][]windowKeyOut{}
		for _, f := range formats {
			if f == formatEnvoy && size == 48 {
				continue
			}
			_, byFormat[f] = readWindow(t, tb, "web", f)
		}
		n := len(byFormat[formatNginx])
		if got := states(byFormat[formatNginx]); got != "current,next,previous,previous" {
			t.Fatalf("size %d: states %s, want current,next,previous,previous", size, got)
		}
		half := (size - 16) / 2
		for i := 0; i < n; i++ {
			ng, hp, gk := byFormat[formatNginx][i], byFormat[formatHAProxy][i], byFormat[formatGo][i]
			if ng.ID != hp.ID || ng.ID != gk.ID {
				t.Fatalf("size %d: formats disagree on the order of ids", size)
			}
			if len(ng.Material) != size || len(hp.Material) != size || len(gk.Material) != 32 {
				t.Fatalf("size %d: lengths nginx %d haproxy %d go %d", size, len(ng.Material), len(hp.Material), len(gk.Material))
			}
			name := hp.Material[:16]
			if hex.EncodeToString(name) != ng.ID || !bytes.Equal(ng.Material[:16], name) {
				t.Fatalf("size %d: key name is not the id in every format", size)
			}
			aes, hmacKey := hp.Material[16:16+half], hp.Material[16+half:]
			var wantNginx []byte
			if size == 80 { // nginx 80: name hmac aes
				wantNginx = concat(name, hmacKey, aes)
			} else { // nginx 48: name aes hmac
				wantNginx = concat(name, aes, hmacKey)
			}
			if !bytes.Equal(ng.Material, wantNginx) {
				t.Fatalf("size %d: nginx layout does not match haproxy's secrets for key %s", size, ng.ID)
			}
			if size == 80 && !bytes.Equal(byFormat[formatEnvoy][i].Material, wantNginx) {
				t.Fatalf("envoy layout differs from nginx 80 for key %s", ng.ID)
			}
			wantGo, err := hkdf.Key(sha256.New, concat(aes, hmacKey), name, goKeyInfo, 32)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gk.Material, wantGo) {
				t.Fatalf("size %d: go key is not HKDF of the key's secrets", size)
			}
			for off := 0; off+32 <= size; off++ {
				if bytes.Equal(hp.Material[off:off+32], gk.Material) {
					t.Fatalf("size %d: go key reuses bytes of the server key", size)
				}
			}
		}
		resp, hkeys := readWindow(t, tb, "web", "haproxy")
		lines := resp.Data[haproxyLinesField].([]string)
		want := []string{b64(hkeys[2].Material), b64(hkeys[0].Material), b64(hkeys[1].Material)}
		if strings.Join(lines, ",") != strings.Join(want, ",") {
			t.Fatalf("size %d: haproxy lines are not previous, current, next", size)
		}
	}
}

func TestKeyringValidation(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		op      logical.Operation
		data    map[string]interface{}
		wantErr []string // every fragment must appear in the error
	}{
		{"name with a space", "keys/web%20x", logical.UpdateOperation, nil, []string{"name", "A-Z a-z 0-9", `"web%20x"`}},
		{"name starting with a dot", "keys/.hidden", logical.UpdateOperation, nil, []string{"name", "starting with a letter or digit", `".hidden"`}},
		{"name too long", "keys/" + strings.Repeat("a", 129), logical.UpdateOperation, nil, []string{"name", "1 to 128"}},
		{"rotation_period too short", "keys/web", logical.UpdateOperation, map[string]interface{}{"rotation_period": "2s"}, []string{"rotation_period", "between 5s and 24h", "got 2s"}},
		{"rotation_period too long", "keys/web", logical.UpdateOperation, map[string]interface{}{"rotation_period": "25h"}, []string{"rotation_period", "between 5s and 24h", "got 25h"}},
		{"rotation_period negative", "keys/web", logical.UpdateOperation, map[string]interface{}{"rotation_period": "-1h"}, []string{"rotation_period", "negative"}},
		{"rotation_period not a duration", "keys/web", logical.UpdateOperation, map[string]interface{}{"rotation_period": "soon"}, []string{"rotation_period", "soon"}},
		{"retain too long", "keys/web", logical.UpdateOperation, map[string]interface{}{"retain": "200h"}, []string{"retain", "between 0s and 168h", "got 200h"}},
		{"publish_ahead negative", "keys/web", logical.UpdateOperation, map[string]interface{}{"publish_ahead": "-5s"}, []string{"publish_ahead", "negative"}},
		{"publish_ahead over period", "keys/web", logical.UpdateOperation, map[string]interface{}{"rotation_period": "1h", "publish_ahead": "2h"}, []string{"publish_ahead", "must not exceed rotation_period (1h)", "got 2h"}},
		{"publish_ahead shorter than a reader's lag", "keys/web", logical.UpdateOperation, map[string]interface{}{"rotation_period": "1h", "publish_ahead": "7s"}, []string{"publish_ahead must be more than 7s with rotation_period 1h", "reader delay up to 5s", "got 7s"}},
		{"key_size 64", "keys/web", logical.UpdateOperation, map[string]interface{}{"key_size": 64}, []string{"key_size", "48 or 80", "got 64"}},
		{"key_size text", "keys/web", logical.UpdateOperation, map[string]interface{}{"key_size": "big"}, []string{"key_size", "big"}},
		{"lifetime over cap", "keys/web", logical.UpdateOperation, map[string]interface{}{"rotation_period": "24h", "retain": "150h"}, []string{"rotation_period + retain", "max_key_lifetime (168h", "24h + 150h = 174h"}},
		{"format written", "keys/web", logical.UpdateOperation, map[string]interface{}{"format": "go"}, []string{"format", "read parameter"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := getBackend(t)
			resp, err := tb.request(t, tt.op, tt.path, tt.data)
			msg := errorText(resp, err)
			if msg == "" {
				t.Fatalf("no error for %v", tt.data)
			}
			if err == nil && !resp.IsError() {
				t.Fatalf("want a 400 error response, got %v", resp)
			}
			for _, frag := range tt.wantErr {
				if !strings.Contains(msg, frag) {
					t.Errorf("error %q does not contain %q", msg, frag)
				}
			}
			// Nothing half written: a rejected create leaves no keyring.
			list := tb.mustRequest(t, logical.ListOperation, "keys/", nil)
			if n := len(list.Data); n != 0 && list.Data["keys"] != nil {
				t.Fatalf("rejected request left a keyring: %v", list.Data["keys"])
			}
		})
	}
}

func TestReadValidation(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/small", map[string]interface{}{"key_size": 48})

	tests := []struct {
		name, path, format string
		wantStatus         int
		wantErr            []string
	}{
		{"unknown format", "keys/small", "apache", 400, []string{"format must be one of nginx, haproxy, envoy, go", `"apache"`}},
		{"envoy needs 80", "keys/small", "envoy", 400, []string{`format "envoy" needs 80-byte keys`, "key_size 48"}},
		{"unknown keyring", "keys/nope", "nginx", 404, []string{`keyring "nope" does not exist`}},
		{"bad name", "keys/no$pe", "nginx", 400, []string{"name must be", `"no$pe"`}},
		{"history of unknown keyring", "keys/nope/history", "", 404, []string{`keyring "nope" does not exist`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := map[string]interface{}{}
			if tt.format != "" {
				data["format"] = tt.format
			}
			resp, err := tb.request(t, logical.ReadOperation, tt.path, data)
			assertStatus(t, resp, err, tt.wantStatus, tt.wantErr...)
		})
	}
}

func TestUpdateAndRotateUnknownKeyringIs404(t *testing.T) {
	tb := getBackend(t)
	resp, err := tb.request(t, logical.UpdateOperation, "keys/ghost/rotate", nil)
	assertStatus(t, resp, err, 404, `keyring "ghost" does not exist`)
}

func TestKeySizeIsFixedAtCreation(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", nil)
	_, before := readWindow(t, tb, "web", "nginx")
	resp, err := tb.request(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"key_size": 48, "rotation_period": "30m"})
	assertStatus(t, resp, err, 400, "key_size cannot change after creation", "has 80, got 48")
	// The rejected update changed nothing, not even the valid rotation_period given with it.
	resp2, after := readWindow(t, tb, "web", "nginx")
	if resp2.Data["rotation_period"] != int64(3600) || ids(before) != ids(after) {
		t.Fatal("a rejected update was half applied")
	}
}

func TestListAndDelete(t *testing.T) {
	tb := getBackend(t)
	for _, n := range []string{"web", "api.internal", "mail_2"} {
		tb.mustRequest(t, logical.UpdateOperation, "keys/"+n, nil)
	}
	list := tb.mustRequest(t, logical.ListOperation, "keys/", nil)
	if got := strings.Join(list.Data["keys"].([]string), ","); got != "api.internal,mail_2,web" {
		t.Fatalf("list = %s", got)
	}
	tb.mustRequest(t, logical.DeleteOperation, "keys/web", nil)
	resp, err := tb.request(t, logical.ReadOperation, "keys/web", nil)
	assertStatus(t, resp, err, 404, `keyring "web" does not exist`)
	if e, _ := tb.storage.Get(t.Context(), keyringPath("web")); e != nil {
		t.Fatal("delete left the keyring's material in storage")
	}
}

func TestTTLJitterIsAfterTheChange(t *testing.T) {
	tb := getBackend(t)
	tb.jitter = func(n int64) int64 { return n - 1 } // the largest jitter
	tb.mustRequest(t, logical.UpdateOperation, "config", map[string]interface{}{"max_read_ttl": "24h"})
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h"})
	tb.clock.Advance(10*time.Minute + 500*time.Millisecond)
	resp, _ := readWindow(t, tb, "web", "go")
	// 49m59.5s until the next key is published, rounded up, plus at most min(1h/20, publish_ahead/10, 30s) = 30s.
	if got, want := resp.Data["ttl"], int64(50*60+30); got != want {
		t.Fatalf("ttl = %v, want %v", got, want)
	}

	// The production jitter stays within that bound and does spread readers.
	tb.jitter = newBackend(time.Now, nil).jitter
	seen := map[int64]bool{}
	for range 200 {
		resp, _ := readWindow(t, tb, "web", "go")
		ttl := resp.Data["ttl"].(int64)
		if ttl < 50*60 || ttl > 50*60+30 {
			t.Fatalf("ttl = %d, want between 3000 and 3030", ttl)
		}
		seen[ttl] = true
	}
	if len(seen) < 2 {
		t.Fatal("200 reads all got the same ttl: no jitter")
	}
}

func TestNoMaterialInLogsWarningsOrErrors(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "publish_ahead": "10m"})
	var all []windowKeyOut
	var texts []string
	for step := 0; step < 4; step++ {
		for _, f := range formats {
			resp, keys := readWindow(t, tb, "web", f)
			all = append(all, keys...)
			texts = append(texts, strings.Join(resp.Warnings, "\n"))
		}
		tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now"})
		resp, err := tb.request(t, logical.ReadOperation, "keys/web", map[string]interface{}{"format": "bogus"})
		texts = append(texts, errorText(resp, err))
		tb.clock.Advance(40 * time.Minute)
		tb.tick(t)
	}
	hist := tb.mustRequest(t, logical.ReadOperation, "keys/web/history", nil)
	texts = append(texts, tb.logs.String(), fmt.Sprint(hist.Data))
	if !strings.Contains(strings.Join(texts, "\n"), "no next key is published") {
		t.Fatal("the haproxy warning for a missing next key was not produced, so warnings were not exercised")
	}
	assertNoMaterial(t, "logs, warnings, errors and history", strings.Join(texts, "\n"), all)
}

func states(keys []windowKeyOut) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.State
	}
	return strings.Join(s, ",")
}

func ids(keys []windowKeyOut) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.ID
	}
	return strings.Join(s, ",")
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func errorText(resp *logical.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	if resp != nil && resp.IsError() {
		return resp.Error().Error()
	}
	return ""
}

// assertStatus checks the HTTP status Vault would answer with and the error text.
func assertStatus(t *testing.T, resp *logical.Response, err error, status int, fragments ...string) {
	t.Helper()
	got := 0
	switch {
	case err != nil:
		var coded logical.HTTPCodedError
		var user errutil.UserError
		switch {
		case errors.As(err, &coded):
			got = coded.Code()
		case errors.As(err, &user):
			got = 400
		default:
			got = 500
		}
	case resp != nil && resp.IsError():
		got = 400
	default:
		got = 200
	}
	if got != status {
		t.Fatalf("status %d, want %d (%s)", got, status, errorText(resp, err))
	}
	msg := errorText(resp, err)
	for _, f := range fragments {
		if !strings.Contains(msg, f) {
			t.Errorf("error %q does not contain %q", msg, f)
		}
	}
}

// TestWindowPublishesPublishAt: every key of a read carries its stored
// publish_at, so a reader (the fleet check) judges when a key became
// readable from the key itself, not from today's publish_ahead, which may
// have changed since it was published.
func TestWindowPublishesPublishAt(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "publish_ahead": "20m"})
	tb.clock.Advance(45 * time.Minute) // the next key is published (at 40m)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"publish_ahead": "30m"})
	stored := map[string]time.Time{}
	for _, k := range tb.cached(t, "web").Keys {
		stored[k.ID()] = k.PublishAt
	}
	for _, f := range formats {
		resp, keys := readWindow(t, tb, "web", f)
		raw := resp.Data["keys"].([]map[string]interface{})
		if len(keys) < 2 {
			t.Fatalf("format %s: %d keys; want the current and the published next key", f, len(keys))
		}
		for i, k := range keys {
			got, err := time.Parse(time.RFC3339, fmt.Sprint(raw[i]["publish_at"]))
			if err != nil {
				t.Fatalf("format %s key %s: publish_at %v: %v", f, k.ID, raw[i]["publish_at"], err)
			}
			if !got.Equal(stored[k.ID]) {
				t.Fatalf("format %s key %s: publish_at %s, stored %s", f, k.ID, got, stored[k.ID])
			}
		}
	}
}
