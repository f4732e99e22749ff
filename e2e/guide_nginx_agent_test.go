//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

// guideNginxAgent is docs/nginx.md for the guide walk of guide_test.go: node 1 gets its AppRole from the
// guide's manual commands, node 2 from node-approle.sh; nginx gets the guide's nginx.conf, and the Agent's
// `nginx -s reload` reaches the node's nginx through the node's /usr/sbin/nginx.
var guideNginxAgent = guideSpec{
	path: "docs/nginx.md", keyring: "web", format: "nginx", conf: "nginx-conf",
	settings: "rotation_period=1h retain=12h", retain: agentRetain,
	nodeSubs: func(node string) []guideSubst {
		return []guideSubst{{"ticketkeys-web-1", "ticketkeys-" + node, "the manual commands' role, named after the node as node-approle.sh names it"}}
	},
}

// TestGuideNginxAgent follows docs/nginx.md on two nodes (guide_test.go says how): node 1 takes the
// guide's manual Vault commands, node 2 node-approle.sh, and both roles and credential files must come out
// the same. Then a TLS client checks that each node's fresh ticket decrypts under the current key read
// from Vault, that each node resumes the other's tickets and one under the published next key, and that
// a rotation reaches both nodes as the guide promises: through the reload the Agent runs (same master,
// new workers).
func TestGuideNginxAgent(t *testing.T) {
	w, blocks := startGuideWalk(t, guideNginxAgent, "nginx", "the nginx master reads the 0600 root key files Agent writes")
	listeners := w.walkAndStart(t, blocks, w.startNginx)
	w.checkSameAppRoles(t)
	pids := w.serverPIDs()
	w.checkFleetThroughRotation(t, listeners)

	// The files of the guide's table, with its modes.
	for _, n := range w.nodes {
		n.checkModes(t, map[string]os.FileMode{
			"/etc/nginx/ticketkeys/web.0.key": 0o600, "/etc/nginx/ticketkeys/web.1.key": 0o600, "/etc/nginx/ticketkeys/web.2.key": 0o600,
			"/etc/nginx/ticketkeys/web.3.key": 0o600, "/etc/nginx/ticketkeys/web.ticket-keys.conf": 0o644,
		})
	}
	// The rotation came with a reload, which the Agent ran: the same master, and the workers of before gone
	// (a reload's old workers finish their connections first: give them a few seconds).
	for _, n := range w.nodes {
		master, before := pids[n][0], pids[n][1:]
		var workers []int
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			workers = n.server.WorkerPIDs()
			if n.server.Exited() || !slices.ContainsFunc(workers, func(pid int) bool { return slices.Contains(before, pid) }) || time.Now().After(deadline) {
				break
			}
		}
		switch {
		case n.server.Exited() || n.server.MasterPID != master:
			t.Errorf("node %s: nginx master %d stopped: nginx restarted or stopped instead of reloading", n.name, master)
		case slices.ContainsFunc(workers, func(pid int) bool { return slices.Contains(before, pid) }):
			t.Errorf("node %s: workers %v still run 10 s after the rotation: no reload reached this nginx (workers now %v)", n.name, before, workers)
		default:
			t.Logf("node %s: the rotation reloaded nginx (master %d, workers %v -> %v)", n.name, master, before, workers)
		}
	}
	w.finish(t)
}

// checkSameAppRoles fails the test unless the AppRole roles of the nodes (node 1 by the guide's manual
// commands, node 2 by node-approle.sh) are the same in every setting, and each node's credential directory
// is 0700 with role-id and secret-id 0600, role-id being its role's.
func (w *guideWalk) checkSameAppRoles(t *testing.T) {
	t.Helper()
	nodes := w.nodes
	var roles []map[string]any
	for _, n := range nodes {
		role := "auth/approle/role/ticketkeys-" + n.name
		sec, err := w.s.Client.Logical().Read(role)
		if err != nil || sec == nil {
			t.Fatalf("node %s: read %s: %v (the guide's commands made no such role)", n.name, role, err)
		}
		roles = append(roles, sec.Data)
		const dir = "/etc/vault-agent/ticketkeys"
		n.checkModes(t, map[string]os.FileMode{dir: 0o700 | os.ModeDir, dir + "/role-id": 0o600, dir + "/secret-id": 0o600})
		roleID, err := w.s.Client.Logical().Read(role + "/role-id")
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(n.root, dir, "role-id")); string(b) != fmt.Sprint(roleID.Data["role_id"]) {
			t.Errorf("node %s: role-id file is not the role_id of %s", n.name, role)
		}
	}
	for k := range roles[0] {
		if _, ok := roles[1][k]; !ok {
			roles[1][k] = nil
		}
	}
	for k, v := range roles[1] {
		if !reflect.DeepEqual(roles[0][k], v) {
			t.Errorf("AppRole roles differ in %s: %v (node %s, the guide's manual commands) vs %v (node %s, node-approle.sh)", k, roles[0][k], nodes[0].name, v, nodes[1].name)
		}
	}
	t.Logf("AppRole roles of the manual commands and of node-approle.sh are the same: token_policies %v, token_no_default_policy %v, token_ttl %v, token_max_ttl %v; directories 0700, files 0600",
		roles[0]["token_policies"], roles[0]["token_no_default_policy"], roles[0]["token_ttl"], roles[0]["token_max_ttl"])
}
