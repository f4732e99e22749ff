//go:build e2e

package vaulttest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	ticketkeys "github.com/ticketkeys/vault-plugin-secrets-ticketkeys"
)

// TestCluster proves what the cluster scenarios rely on: three real servers on
// Raft behind verified TLS, joined and healthy; the plugin registered once by
// sha256 and version and mounted, answering through every node (standbys
// forward); the audit device; a SIGKILLed active node replaced by a standby
// and rejoining; a sealed standby refusing reads while the others serve; and
// Stop leaving no process behind. It runs on every server (ForEachServer): a
// Vault cluster and an OpenBao cluster.
func TestCluster(t *testing.T) { ForEachServer(t, testCluster) }

func testCluster(t *testing.T, kind Kind) {
	c := StartCluster(t, WithClusterServer(kind))

	// TLS: the CA verifies every node; a client that does not trust it fails.
	for _, n := range c.Nodes {
		if !strings.HasPrefix(n.Addr, "https://127.0.0.1:") {
			t.Fatalf("%s: Addr = %q, want https://127.0.0.1:PORT", n.Name, n.Addr)
		}
	}
	untrusting, err := api.NewClient(&api.Config{Address: c.Nodes[1].Addr, MaxRetries: 0, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusting.Sys().Health(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the cluster CA reached %s: err = %v, want a certificate error", c.Nodes[1].Name, err)
	}

	// Raft: three voters, node0 leads.
	if a := c.Active(); a != c.Nodes[0] {
		t.Fatalf("active node = %v, want node0", a)
	}
	st, err := c.Autopilot(c.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if !st.Healthy || len(st.Voters) != ClusterSize || st.FailureTolerance != 1 {
		t.Errorf("autopilot: healthy=%t voters=%v failure_tolerance=%d; want healthy, 3 voters, tolerance 1", st.Healthy, st.Voters, st.FailureTolerance)
	}
	peers := c.Vault(t, c.Nodes[2], c.RootToken, "operator", "raft", "list-peers")
	for _, n := range c.Nodes {
		if !strings.Contains(peers, n.Name) {
			t.Errorf("operator raft list-peers does not list %s:\n%s", n.Name, peers)
		}
	}

	// The plugin: one catalog entry by sha256 and version; the mount runs it and
	// answers through every node.
	root := c.Client(t, c.Nodes[1], c.RootToken)
	p, err := root.Sys().GetPlugin(&api.GetPluginInput{Name: PluginName, Type: api.PluginTypeSecrets, Version: ticketkeys.Version})
	if err != nil {
		t.Fatalf("read catalog entry through a standby: %v", err)
	}
	if p.SHA256 != c.PluginSHA256 || p.Command != PluginFile {
		t.Errorf("catalog entry = sha256 %s command %q, want %s %q", p.SHA256, p.Command, c.PluginSHA256, PluginFile)
	}
	m, err := root.Sys().GetMount(MountPath)
	if err != nil || m.RunningVersion != ticketkeys.Version || m.RunningSha256 != c.PluginSHA256 {
		t.Fatalf("mount %s/: %+v, %v; want running %s sha256 %s", MountPath, m, err, ticketkeys.Version, c.PluginSHA256)
	}
	if _, err := root.Logical().Write(MountPath+"/keys/harness", map[string]any{"rotation_period": "1h"}); err != nil {
		t.Fatalf("create a keyring through a standby: %v", err)
	}
	readAll := func(what string, skip ...*Node) {
		t.Helper()
		for _, n := range c.Nodes {
			if containsNode(skip, n) {
				continue
			}
			if _, err := c.Client(t, n, c.RootToken).Logical().Read(MountPath + "/keys/harness"); err != nil {
				t.Errorf("%s: read through %s: %v", what, n.Name, err)
			}
		}
	}
	readAll("healthy cluster")
	if b, err := os.ReadFile(c.AuditLogPath); err != nil || !strings.Contains(string(b), `"path":"ticketkeys/keys/harness"`) {
		t.Errorf("audit log %s has no entry for the keyring (%d bytes, %v)", c.AuditLogPath, len(b), err)
	}

	// AppRole credentials from bootstrap/node-approle.sh log in through any node.
	dir := c.NodeAppRole(t, "harness", "web-1")
	roleID, _ := os.ReadFile(filepath.Join(dir, "role-id"))
	secretID, _ := os.ReadFile(filepath.Join(dir, "secret-id"))
	// OpenBao's standbys answer some requests from their own Raft copy
	// (disable_standby_reads defaults to false), which may lag the active
	// node's write of the secret id by a moment: the login is retried for up
	// to 10 s, and must then succeed on both servers.
	var login *api.Secret
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		login, err = c.Client(t, c.Nodes[2], "").Logical().Write("auth/approle/login", map[string]any{"role_id": string(roleID), "secret_id": string(secretID)})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || login.Auth == nil || !contains(login.Auth.Policies, "ticketkeys-reader-harness") {
		t.Fatalf("approle login of node web-1: %v (auth %+v)", err, login)
	}

	// The auditor policy reads history, never a keyring.
	c.Vault(t, c.Nodes[0], c.RootToken, "policy", "write", "ticketkeys-auditor", c.ScriptPath("bootstrap/policies/ticketkeys-auditor.hcl"))
	auditorToken := strings.TrimSpace(c.Vault(t, c.Nodes[0], c.RootToken, "token", "create", "-policy=ticketkeys-auditor", "-field=token"))
	auditor := c.Client(t, c.Nodes[2], auditorToken)
	if h, err := auditor.Logical().Read(MountPath + "/keys/harness/history"); err != nil || h == nil {
		t.Errorf("auditor cannot read the history: %v", err)
	}
	if _, err := auditor.Logical().Read(MountPath + "/keys/harness"); !isForbidden(err) {
		t.Errorf("auditor read the keyring (its material): err = %v, want 403", err)
	}

	// SIGKILL the active node: a standby takes over, reads keep working
	// through the survivors, and the killed node rejoins.
	old := c.Nodes[0]
	oldPID := old.Proc.PID
	old.Kill(t)
	if !processGone(oldPID) {
		t.Errorf("killed pid %d still exists", oldPID)
	}
	start := time.Now()
	next := c.WaitActive(t, 30*time.Second, old)
	t.Logf("%s took over %s after the SIGKILL of %s", next.Name, time.Since(start).Round(time.Millisecond), old.Name)
	readAll("after the failover", old)
	old.Start(t)
	old.Unseal(t)
	c.WaitHealthy(t, healthyTimeout)
	readAll("after the killed node rejoined")

	// A sealed standby refuses reads (503), the others serve.
	var standby *Node
	for _, n := range c.Nodes {
		if n != c.Active() {
			standby = n
			break
		}
	}
	standby.RestartSealed(t)
	if h, err := c.Health(standby); err != nil || !h.Sealed {
		t.Fatalf("%s after RestartSealed: health %+v, %v; want sealed", standby.Name, h, err)
	}
	_, err = c.Client(t, standby, c.RootToken).Logical().Read(MountPath + "/keys/harness")
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 503 {
		t.Errorf("read through the sealed %s: err = %v, want 503", standby.Name, err)
	}
	readAll("with a sealed standby", standby)
	standby.Unseal(t)
	c.WaitHealthy(t, healthyTimeout)

	// `vault operator seal` on the active node: it steps down and another node takes over.
	a := c.Active()
	a.Seal(t)
	if h, err := c.Health(a); err != nil || !h.Sealed {
		t.Errorf("%s after operator seal: health %+v, %v; want sealed", a.Name, h, err)
	}
	c.WaitActive(t, 30*time.Second, a)
	readAll("with the sealed former active node", a)
	a.Unseal(t)
	c.WaitHealthy(t, healthyTimeout)

	// Stop leaves no server and no plugin process.
	var pids []int
	for _, n := range c.Nodes {
		pids = append(pids, n.Proc.PID)
	}
	c.Stop()
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("server pid %d still exists after Stop", pid)
		}
		// Plugin processes were SIGKILLed with the group; give init a moment to reap them.
		deadline := time.Now().Add(5 * time.Second)
		for !errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			out, _ := exec.Command("ps", "-o", "pid,ppid,stat,comm", "-g", strconv.Itoa(pid)).CombinedOutput()
			t.Errorf("process group %d still has members 5s after Stop (kill -0: %v):\n%s", pid, err, out)
		}
	}
}
