//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
)

// guideHAProxy is docs/haproxy.md for the guide walk of guide_test.go: HAProxy gets the guide's
// haproxy.cfg; the Agent's push command reaches it over the admin socket the haproxy.cfg names.
var guideHAProxy = guideSpec{
	path: "docs/haproxy.md", keyring: "web", format: "haproxy", conf: "haproxy-cfg",
	settings: "rotation_period=12h retain=12h", retain: agentPeriod, // retain = rotation_period, as the guide advises
}

// TestGuideHAProxy follows docs/haproxy.md on two nodes (guide_test.go says how), then checks with a TLS
// client per TLS bind of the guide's haproxy.cfg that each node's fresh ticket decrypts under the current
// key read from Vault, that each node resumes the other's tickets and one under the published next key,
// and that a rotation reaches both nodes as the guide promises: through the Agent's push over the admin
// socket, with no reload (same master and worker PIDs), each ring ending equal to its file.
func TestGuideHAProxy(t *testing.T) {
	w, blocks := startGuideWalk(t, guideHAProxy, "haproxy", "Agent writes into /etc/haproxy, the push needs HAProxy's admin socket")
	for _, n := range w.nodes {
		// What Debian's haproxy package gives a node (/usr/lib/tmpfiles.d/haproxy.conf): /run/haproxy.
		if err := os.MkdirAll(filepath.Join(n.root, "run/haproxy"), 0o2775); err != nil {
			t.Fatal(err)
		}
	}
	listeners := w.walkAndStart(t, blocks, w.startHAProxy)
	pids := w.serverPIDs()
	w.checkFleetThroughRotation(t, listeners)

	// No reload: HAProxy reads its tls-ticket-keys file only at start, so the new key reached the running
	// HAProxy over the admin socket, and its ring is the file's three lines.
	w.checkNoReload(t, pids)
	for _, n := range w.nodes {
		n.checkModes(t, map[string]os.FileMode{"/etc/haproxy/ticketkeys/web.tls-ticket-keys": 0o600})
		socket, keysFile := n.haproxyRuntime(t)
		// The admin socket dumps every key of the ring (show tls-keys): the guide promises it root-only.
		if fi, err := os.Stat(socket); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("node %s: admin socket %s: %v, mode %v; the guide promises a socket of mode 0600", n.name, socket, err, fi)
		}
		for attempt := 0; ; attempt++ {
			file, err := os.ReadFile(keysFile)
			if err != nil {
				t.Fatal(err)
			}
			ring := haproxyRing(t, socket, keysFile)
			if slices.Equal(ring, strings.Fields(string(file))) {
				t.Logf("node %s: HAProxy's ring (show tls-keys) equals its tls-ticket-keys file, with the same PIDs as before the rotation", n.name)
				break
			}
			if attempt == 5 {
				t.Errorf("node %s: HAProxy's ring does not equal its tls-ticket-keys file %s", n.name, keysFile)
				break
			}
			time.Sleep(time.Second)
		}
	}
	w.finish(t)
}

// guideBind finds the address of a bind line of a haproxy.cfg (":443", "*:443", "0.0.0.0:443").
var guideBind = regexp.MustCompile(`(?m)^(\s*bind\s+)(?:\*|(?:\d{1,3}\.){3}\d{1,3})?:(\d+)\b`)

// startHAProxy runs the guide's haproxy.cfg on node n and returns the node's address of every TLS bind
// port of the guide's configuration. The test's certificate stands in for each `crt` file.
func (w *guideWalk) startHAProxy(t *testing.T, conf string, n *guideNode) map[string]string {
	t.Helper()
	conf = w.subst(conf, n)
	if err := unsafePath(conf, n.root+"/"); err != nil {
		t.Fatalf("%s: haproxy.cfg: %v", w.guide.path, err)
	}
	tlsAddrs := map[string]string{}
	conf = guideBind.ReplaceAllStringFunc(conf, func(m string) string {
		sm := guideBind.FindStringSubmatch(m)
		return sm[1] + n.loopback(t, sm[2])
	})
	for _, l := range strings.Split(conf, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "bind" {
			continue
		}
		if !strings.HasPrefix(f[1], "127.0.0.1:") {
			t.Fatalf("%s: haproxy.cfg binds %s: the test maps only IPv4, * and bare ports to 127.0.0.1", w.guide.path, f[1])
		}
		if slices.Contains(f, "ssl") {
			for gp, p := range n.ports {
				if f[1] == fmt.Sprintf("127.0.0.1:%d", p) {
					tlsAddrs[gp] = f[1]
				}
			}
		}
	}
	for _, m := range regexp.MustCompile(`\bcrt\s+(\S+)`).FindAllStringSubmatch(conf, -1) {
		dir := filepath.Dir(m[1])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(w.cert.WriteCombinedPEM(dir), m[1]); err != nil {
			t.Fatal(err)
		}
	}
	n.server = servertest.StartHAProxy(t, conf)
	p := n.server
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- node %s: HAProxy's log (%s) ---\n%s", n.name, p.ErrorLog, p.Log())
		}
	})
	n.waitListening(t)
	if log := p.Log(); strings.Contains(log, "[WARNING]") || strings.Contains(log, "[ALERT]") {
		t.Errorf("node %s: HAProxy warns about the guide's haproxy.cfg:\n%s", n.name, log)
	}
	return tlsAddrs
}

// haproxyRuntime returns the admin socket and the tls-ticket-keys file of the haproxy.cfg the node runs.
func (n *guideNode) haproxyRuntime(t *testing.T) (socket, keysFile string) {
	t.Helper()
	b, err := os.ReadFile(n.server.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	s := regexp.MustCompile(`\bstats\s+socket\s+(\S+)`).FindStringSubmatch(conf)
	k := regexp.MustCompile(`\btls-ticket-keys\s+(\S+)`).FindStringSubmatch(conf)
	if s == nil || k == nil {
		t.Fatalf("node %s: the haproxy.cfg has no stats socket or no tls-ticket-keys file", n.name)
	}
	return s[1], k[1]
}
