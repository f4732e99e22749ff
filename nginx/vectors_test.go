package nginx_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// vectors is the part of schedule/testdata/vectors.json (generated from the schedule package, the one
// definition of the window's rules in Go) that the Lua module is held to.
type vectors struct {
	Windows []struct {
		Name    string `json:"name"`
		ReadAt  string `json:"read_at"`
		Secrets []struct {
			ID   string `json:"id"`
			AES  string `json:"aes"`
			HMAC string `json:"hmac"`
		} `json:"secrets"`
		Reads   map[string]vectorRead `json:"reads"`
		Samples []struct {
			At         string   `json:"at"`
			UnixMS     int64    `json:"unix_ms"`
			Encrypting string   `json:"encrypting"`
			Decrypting []string `json:"decrypting"`
		} `json:"samples"`
	} `json:"windows"`
	Invalid []struct {
		Name   string     `json:"name"`
		Format string     `json:"format"`
		Field  string     `json:"field"`
		Window vectorRead `json:"window"`
	} `json:"invalid"`
}

type vectorRead struct {
	Keys []map[string]any `json:"keys"`
}

// windowFile renders a read's keys as the shipped window.ctmpl does: per key its ticket_key and times.
// ok is false when a key lacks a field the template renders (an engine before v0.2.0 has no
// encrypt_until: Agent then fails the render, error_on_missing_key, and the file keeps the last window).
func (r vectorRead) windowFile() (string, bool) {
	var b strings.Builder
	for _, k := range r.Keys {
		for _, f := range []string{"ticket_key", "not_before", "encrypt_until", "not_after"} {
			if _, ok := k[f].(string); !ok {
				return "", false
			}
		}
		fmt.Fprintf(&b, "%s %s %s %s\n", k["ticket_key"], k["not_before"], k["encrypt_until"], k["not_after"])
	}
	return b.String(), true
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "schedule", "testdata", "vectors.json"))
	if err != nil {
		t.Fatalf("schedule test vectors: %v", err)
	}
	var v vectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("schedule test vectors: %v", err)
	}
	return v
}

// TestScheduleVectors holds the Lua module, on each build's LuaJIT, to the schedule package's test
// vectors (issue 18, "one definition of the schedule"): for every vector window the shipped template can
// render (keys with encrypt_until), the window file parses, and at every sample instant the encrypting
// key is the vectors' (or, before every not_before, where the vectors have none, the file's first key:
// the Go client's clock-behind rule) and the keys it serves are exactly the vectors' decrypting keys;
// each key's name, hmac and aes, as the module writes them into nginx's key elements (both struct
// generations), are the vectors' secrets in the engine's nginx layout; and every invalid vector whose
// fault the window file carries (times, material, no keys) is refused naming the rule (faults of fields
// the file does not carry, state, id, key_size, are logged as not applicable).
func TestScheduleVectors(t *testing.T) {
	eachNginx(t, testScheduleVectors)
}

