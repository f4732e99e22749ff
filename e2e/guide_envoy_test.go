//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"                     // the guide's http filter
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3" // the guide's network filter
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// guideEnvoy is docs/envoy.md for the guide walk of guide_test.go. Envoy itself is not packaged for Debian
// and the test downloads nothing, so its envoy.yaml is checked (decoded with Envoy's API types), not run.
var guideEnvoy = guideSpec{
	path: "docs/envoy.md", keyring: "web", format: "envoy", conf: "envoy-yaml",
	settings: "rotation_period=1h retain=12h", retain: agentRetain, noPackages: true,
}

// envoySDSRef is where a listener's DownstreamTlsContext of the guide's envoy.yaml takes its session ticket
// keys from: a file-based SDS secret.
type envoySDSRef struct {
	Listener, Secret, Path, WatchedDir string
}

// TestGuideEnvoy follows docs/envoy.md on two nodes (guide_test.go says how) up to starting Envoy: the
// plugin registration, the keyring, node-approle.sh, the Agent configuration the guide renders and the
// real Vault Agent rendering the SDS file. Then it checks what Envoy would load: the guide's envoy.yaml is
// a valid Bootstrap whose TLS listener takes its session_ticket_keys from the SDS file Agent renders (by
// name, path and watched directory); the file is a DiscoveryResponse with one Secret of that name holding
// exactly the window read from Vault in the envoy format (80-byte keys, current first), with the guide's
// modes (the file 0600, the credential directory 0700 and its files 0600); and after a rotation every
// node's file is replaced by rename (a new inode; a reader polling the path never sees a partial file)
// with the new window.
func TestGuideEnvoy(t *testing.T) {
	w, blocks := startGuideWalk(t, guideEnvoy, "envoy", "Agent writes into /etc/envoy/ticketkeys and /etc/vault-agent as root")
	conf := w.walk(t, blocks)

	files := map[*guideNode]string{}
	for _, n := range w.nodes {
		refs := w.envoySDSRefs(t, conf, n)
		ref := refs[0]
		for _, r := range refs[1:] {
			if r.Path != ref.Path || r.Secret != ref.Secret {
				t.Errorf("%s: listeners %s and %s take their ticket keys from different SDS files: the guide renders one", w.guide.path, ref.Listener, r.Listener)
			}
		}
		if filepath.Dir(ref.Path) != ref.WatchedDir {
			t.Errorf("%s: listener %s: SDS file %s is not in its watched_directory %s: Envoy would not see Agent's rename", w.guide.path, ref.Listener, ref.Path, ref.WatchedDir)
		}
		if _, err := os.Stat(ref.Path); err != nil {
			t.Fatalf("%s: listener %s: the envoy.yaml's SDS path is not the file the guide's Agent rendered: %v (Envoy would fail to start)", w.guide.path, ref.Listener, err)
		}
		secrets := decodeSDS(t, ref.Path)
		if len(secrets) != 1 || secrets[0].GetName() != ref.Secret {
			var names []string
			for _, sec := range secrets {
				names = append(names, sec.GetName())
			}
			t.Fatalf("node %s: %s holds secrets %q, want one named %q, the name the envoy.yaml asks for (Envoy would wait for it)", n.name, ref.Path, names, ref.Secret)
		}
		checkEnvoyFile(t, w.s, &agentNode{Name: n.name, Files: []string{ref.Path}}, w.guide.keyring)
		n.checkModes(t, map[string]os.FileMode{"/etc/envoy/ticketkeys/web.sds.json": 0o600,
			"/etc/vault-agent/ticketkeys": 0o700 | os.ModeDir, "/etc/vault-agent/ticketkeys/role-id": 0o600, "/etc/vault-agent/ticketkeys/secret-id": 0o600})
		files[n] = ref.Path
		t.Logf("node %s: envoy.yaml listener %s takes secret %q from %s (watched directory %s), which Agent rendered", n.name, ref.Listener, ref.Secret, strings.TrimPrefix(ref.Path, n.root), strings.TrimPrefix(ref.WatchedDir, n.root))
	}
	w.checkEnvoyRotation(t, files)
	w.finish(t)
}

