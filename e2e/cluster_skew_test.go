//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// clockOffsetVar is the variable a clockskew build of the plugin reads its clock offset from
// (clock_skew.go). Vault passes its own environment to the plugin processes it starts.
const clockOffsetVar = "TICKETKEYS_TEST_CLOCK_OFFSET"

// TestClusterClockSkew (issue 14, item 5): one standby of a 3-node TLS cluster runs Vault, and so the
// plugin, with its engine clock 2 minutes ahead (a clockskew build of the plugin, the offset given to that
// node's `vault server` only: Vault is a static Go binary, so LD_PRELOAD clock shifters do not reach it).
// While it is a standby, reads sent to it return exactly the active node's window (Vault Community
// forwards every request to the active node; the standby runs no plugin process at all) and nothing it
// could compute is written. Then it is made active: its engine's clock really is 2 minutes ahead, which
// the published times show, and the test measures what that does to the schedule.
func TestClusterClockSkew(t *testing.T) {
	const skew = 2 * time.Minute
	const keyring = "skew"
	c := vaulttest.StartCluster(t, vaulttest.WithRawStorageEndpoint(), vaulttest.WithClusterLogLevel("debug"),
		vaulttest.WithPluginBuildTags("clockskew"), vaulttest.WithNodeEnv("node2", clockOffsetVar+"="+skew.String()))
	active, other, skewed := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	if a := c.Active(); a != active {
		t.Fatalf("want node0 active after StartCluster, got %v", a)
	}

	c.Vault(t, active, c.RootToken, "policy", "write", "ticketkeys-operator", c.ScriptPath("bootstrap/policies/ticketkeys-operator.hcl"))
	opToken := strings.TrimSpace(c.Vault(t, active, c.RootToken, "token", "create", "-policy=ticketkeys-operator", "-ttl=1h", "-field=token"))
	const period = 10 * time.Second
	c.Vault(t, active, opToken, "write", "ticketkeys/keys/"+keyring, "rotation_period="+period.String(), "publish_ahead=10s", "retain=20s")
	onActive, onSkewed := c.Client(t, active, opToken), c.Client(t, skewed, opToken)
	readHistory := func(cl *api.Client) *api.Secret {
		t.Helper()
		sec, err := cl.Logical().Read("ticketkeys/keys/" + keyring + "/history")
		if err != nil || sec == nil {
			t.Fatalf("read the history of %s through %s: %v", keyring, cl.Address(), err)
		}
		return sec
	}

	// Phase 1: the skewed node is a standby, across at least one activation.
	phaseEnd := time.Now().Add(period + 5*time.Second)
	compared, skippedAtBoundary := 0, 0
	var maxWriteAhead time.Duration
	for time.Now().Before(phaseEnd) {
		before := readHistory(onActive)
		viaSkewed := readHistory(onSkewed)
		after := readHistory(onActive)
		if !sameKeyList(before.Data["keys"], after.Data["keys"]) {
			skippedAtBoundary++ // an activation fell between the two reads on the active node
		} else {
			compared++
			if !sameKeyList(before.Data["keys"], viaSkewed.Data["keys"]) {
				t.Errorf("the skewed standby answered a window other than the active node's: active %s, skewed standby %s",
					parseHistory(before).ids(), parseHistory(viaSkewed).ids())
			}
		}
		// A write computed with the skewed clock would carry an updated_at up to 2 minutes ahead.
		if ahead := time.Until(rawKeyring(t, c, active, keyring).UpdatedAt); ahead > maxWriteAhead {
			maxWriteAhead = ahead
		}
		time.Sleep(time.Second)
	}
	activePlugins, skewedPlugins := pluginProcesses(t, active.Proc.PID), pluginProcesses(t, skewed.Proc.PID)
	maintainedByActive, maintainedBySkewed := countLines(t, active.LogPath, "keyring maintained"), countLines(t, skewed.LogPath, "keyring maintained")
	t.Logf("(5) skewed standby %s (%s=%s): %d reads through it equal the active node's (ids, states, times; %d samples skipped at an activation); "+
		"stored updated_at at most %s ahead of the real clock; plugin processes: %d under %s (active), %d under %s; \"keyring maintained\" log lines: %d on %s, %d on %s",
		skewed.Name, clockOffsetVar, skew, compared, skippedAtBoundary, maxWriteAhead.Round(time.Millisecond),
		len(activePlugins), active.Name, len(skewedPlugins), skewed.Name, maintainedByActive, active.Name, maintainedBySkewed, skewed.Name)
	if compared < 5 {
		t.Errorf("only %d comparable reads through the skewed standby; want at least 5", compared)
	}
	if maxWriteAhead > time.Second {
		t.Errorf("the stored keyring's updated_at ran %s ahead of the real clock while the skewed node was a standby: it wrote", maxWriteAhead)
	}
	if len(activePlugins) == 0 || len(skewedPlugins) != 0 {
		t.Errorf("plugin processes: %d on the active node, %d on the skewed standby; want at least 1 and 0", len(activePlugins), len(skewedPlugins))
	}
	if maintainedBySkewed != 0 {
		t.Errorf("the skewed standby logged \"keyring maintained\" %d times; want 0", maintainedBySkewed)
	}

	// Phase 2: make the skewed node active. With node1 stopped, node2 is the only node node0 can hand over to.
	beforeStepDown := readHistory(onActive)
	other.Stop()
	stepDown := time.Now()
	c.Vault(t, active, c.RootToken, "operator", "step-down")
	if next := c.WaitActive(t, 30*time.Second, active); next != skewed {
		t.Fatalf("%s became active after the step-down; want %s", next.Name, skewed.Name)
	}
	takeover := time.Since(stepDown)
	// Its engine starts from storage and maintains the keyring at once, with its own clock.
	var stored storedKeyring
	waitFor(t, 30*time.Second, "the skewed node's engine to maintain the keyring", func() bool {
		stored = rawKeyring(t, c, skewed, keyring)
		return time.Until(stored.UpdatedAt) > time.Minute
	})
	writtenAhead := time.Until(stored.UpdatedAt)
	now := time.Now()
	h := parseHistory(readHistory(onSkewed))
	var current histKey
	for _, k := range h.Keys {
		if k.State == "current" {
			current = k
		}
	}
	currentEarly := current.NotBefore.Sub(now)
	// The key the real clock says is encrypting, and whether the skewed node destroyed it.
	realCurrent := parseHistory(beforeStepDown).current()
	destroyedEarly, realCurrentDestroyed := 0, false
	for _, k := range h.Destroyed {
		if k.NotAfter.After(now) {
			destroyedEarly++
			realCurrentDestroyed = realCurrentDestroyed || k.ID == realCurrent
		}
	}
	plugins := pluginProcesses(t, skewed.Proc.PID)
	envSeen := false
	for _, pid := range plugins {
		envSeen = envSeen || processHasEnv(pid, clockOffsetVar+"="+skew.String())
	}
	t.Logf("(5) %s active %s after the step-down; its plugin process(es) %v carry %s=%s: %t", skewed.Name, takeover.Round(time.Millisecond), plugins, clockOffsetVar, skew, envSeen)
	t.Logf("(5) on the skewed active node: stored updated_at %s ahead of the real clock; current key %s became current %s early by its published not_before %s; "+
		"%d keys destroyed while their not_after was still ahead (the key current before the step-down, %s, among them: %t); keys before %s, after %s",
		writtenAhead.Round(time.Millisecond), shortIDs(current.ID), currentEarly.Round(time.Millisecond), current.NotBefore.Format("15:04:05"),
		destroyedEarly, shortIDs(realCurrent), realCurrentDestroyed, parseHistory(beforeStepDown).ids(), h.ids())
	if n := countLines(t, skewed.LogPath, "keyring maintained"); n == 0 {
		t.Errorf("the skewed node logged no \"keyring maintained\" as the active node (the log check cannot see maintenance)")
	}
	if !envSeen {
		t.Errorf("no plugin process of %s carries %s=%s", skewed.Name, clockOffsetVar, skew)
	}
	if writtenAhead < skew-5*time.Second || writtenAhead > skew+time.Second {
		t.Errorf("the skewed active node stored updated_at %s ahead; want about %s", writtenAhead, skew)
	}
	if currentEarly <= skew-period-5*time.Second || currentEarly > skew {
		t.Errorf("the skewed active node's current key starts %s after the real now; want within (%s, %s]", currentEarly, skew-period, skew)
	}
}

