package agent

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
)

// renderWindowTemplate renders the shipped nginx-lua window.ctmpl with Go's text/template (the engine
// of consul-template, which Vault Agent runs), its `secret` function answering data.
func renderWindowTemplate(t *testing.T, data map[string]any) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("nginx-lua", "window.ctmpl"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := template.New("window.ctmpl").Option("missingkey=error").Funcs(template.FuncMap{
		"secret": func(path string) (map[string]any, error) {
			if path != "ticketkeys/keys/web?format=nginx" {
				t.Fatalf("the template reads %q, want ticketkeys/keys/web?format=nginx", path)
			}
			return map[string]any{"Data": data}, nil
		},
	}).Parse(string(src))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, nil); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestNginxLuaWindowTemplateCarriesTimes proves the shipped window.ctmpl renders, per key of the
// engine's response and in its order, the base64 key and its not_before, encrypt_until and not_after
// (what resty.ticketkeys needs to switch keys at the published instants without Agent), and nothing
// that changes between reads of the same window (ttl, states, settings): the same window renders the
// same bytes, so Agent rewrites the file only when the window changes.
func TestNginxLuaWindowTemplateCarriesTimes(t *testing.T) {
	key := func(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 80)) }
	keys := []any{
		map[string]any{"id": "01", "state": "current", "not_before": "2026-11-29T21:00:00Z", "encrypt_until": "2026-11-29T22:00:00Z", "not_after": "2026-11-30T10:00:00Z", "ticket_key": key(1)},
		map[string]any{"id": "02", "state": "next", "not_before": "2026-11-29T22:00:00Z", "encrypt_until": "2026-11-29T23:00:00Z", "not_after": "2026-11-30T11:00:00Z", "ticket_key": key(2)},
		map[string]any{"id": "03", "state": "previous", "not_before": "2026-11-29T20:00:00Z", "encrypt_until": "2026-11-29T21:00:00Z", "not_after": "2026-11-30T09:00:00Z", "ticket_key": key(3)},
	}
	got := renderWindowTemplate(t, map[string]any{"keys": keys, "ttl": 3597, "rotation_period": 3600, "retain": 43200})
	want := key(1) + " 2026-11-29T21:00:00Z 2026-11-29T22:00:00Z 2026-11-30T10:00:00Z\n" +
		key(2) + " 2026-11-29T22:00:00Z 2026-11-29T23:00:00Z 2026-11-30T11:00:00Z\n" +
		key(3) + " 2026-11-29T20:00:00Z 2026-11-29T21:00:00Z 2026-11-30T09:00:00Z\n"
	if got != want {
		t.Fatalf("rendered window:\n%s\nwant:\n%s", got, want)
	}
	again := renderWindowTemplate(t, map[string]any{"keys": keys, "ttl": 12, "rotation_period": 3600, "retain": 43200, "publish_ahead": 3600})
	if again != got {
		t.Fatalf("the same window with another ttl rendered other bytes:\n%s", again)
	}
	if strings.Contains(got, "current") || strings.Contains(got, "3597") {
		t.Fatalf("the rendered window holds a state or the ttl:\n%s", got)
	}
}