// envoySDSRefs decodes the guide's envoy.yaml, for node n, with Envoy's API types (a Bootstrap and each
// transport socket's DownstreamTlsContext, both passing the protos' validation rules) and returns the SDS
// file every TLS listener takes its session ticket keys from; it fails the test unless there is one.
func (w *guideWalk) envoySDSRefs(t *testing.T, conf string, n *guideNode) []envoySDSRef {
	t.Helper()
	conf = w.subst(conf, n)
	if err := unsafePath(conf, n.root+"/"); err != nil {
		t.Fatalf("%s: envoy.yaml: %v", w.guide.path, err)
	}
	var doc any
	if err := yaml.Unmarshal([]byte(conf), &doc); err != nil {
		t.Fatalf("%s: the envoy.yaml is not YAML: %v", w.guide.path, err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("%s: the envoy.yaml has no JSON form (as Envoy reads YAML): %v", w.guide.path, err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("%s: the envoy.yaml is not an Envoy v3 Bootstrap: %v", w.guide.path, err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("%s: the envoy.yaml fails Envoy's validation rules: %v", w.guide.path, err)
	}
	var refs []envoySDSRef
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			ts := fc.GetTransportSocket()
			if ts.GetTypedConfig() == nil {
				continue
			}
			var tlsCtx tlsv3.DownstreamTlsContext
			if err := ts.GetTypedConfig().UnmarshalTo(&tlsCtx); err != nil {
				t.Fatalf("%s: listener %s: transport socket %s is not a DownstreamTlsContext: %v", w.guide.path, l.GetName(), ts.GetName(), err)
			}
			if err := tlsCtx.ValidateAll(); err != nil {
				t.Fatalf("%s: listener %s: DownstreamTlsContext fails Envoy's validation rules: %v", w.guide.path, l.GetName(), err)
			}
			sds := tlsCtx.GetSessionTicketKeysSdsSecretConfig()
			pcs := sds.GetSdsConfig().GetPathConfigSource()
			if sds == nil || pcs == nil {
				t.Fatalf("%s: listener %s: no session_ticket_keys_sds_secret_config with a path_config_source", w.guide.path, l.GetName())
			}
			if v := sds.GetSdsConfig().GetResourceApiVersion(); v != corev3.ApiVersion_V3 {
				t.Errorf("%s: listener %s: resource_api_version %v, want V3 (the file's resources are v3 Secrets)", w.guide.path, l.GetName(), v)
			}
			refs = append(refs, envoySDSRef{Listener: l.GetName(), Secret: sds.GetName(), Path: pcs.GetPath(), WatchedDir: pcs.GetWatchedDirectory().GetPath()})
		}
	}
	if len(refs) == 0 {
		t.Fatalf("%s: the envoy.yaml has no TLS listener", w.guide.path)
	}
	return refs
}

// checkEnvoyRotation waits for the next window change and for every node's SDS file to hold it, reading
// and decoding every file every 20 ms meanwhile: each read must be a whole, valid DiscoveryResponse (Agent
// renames a complete file into place), and the file must be replaced (a new inode) once per window change.
func (w *guideWalk) checkEnvoyRotation(t *testing.T, files map[*guideNode]string) {
	t.Helper()
	first := readWindow(t, w.s, w.guide.keyring, w.guide.format)
	rotationsBefore := w.watch.Rotations()
	inodes := map[*guideNode][]uint64{}
	for n, path := range files {
		inodes[n] = []uint64{stamp(t, path).Inode}
	}
	reads := 0
	deadline := time.Now().Add(2*agentPeriod + 15*time.Second)
	for {
		done := true
		for n, path := range files {
			secrets := decodeSDS(t, path) // fails the test on a partial or invalid file
			reads++
			if ino := stamp(t, path).Inode; ino != inodes[n][len(inodes[n])-1] {
				inodes[n] = append(inodes[n], ino)
			}
			if len(secrets) != 1 {
				t.Fatalf("node %s: %s holds %d secrets during the rotation, want one", n.name, path, len(secrets))
			}
			keys := secrets[0].GetSessionTicketKeys().GetKeys()
			done = done && len(keys) > 0 && !bytes.Equal(keys[0].GetInlineBytes(), first.Keys[0].Raw)
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for a rotation to reach every node's SDS file (window before: %s)", 2*agentPeriod+15*time.Second, shortIDs(first.IDs()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	rotations := w.watch.Rotations() - rotationsBefore
	for n, path := range files {
		checkEnvoyFile(t, w.s, &agentNode{Name: n.name, Files: []string{path}}, w.guide.keyring)
		n.checkModes(t, map[string]os.FileMode{"/etc/envoy/ticketkeys/web.sds.json": 0o600})
		replaced := len(inodes[n]) - 1
		if replaced < 1 || replaced > max(rotations, 1) {
			t.Errorf("node %s: SDS file replaced %d times (inodes %v) for %d window changes: want one rename per change", n.name, replaced, inodes[n], rotations)
		}
		entries, err := os.ReadDir(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{filepath.Base(path)}) {
			t.Errorf("node %s: the SDS directory holds %v, want only %s (no temporary file left beside it)", n.name, names, filepath.Base(path))
		}
		t.Logf("node %s: rotation reached the SDS file by %d rename(s) (inodes %v); %d whole reads while it changed", n.name, replaced, inodes[n], reads)
	}
}
