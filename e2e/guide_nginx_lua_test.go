//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// guideNginxLua is docs/nginx-lua.md for the guide walk of guide_test.go: install.sh runs with DESTDIR set
// to the node's root; nginx gets the guide's nginx.conf.
var guideNginxLua = guideSpec{
	path: "docs/nginx-lua.md", keyring: "web", format: "nginx", conf: "nginx-conf",
	settings: "rotation_period=1h retain=12h", retain: agentRetain,
}

// TestGuideNginxLua follows docs/nginx-lua.md on two nodes (guide_test.go says how), then checks with a
// TLS client per TLS listener of the guide's nginx.conf (https and stream) that each node's fresh ticket
// decrypts under the current key read from Vault, that each node resumes the other's tickets and one under
// the published next key, and that a rotation reaches both nodes with no reload (same master and worker
// PIDs), the workers running as the group install.sh gave the window directory.
func TestGuideNginxLua(t *testing.T) {
	w, blocks := startGuideWalk(t, guideNginxLua, "guide", "install.sh sets root ownership, nginx switches its workers to www-data")
	listeners := w.walkAndStart(t, blocks, w.startNginx)
	pids := w.serverPIDs()
	w.checkFleetThroughRotation(t, listeners)

	// No reload, the workers run as the window directory's group, and no worker failed to read the window.
	w.checkNoReload(t, pids)
	for _, n := range w.nodes {
		log := n.server.Log()
		if strings.Contains(log, "reconfiguring") || strings.Contains(log, "signal 1 (SIGHUP)") {
			t.Errorf("node %s: the nginx log shows a reload", n.name)
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "[error]") && strings.Contains(l, "ticketkeys") {
				t.Errorf("node %s: %s", n.name, l)
			}
		}
		checkWorkersGroup(t, n)
		n.checkModes(t, guideNginxLuaModes)
	}
	w.finish(t)
}

// guideNginxLuaModes are the modes docs/nginx-lua.md gives the installed files: what nginx's master loads is
// root's alone, the window (rendered by Agent) is in a setgid directory of the workers' group, 0640.
var guideNginxLuaModes = map[string]os.FileMode{
	"/etc/nginx/ticketkeys":                 os.ModeDir | 0o755,
	"/etc/nginx/ticketkeys/placeholder.key": 0o600,
	"/etc/nginx/ticketkeys/ticketkeys.conf": 0o644,
	"/etc/nginx/ticketkeys/stream.conf":     0o644,
	"/var/lib/ticketkeys/nginx":             os.ModeDir | os.ModeSetgid | 0o750,
	"/var/lib/ticketkeys/nginx/web.window":  0o640,
	"/etc/vault-agent/ticketkeys/agent.hcl": 0o640,
}

// checkWorkersGroup fails the test unless every nginx worker of n runs, not as root, in the group that owns
// the window directory install.sh made (the guide's `user` line).
func checkWorkersGroup(t *testing.T, n *guideNode) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(n.root, "var/lib/ticketkeys/nginx"))
	if err != nil {
		t.Fatal(err)
	}
	dirGid := int(fi.Sys().(*syscall.Stat_t).Gid)
	for _, pid := range n.server.WorkerPIDs() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		var uid, gid int
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 && (f[0] == "Uid:" || f[0] == "Gid:") {
				v, _ := strconv.Atoi(f[1])
				if f[0] == "Uid:" {
					uid = v
				} else {
					gid = v
				}
			}
		}
		if uid == 0 || gid != dirGid {
			t.Errorf("node %s: worker %d runs as uid %d gid %d; want a non-root user in gid %d, the group of the window directory", n.name, pid, uid, gid, dirGid)
		}
	}
}