// rawKeyring reads keyring's storage entry through sys/raw on node n with the root token.
func rawKeyring(t *testing.T, c *vaulttest.Cluster, n *vaulttest.Node, keyring string) storedKeyring {
	t.Helper()
	root := c.Client(t, n, c.RootToken)
	m, err := root.Logical().Read("sys/mounts/" + vaulttest.MountPath)
	if err != nil || m == nil {
		t.Fatalf("read sys/mounts/%s on %s: %v", vaulttest.MountPath, n.Name, err)
	}
	uuid, _ := m.Data["uuid"].(string)
	sec, err := root.Logical().Read("sys/raw/logical/" + uuid + "/keyring/" + keyring)
	if err != nil || sec == nil {
		t.Fatalf("read the raw keyring entry on %s: %v", n.Name, err)
	}
	v, _ := sec.Data["value"].(string)
	var sk storedKeyring
	if err := json.Unmarshal([]byte(v), &sk); err != nil {
		t.Fatalf("decode the raw keyring entry: %v", err)
	}
	return sk
}

// pluginProcesses lists the PIDs of the plugin processes a Vault server (pid) started: its children
// whose command is the plugin binary.
func pluginProcesses(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("list /proc: %v", err)
	}
	var pids []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// Fields after the command name in parentheses: state, ppid, ...
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), vaulttest.PluginFile) {
			pids = append(pids, child)
		}
	}
	return pids
}

// processHasEnv reports whether process pid was started with the environment entry kv.
func processHasEnv(pid int, kv string) bool {
	env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		return false
	}
	for _, e := range strings.Split(string(env), "\x00") {
		if e == kv {
			return true
		}
	}
	return false
}

// countLines counts the lines of the file at path that contain s.
func countLines(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return strings.Count(string(b), s)
}
