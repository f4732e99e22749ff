package ticketkeys

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// TestFormatIsAReadParameterOnly: the OpenAPI document Vault serves for the
// mount has no format field in any write body, reads still take ?format=,
// and a write that carries format is refused.
func TestFormatIsAReadParameterOnly(t *testing.T) {
	tb := getBackend(t)
	// Vault's root help (what `vault path-help` and the OpenAPI endpoint use).
	sys := logical.TestSystemView()
	sys.PluginEnvironment = &logical.PluginEnvironment{VaultVersion: "v1.21.0"}
	docBackend := newBackend(tb.clock.Now, tb.random)
	if err := docBackend.Setup(t.Context(), &logical.BackendConfig{StorageView: tb.storage, System: sys, Logger: hclog.NewNullLogger()}); err != nil {
		t.Fatal(err)
	}
	resp, err := docBackend.HandleRequest(t.Context(), &logical.Request{Operation: logical.HelpOperation, Path: "", Storage: tb.storage})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(resp.Data["openapi"])
	if err != nil {
		t.Fatal(err)
	}
	var oas struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(doc, &oas); err != nil {
		t.Fatal(err)
	}
	bodies := 0
	for name, schema := range oas.Components.Schemas {
		if !strings.HasSuffix(name, "Request") {
			continue
		}
		bodies++
		if _, ok := schema.Properties["format"]; ok {
			t.Errorf("write body %s lists format", name)
		}
	}
	if bodies == 0 {
		t.Fatalf("the OpenAPI document has no request bodies: %s", doc)
	}

	tb.mustRequest(t, logical.UpdateOperation, "keys/web", nil)
	if r, _ := readWindow(t, tb, "web", "go"); r.Data["format"] != "go" || len(r.Warnings) != 0 {
		t.Fatalf("read with format=go: format %v, warnings %v", r.Data["format"], r.Warnings)
	}
	if r := tb.mustRequest(t, logical.ReadOperation, "keys/web", nil); r.Data["format"] != "nginx" {
		t.Fatalf("read without format: format %v, want nginx", r.Data["format"])
	}
	r, err := tb.request(t, logical.ReadOperation, "keys/web", map[string]interface{}{"format": []string{"go", "nginx"}})
	assertStatus(t, r, err, 400, "format must be given once")
	r, err = tb.request(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"format": "go"})
	assertStatus(t, r, err, 400, "format is a read parameter")
}
