package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
)

var update = flag.Bool("update", false, "rewrite examples/ from DefaultParams")

// TestExamplesMatchRender keeps examples/ (the files operators copy) equal to Render(DefaultParams()).
func TestExamplesMatchRender(t *testing.T) {
	want := map[string]string{}
	for _, k := range Kinds {
		s, err := Render(k, DefaultParams())
		if err != nil {
			t.Fatal(err)
		}
		want[string(k)+".hcl"] = s
	}
	pol, err := Policy(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	want["policy.hcl"] = pol
	for name, s := range want {
		path := filepath.Join("examples", name)
		if *update {
			if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./bootstrap/agent -update)", err)
		}
		if string(got) != s {
			t.Errorf("%s differs from Render(DefaultParams()); run go test ./bootstrap/agent -update", path)
		}
	}
}

// agentTemplate is one `template` stanza as Vault Agent decodes it.
type agentTemplate struct {
	Destination string `hcl:"destination"`
	Perms       string `hcl:"perms"`
	ErrMissing  bool   `hcl:"error_on_missing_key"`
	Contents    string `hcl:"contents"`
	Command     []string
}

type agentConfig struct {
	Template []agentTemplate
}

// parse decodes rendered HCL the way Vault Agent's config parser does (HCL v1: filter the `template`
// items, decode each one, flatten its `exec` block).
func parse(t *testing.T, s string) agentConfig {
	t.Helper()
	f, err := hcl.Parse(s)
	if err != nil {
		t.Fatalf("rendered config is not valid HCL: %v\n%s", err, s)
	}
	root, ok := f.Node.(*ast.ObjectList)
	if !ok {
		t.Fatalf("rendered config has no top-level object list")
	}
	for _, block := range []string{"vault", "auto_auth", "template_config"} {
		if len(root.Filter(block).Items) != 1 {
			t.Errorf("rendered config has %d %q blocks, want 1", len(root.Filter(block).Items), block)
		}
	}
	var c agentConfig
	for _, item := range root.Filter("template").Items {
		var tm agentTemplate
		if err := hcl.DecodeObject(&tm, item.Val); err != nil {
			t.Fatalf("template stanza: %v", err)
		}
		var raw map[string]any
		if err := hcl.DecodeObject(&raw, item.Val); err != nil {
			t.Fatal(err)
		}
		if ex, ok := raw["exec"].([]map[string]any); ok && len(ex) > 0 {
			for _, a := range ex[len(ex)-1]["command"].([]any) {
				tm.Command = append(tm.Command, a.(string))
			}
		}
		c.Template = append(c.Template, tm)
	}
	return c
}

// window builds an engine response's data (as Vault's JSON decodes it) with n keys of size bytes:
// current, then next, then previous, as docs/api.md orders them.
func window(t *testing.T, n, size int) (map[string]any, [][]byte) {
	t.Helper()
	states := []string{"current", "next"}
	var keys []any
	var raws [][]byte
	for i := 0; i < n; i++ {
		raw := make([]byte, size)
		if _, err := rand.Read(raw); err != nil {
			t.Fatal(err)
		}
		state := "previous"
		if i < len(states) {
			state = states[i]
		}
		keys = append(keys, map[string]any{
			"id": hex.EncodeToString(raw[:16]), "state": state,
			"not_before": "2026-11-29T21:00:00Z", "encrypt_until": "2026-11-29T22:00:00Z", "not_after": "2026-11-30T10:00:00Z",
			"ticket_key": base64.StdEncoding.EncodeToString(raw),
		})
		raws = append(raws, raw)
	}
	data := map[string]any{"name": "web", "key_size": size, "rotation_period": 10, "retain": 20, "publish_ahead": 10, "ttl": 7, "keys": keys}
	return data, raws
}

// execute runs a template's contents the way consul-template does for this subset: text/template with
// {{ }} delimiters, missingkey=error (error_on_missing_key), `secret` returning {Data: data} for the one
// path the template may read, and base64Decode. The real Agent runs the same contents in the e2e tests.
func execute(t *testing.T, tmpl agentTemplate, wantPath string, data map[string]any) ([]byte, error) {
	t.Helper()
	funcs := template.FuncMap{
		"secret": func(path string) (map[string]any, error) {
			if path != wantPath {
				return nil, fmt.Errorf("template reads %q, want %q", path, wantPath)
			}
			return map[string]any{"Data": data}, nil
		},
		"base64Decode": func(s string) (string, error) {
			b, err := base64.StdEncoding.DecodeString(s)
			return string(b), err
		},
	}
	tp, err := template.New(tmpl.Destination).Funcs(funcs).Option("missingkey=error").Parse(tmpl.Contents)
	if err != nil {
		t.Fatalf("%s: template does not parse: %v", tmpl.Destination, err)
	}
	var b bytes.Buffer
	err = tp.Execute(&b, nil)
	return b.Bytes(), err
}

