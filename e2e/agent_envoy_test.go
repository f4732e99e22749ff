//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// decodeSDS decodes an SDS file with Envoy's own API types (go-control-plane): a DiscoveryResponse whose
// resources are envoy.extensions.transport_sockets.tls.v3.Secret, validated with the protos' rules.
func decodeSDS(t *testing.T, path string) []*tlsv3.Secret {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var resp discoveryv3.DiscoveryResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, &resp); err != nil {
		t.Fatalf("%s is not a DiscoveryResponse in proto JSON: %v", filepath.Base(path), err)
	}
	if err := resp.ValidateAll(); err != nil {
		t.Fatalf("DiscoveryResponse fails Envoy's validation rules: %v", err)
	}
	var out []*tlsv3.Secret
	for i, a := range resp.GetResources() {
		var sec tlsv3.Secret
		if err := a.UnmarshalTo(&sec); err != nil {
			t.Fatalf("resource %d (%s) is not a tls.v3.Secret: %v", i, a.GetTypeUrl(), err)
		}
		if err := sec.ValidateAll(); err != nil {
			t.Fatalf("Secret %q fails Envoy's validation rules: %v", sec.GetName(), err)
		}
		out = append(out, &sec)
	}
	return out
}

// checkEnvoyFile proves the SDS file holds one Secret named session_ticket_keys whose keys are the engine's
// window in the engine's order (current first), each exactly 80 inline bytes, mode 0600; it retries while
// the window moves.
func checkEnvoyFile(t *testing.T, s *vaulttest.Server, n *agentNode, keyring string) {
	t.Helper()
	if st := stamp(t, n.Files[0]); st.Mode != 0o600 {
		t.Fatalf("%s: mode %v, want 0600", filepath.Base(n.Files[0]), st.Mode)
	}
	for attempt := 1; attempt <= 5; attempt++ {
		w := readWindow(t, s, keyring, "envoy")
		secrets := decodeSDS(t, n.Files[0])
		if len(secrets) != 1 || secrets[0].GetName() != "session_ticket_keys" {
			t.Fatalf("SDS file holds %d secrets (first %q), want one named session_ticket_keys", len(secrets), secrets[0].GetName())
		}
		keys := secrets[0].GetSessionTicketKeys().GetKeys()
		for i, k := range keys {
			if _, ok := k.GetSpecifier().(*corev3.DataSource_InlineBytes); !ok {
				t.Fatalf("key %d: specifier %T, want inline_bytes", i, k.GetSpecifier())
			}
			if len(k.GetInlineBytes()) != 80 {
				t.Fatalf("key %d: %d inline bytes, want 80 (Envoy's only size)", i, len(k.GetInlineBytes()))
			}
		}
		match := len(keys) == len(w.Keys)
		for i := 0; match && i < len(keys); i++ {
			match = bytes.Equal(keys[i].GetInlineBytes(), w.Keys[i].Raw)
		}
		if match && w.Keys[0].State == "current" {
			t.Logf("%s: SDS Secret decodes with go-control-plane; %d keys of 80 bytes in the engine's order, first = current %s; window %s",
				n.Name, len(keys), w.Keys[0].ID[:8], shortIDs(w.IDs()))
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s: SDS keys do not match the engine's window after 5 attempts", n.Name)
}

// TestAgentEnvoySDS runs one real Vault Agent with the Envoy template against the real engine. Envoy is not
// packaged for Debian, so the proof decodes the SDS file with Envoy's own API types (go-control-plane) and
// checks every key is 80 bytes, current first, exactly the engine's window; and that the file is rewritten
// (by rename: a new inode, which Envoy's file watch picks up) only when the window changes.
//
// It runs on every server side by side (vaulttest.ForEachServerParallel: an Agent render waits on the
// schedule, not the CPU): Vault Agent and OpenBao's `bao agent`.
func TestAgentEnvoySDS(t *testing.T) { vaulttest.ForEachServerParallel(t, testAgentEnvoySDS) }

func testAgentEnvoySDS(t *testing.T, server vaulttest.Kind) {
	n, watch := checkAgentRender(t, server, agent.Envoy, "envoy-e2e", "envoy0", false, checkEnvoyFile)
	// The optional file sink: Agent wrote its token there, mode 0600 (the token itself is not printed).
	if st := stamp(t, filepath.Join(n.Dir, "agent-token")); st.Mode != 0o600 || st.Size == 0 {
		t.Fatalf("token sink: mode %v size %d, want 0600 and a token", st.Mode, st.Size)
	}
	// Control for the leak check: the SDS file itself does hold material, and the check finds it.
	if found, err := watch.leaks(n.Files[0]); err != nil || len(found) == 0 {
		t.Fatalf("leak check found no key material in the SDS file (err %v): the check is blind", err)
	}
}