func testScheduleVectors(t *testing.T, b *servertest.NginxBuild) {
	v := loadVectors(t)
	cert := testcert.New(t, testcert.ECDSAP256)
	port := servertest.FreePort(t)
	fieldsPort := servertest.FreePort(t)
	extra := scheduleLocations(port) + strings.Replace(fmt.Sprintf(`    server {
        listen 127.0.0.1:%d;
        client_body_buffer_size 1m;
        location = /fields {
            content_by_lua_block {
                local tk = require("resty.ticketkeys")
                ngx.req.read_body()
                for line in (ngx.req.get_body_data() or ""):gmatch("[^\n]+") do
                    local raw = ngx.decode_base64(line)
                    for _, kind in ipairs({ "v1", "v2" }) do
                        ngx.say(kind, " ", table.concat({ tk._key_fields(kind, raw) }, " "))
                    end
                end
            }
        }
    }
`, fieldsPort), "\t", "    ", -1)
	luatest.Start(t, luatest.Config{Nginx: b, Window: newWindow(t, luatest.NewKeys(t, 1, 80)), Cert: cert, Workers: 1, ExtraHTTP: extra})
	url := fmt.Sprintf("http://127.0.0.1:%d/schedule", port)
	windows, samples, skipped := 0, 0, 0
	for _, w := range v.Windows {
		read := w.Reads["nginx"]
		file, ok := read.windowFile()
		if !ok {
			skipped++
			t.Logf("%s: not renderable by window.ctmpl (a key has no encrypt_until: an engine before v0.2.0); skipped", w.Name)
			continue
		}
		windows++
		var ats []string
		for _, s := range w.Samples {
			ats = append(ats, fmt.Sprintf("%d.%03d", s.UnixMS/1000, s.UnixMS%1000))
		}
		lines := post(t, url, strings.Join(ats, ",")+"\n"+file)
		if len(lines) != len(w.Samples) {
			t.Fatalf("%s: %d answers for %d samples: %.300q", w.Name, len(lines), len(w.Samples), lines)
		}
		firstNB := math.Inf(1)
		for _, k := range read.Keys {
			tm, _ := time.Parse(time.RFC3339, k["not_before"].(string))
			firstNB = math.Min(firstNB, float64(tm.Unix()))
		}
		for i, s := range w.Samples {
			samples++
			f := strings.Fields(lines[i])
			cur, source := f[1], f[2]
			switch {
			case s.Encrypting == "" && source == "clock_behind":
				if float64(s.UnixMS)/1000 >= firstNB || cur != read.Keys[0]["id"] {
					t.Errorf("%s at %s: clock-behind key %s, but the instant is not before every not_before or the key is not the file's first", w.Name, s.At, cur)
				}
			case s.Encrypting == "":
				if cur != "-" {
					t.Errorf("%s at %s: encrypting %s, the vectors: none", w.Name, s.At, cur)
				}
			case cur != s.Encrypting:
				t.Errorf("%s at %s: encrypting %s, the vectors: %s", w.Name, s.At, cur, s.Encrypting)
			}
			var served []string
			if len(f) == 5 {
				for _, e := range strings.Split(f[4], ",") {
					id, _, _ := strings.Cut(e, ":")
					served = append(served, id)
				}
			}
			want := slices.Clone(s.Decrypting)
			slices.Sort(served)
			slices.Sort(want)
			if !slices.Equal(served, want) {
				t.Errorf("%s at %s: serves %v, the vectors decrypt %v", w.Name, s.At, served, want)
			}
		}
		// Layout: the module's key elements hold the secrets in the engine's nginx layout.
		secrets := map[string][2]string{}
		for _, s := range w.Secrets {
			secrets[s.ID] = [2]string{s.HMAC, s.AES}
		}
		var b64s []string
		for _, k := range read.Keys {
			b64s = append(b64s, k["ticket_key"].(string))
		}
		fields := post(t, fmt.Sprintf("http://127.0.0.1:%d/fields", fieldsPort), strings.Join(b64s, "\n")+"\n")
		for _, l := range fields {
			f := strings.Fields(l)
			sec, ok := secrets[f[1]]
			if !ok {
				t.Errorf("%s: key element named %s, which is no key of the vectors", w.Name, f[1])
				continue
			}
			if !strings.HasPrefix(sec[0], f[2]) || !strings.HasPrefix(sec[1], f[3]) || len(f[2]) < 32 {
				t.Errorf("%s key %s (%s element): hmac/aes as nginx will use them differ from the vectors' secrets", w.Name, f[1], f[0])
			}
		}
	}
	// Invalid windows: those whose fault reaches the window file are refused.
	refused := 0
	for _, inv := range v.Invalid {
		if inv.Format != "nginx" {
			continue
		}
		switch inv.Field {
		case "state", "key_size", "id":
			t.Logf("invalid %s (%s): the window file carries no %s (the schedule decides); not applicable", inv.Name, inv.Field, inv.Field)
			continue
		}
		switch inv.Name {
		case "name-not-the-id":
			t.Logf("invalid %s: the window file carries no id (the key's name is its id); not applicable", inv.Name)
			continue
		case "no-current":
			t.Logf("invalid %s: a rule on the states, which the window file does not carry (the schedule decides); not applicable", inv.Name)
			continue
		}
		file, ok := inv.Window.windowFile()
		if !ok {
			file = "" // a missing field: the template fails, like an empty file
		}
		got := post(t, url, "1\n"+file)
		if !strings.HasPrefix(got[0], "error: ") {
			t.Errorf("invalid %s (%s): the module accepted it: %.200s", inv.Name, inv.Field, got[0])
			continue
		}
		refused++
		t.Logf("invalid %s (%s): %s", inv.Name, inv.Field, strings.TrimPrefix(got[0], "error: "))
	}
	t.Logf("%s: %d vector windows (%d skipped), %d samples equal; layouts equal; %d invalid windows refused", b.Name, windows, skipped, samples, refused)
}