// TestNginxTemplates proves the nginx set: one 0600 raw key file per slot holding exactly the window's
// key for that slot (48 or 80 bytes, no newline), the current key repeated in unused slots, extra keys
// dropped oldest first; a snippet listing every slot in order, current first; the reload command on every
// template (consul-template runs an identical command once per render pass); and identical output for
// two responses of the same window that differ only in ttl.
func TestNginxTemplates(t *testing.T) {
	p := Params{Dir: "/srv/nk", Slots: 4, Keyring: "edge", Command: []string{"/bin/sh", "-c", "kill -HUP 1"}}
	s, err := Render(Nginx, p)
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, s)
	if len(c.Template) != 5 {
		t.Fatalf("%d template stanzas, want 4 key files and a snippet", len(c.Template))
	}
	files, _ := Files(Nginx, p)
	for i, tm := range c.Template {
		if tm.Destination != files[i] {
			t.Errorf("template %d writes %s, want %s", i, tm.Destination, files[i])
		}
		if !tm.ErrMissing {
			t.Errorf("%s: error_on_missing_key is off", tm.Destination)
		}
		if strings.Join(tm.Command, " ") != "/bin/sh -c kill -HUP 1" {
			t.Errorf("%s: exec command = %q, want the reload command", tm.Destination, tm.Command)
		}
		wantPerms := "0600"
		if i == 4 {
			wantPerms = "0644"
		}
		if tm.Perms != wantPerms {
			t.Errorf("%s: perms %s, want %s", tm.Destination, tm.Perms, wantPerms)
		}
	}
	for _, size := range []int{80, 48} {
		for _, n := range []int{1, 2, 3, 4, 6} {
			data, raws := window(t, n, size)
			var snippetWant strings.Builder
			snippetWant.WriteString("# Rendered by Vault Agent from ticketkeys/keys/edge (format nginx). Do not edit.\n")
			for slot := 0; slot < 4; slot++ {
				want := raws[0]
				if slot < n {
					want = raws[slot]
				}
				got, err := execute(t, c.Template[slot], "ticketkeys/keys/edge?format=nginx", data)
				if err != nil {
					t.Fatalf("size %d, %d keys, slot %d: %v", size, n, slot, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("size %d, %d keys, slot %d: rendered %d bytes that are not the expected key (want %d bytes)", size, n, slot, len(got), len(want))
				}
				k := data["keys"].([]any)[min(slot, n-1)].(map[string]any)
				if slot >= n {
					k = data["keys"].([]any)[0].(map[string]any)
				}
				fmt.Fprintf(&snippetWant, "# slot %d: %s %s\nssl_session_ticket_key /srv/nk/edge.%d.key;\n", slot, k["id"], k["state"], slot)
			}
			got, err := execute(t, c.Template[4], "ticketkeys/keys/edge?format=nginx", data)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != snippetWant.String() {
				t.Fatalf("size %d, %d keys: snippet\n%s\nwant\n%s", size, n, got, snippetWant.String())
			}
			// Only ttl differs on a re-read of the same window: every file must render the same bytes.
			data2 := map[string]any{}
			for k, v := range data {
				data2[k] = v
			}
			data2["ttl"] = 3
			for _, tm := range c.Template {
				a, _ := execute(t, tm, "ticketkeys/keys/edge?format=nginx", data)
				b, _ := execute(t, tm, "ticketkeys/keys/edge?format=nginx", data2)
				if !bytes.Equal(a, b) {
					t.Fatalf("%s renders differently when only ttl changes", tm.Destination)
				}
			}
		}
	}
	// A response without keys is an error, never an empty key file.
	for _, tm := range c.Template {
		if _, err := execute(t, tm, "ticketkeys/keys/edge?format=nginx", map[string]any{"name": "edge"}); err == nil {
			t.Errorf("%s rendered a response without keys", tm.Destination)
		}
	}
}

// TestHAProxyTemplate proves the HAProxy file is exactly the three tls_ticket_keys lines in the engine's
// order (previous, current, next), newline-terminated, 0600, with the push command.
func TestHAProxyTemplate(t *testing.T) {
	p := Params{Dir: "/srv/hk", Command: []string{"/usr/bin/push", "-socket", "/s"}}
	s, err := Render(HAProxy, p)
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, s)
	if len(c.Template) != 2 {
		t.Fatalf("%d template stanzas, want 2 (keys file, schedule file)", len(c.Template))
	}
	tm := c.Template[0]
	if tm.Destination != "/srv/hk/web.tls-ticket-keys" || tm.Perms != "0600" || !tm.ErrMissing {
		t.Fatalf("stanza = %s %s %v", tm.Destination, tm.Perms, tm.ErrMissing)
	}
	if strings.Join(tm.Command, " ") != "/usr/bin/push -socket /s" {
		t.Fatalf("exec command = %q", tm.Command)
	}
	data, _ := window(t, 3, 80)
	lines := []any{"cHJldg==", "Y3Vy", "bmV4dA=="}
	data["tls_ticket_keys"] = lines
	got, err := execute(t, tm, "ticketkeys/keys/web?format=haproxy", data)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "cHJldg==\nY3Vy\nbmV4dA==\n" {
		t.Fatalf("rendered %q", got)
	}
	if _, err := execute(t, tm, "ticketkeys/keys/web?format=haproxy", map[string]any{"keys": []any{}}); err == nil {
		t.Fatal("rendered a response without tls_ticket_keys")
	}
	// The schedule file: every key with its times, in the engine's order, no command; the same bytes
	// for the same window read with another ttl.
	sched := c.Template[1]
	if sched.Destination != "/srv/hk/web.schedule" || sched.Perms != "0600" || !sched.ErrMissing || len(sched.Command) != 0 {
		t.Fatalf("schedule stanza = %s %s %v %q", sched.Destination, sched.Perms, sched.ErrMissing, sched.Command)
	}
	got, err = execute(t, sched, "ticketkeys/keys/web?format=haproxy", data)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for _, k := range data["keys"].([]any) {
		m := k.(map[string]any)
		fmt.Fprintf(&want, "%s %s %s %s\n", m["ticket_key"], m["not_before"], m["encrypt_until"], m["not_after"])
	}
	if string(got) != want.String() {
		t.Fatalf("schedule file rendered %d bytes, not the %d bytes of the keys and their times", len(got), want.Len())
	}
	data["ttl"] = 3
	if again, _ := execute(t, sched, "ticketkeys/keys/web?format=haproxy", data); string(again) != string(got) {
		t.Fatal("the schedule file changed with the ttl alone")
	}
	// Default command: the push command with the same file.
	s, _ = Render(HAProxy, Params{})
	if c := parse(t, s); strings.Join(c.Template[0].Command, " ") != "/usr/local/bin/ticketkeys-haproxy-push -socket /run/haproxy/admin.sock -pidfile /run/haproxy.pid -file /etc/haproxy/ticketkeys/web.tls-ticket-keys" {
		t.Fatalf("default command = %q", c.Template[0].Command)
	}
}

// TestEnvoyTemplate proves the SDS file lists every key of the window in the engine's order (current
// first) and is valid JSON; the decode with Envoy's own types is in the e2e test.
func TestEnvoyTemplate(t *testing.T) {
	s, err := Render(Envoy, Params{Dir: "/srv/ek"})
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, s)
	if len(c.Template) != 1 || c.Template[0].Destination != "/srv/ek/web.sds.json" || len(c.Template[0].Command) != 0 {
		t.Fatalf("templates = %+v", c.Template)
	}
	data, raws := window(t, 3, 80)
	got, err := execute(t, c.Template[0], "ticketkeys/keys/web?format=envoy", data)
	if err != nil {
		t.Fatal(err)
	}
	var last int
	for i, raw := range raws {
		at := bytes.Index(got, []byte(base64.StdEncoding.EncodeToString(raw)))
		if at < 0 || at < last {
			t.Fatalf("key %d missing or out of order in the SDS file", i)
		}
		last = at
	}
}

func TestRenderRejects(t *testing.T) {
	cases := []struct {
		kind    Kind
		p       Params
		wantErr string
	}{
		{"apache", Params{}, `kind "apache"`},
		{Nginx, Params{Keyring: "-bad"}, `keyring "-bad"`},
		{Nginx, Params{Slots: 17}, "slots 17: want 1..16"},
		{Nginx, Params{Dir: "rel/dir"}, `dir "rel/dir": want an absolute path`},
		{Nginx, Params{Dir: "/a b"}, `dir "/a b": must not contain`},
		{Envoy, Params{SecretName: "a b"}, `secret name "a b"`},
	}
	for _, tc := range cases {
		_, err := Render(tc.kind, tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Render(%s, %+v) err = %v, want %q", tc.kind, tc.p, err, tc.wantErr)
		}
	}
}

// Every Agent configuration the project ships bounds Agent's retry of a failed read the same way: the
// rendered ones (examples/, ticketkeys-agent-config) and nginx-lua/agent.hcl, which install.sh copies.
// e2e's TestAgentRetryBoundedDuringOutage proves the bound with a real Agent.
func TestShippedAgentConfigsBoundTheRetry(t *testing.T) {
	want := []string{"max_backoff = \"5s\"", "num_retries = 120"}
	files := []string{"nginx-lua/agent.hcl"}
	for _, k := range []Kind{Nginx, HAProxy, Envoy} {
		files = append(files, filepath.Join("examples", string(k)+".hcl"))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s does not set %s: Agent's template retry would back off to 1 minute (or give up after 12 tries)", f, w)
			}
		}
	}
}
