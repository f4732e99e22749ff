//go:build e2e

package e2e

// End-to-end proof of issue 20's "done when": the fleet check at production-sized ttl jitter, on every
// server kind at once.

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/fleetcheck"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// The production-jitter keyrings: a 1-minute period with the next key published one period ahead and two
// periods of retain (current + next + 2 previous: nginx's 4 slots), on an engine built with the tag
// ttljitterscale and run with TICKETKEYS_TEST_TTL_JITTER_SCALE=pjJitterScale: its ttl jitter is the
// production rule min(rotation_period/20, publish_ahead/10, 30s) of 10m/10m, 30 s, as at any production
// period of 10 minutes and more, where a shipped engine gives 3 s at 1m/1m.
const (
	pjPeriod       = time.Minute
	pjPublishAhead = time.Minute
	pjRetain       = 2 * time.Minute
	pjJitterScale  = 10
	pjJitterEnv    = "TICKETKEYS_TEST_TTL_JITTER_SCALE"
)

// pjJitter is the engine's largest ttl jitter in this test: 30 s.
var pjJitter = schedule.TTLJitterMax(pjJitterScale*pjPeriod, pjJitterScale*pjPublishAhead)

func createPJKeyring(t *testing.T, s *vaulttest.Server, name string) {
	t.Helper()
	if _, err := s.Client.Logical().Write("ticketkeys/keys/"+name, map[string]any{
		"rotation_period": pjPeriod.String(), "publish_ahead": pjPublishAhead.String(), "retain": pjRetain.String(),
	}); err != nil {
		t.Fatalf("create keyring %s: %v", name, err)
	}
}

// TestFleetCheckProductionJitter runs five fleets of three nodes at once, each on its own keyring of one
// Vault server whose engine has production-sized ttl jitter (30 s): Agent-fed HAProxy (push) and nginx
// (key files, reload), nginx with the Lua module, Go servers with client.Source, and Caddy with the
// tls.stek.ticketkeys module. Each fleet's continuous check (Config.TestJitterScale: the same production
// rule) must, through at least three activations and a purge:
//   - never report a healthy node failing, in any round (the Agent-fed nodes' tolerance absorbs the
//     jitter; the test also proves the jitter reached them: some round saw an Agent-fed node still on the
//     previous key longer after an activation than a shipped engine's jitter would allow);
//   - for every fleet but Caddy, name node 2, cut off Vault (its Agent stopped; the Go node's token
//     revoked), not ready for the key published after the cut, before that key activates;
//   - after `rotate mode=now purge_previous=true`, name the time the last node refused every purged key.
//
// The engine's jitter itself is measured: reads shortly before an activation hand out ttls up to 30 s
// past the change.
func TestFleetCheckProductionJitter(t *testing.T) {
	s := vaulttest.Start(t, vaulttest.WithBuildTags("ttljitterscale"), vaulttest.WithEnv(fmt.Sprintf("%s=%d", pjJitterEnv, pjJitterScale)))
	cert := testcert.New(t, testcert.ECDSAP256)
	s.EnableAppRole(t, "fleetcheck-setup", "default")
	caddyBin := caddyBinary(t)
	run := fcRun{jitterScale: pjJitterScale, rotations: 2, allRounds: true, period: pjPeriod}

	var mu sync.Mutex
	agentReports := map[string][]*fleetcheck.Report{}
	agentStale := map[string]string{} // the cut node, left out of the lag evidence
	// The fleets and the jitter measurement run at once, each a subtest started from its own goroutine
	// (not t.Parallel: -parallel defaults to GOMAXPROCS, 2 here, and would run them two at a time).
	var wg sync.WaitGroup
	fleet := func(parent *testing.T, name string, build func(t *testing.T) *fcFleet) {
		wg.Add(1)
		go func() {
			defer wg.Done() // after Run returned: the subtest and its cleanups are over
			parent.Run(name, func(t *testing.T) {
				f := build(t)
				rec := runFleetCheckReports(t, s, cert, f, run)
				if f.nodeKind == "" && fleetcheck.DefaultKind(f.format) == fleetcheck.KindAgent {
					mu.Lock()
					agentReports[f.kind] = rec
					agentStale[f.kind] = f.addrs[2]
					mu.Unlock()
				}
			})
		}()
	}
	t.Run("fleets", func(ft *testing.T) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ft.Run("engine-jitter", func(t *testing.T) { measureEngineJitter(t, s) })
		}()
		fleet(ft, "haproxy", func(t *testing.T) *fcFleet { return haproxyFleet(t, s, cert, createPJKeyring) })
		fleet(ft, "nginx-file", func(t *testing.T) *fcFleet { return nginxFileFleet(t, s, cert, createPJKeyring) })
		fleet(ft, "nginx-lua", func(t *testing.T) *fcFleet { return luaFleet(t, s, cert, createPJKeyring) })
		fleet(ft, "go", func(t *testing.T) *fcFleet { return goFleet(t, s, cert, createPJKeyring) })
		fleet(ft, "caddy", func(t *testing.T) *fcFleet { return caddyFleet(t, s, cert, caddyBin, createPJKeyring) })
		wg.Wait()
	})
	if t.Failed() {
		return
	}

	// The jitter reached the Agent-fed nodes: a shipped engine's tolerance at 1m/1m (grace + 3 s of
	// jitter + 6 s) would have reported some round red.
	shipped := fleetcheck.DefaultGrace + fleetcheck.AgentLag(pjPeriod, pjPublishAhead, fleetcheck.DefaultReloadAllowance)
	// (healthy nodes only: the cut node stays on the previous key until its tolerance runs out)
	var longest time.Duration
	for kind, reps := range agentReports {
		lag, n, at := agentSwitchLags(reps, agentStale[kind])
		t.Logf("%s: %d rounds saw a node still on the previous key after an activation; the longest %s after it, in the round at %s (tolerance %gs)",
			kind, n, lag, at.Format("15:04:05.000"), reps[len(reps)-1].Nodes[0].Tolerance)
		longest = max(longest, lag)
	}
	if longest <= shipped {
		t.Errorf("no round saw an Agent-fed node still on the previous key more than %s after an activation (longest %s): the 30 s jitter did not show", shipped, longest)
	} else {
		t.Logf("an Agent-fed node was still on the previous key %s after an activation: past the %s a shipped engine's jitter would allow, within the tolerance of the production rule at 30 s of jitter", longest, shipped)
	}
}

// runFleetCheckReports runs runFleetCheck and returns every report of the fleet's check.
func runFleetCheckReports(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, f *fcFleet, run fcRun) []*fleetcheck.Report {
	var out []*fleetcheck.Report
	run.reports = func(r []*fleetcheck.Report) { out = r }
	runFleetCheck(t, s, cert, f, "", run)
	return out
}

// measureEngineJitter reads a keyring of its own 60 times in the 20 s before an activation, where no ttl
// is capped, and measures how far past the change each ttl runs: the largest must be production-sized
// (more than 20 s of the 30 s; 60 draws of 0..30 s all under 21 s happen with probability 2e-10) and none
// past 30 s.
func measureEngineJitter(t *testing.T, s *vaulttest.Server) {
	const keyring = "pj-jitter"
	createPJKeyring(t, s, keyring)
	act := nextActivation(t, s, keyring)
	if until := time.Until(act); until < 22*time.Second {
		act = act.Add(pjPeriod)
	}
	time.Sleep(time.Until(act.Add(-20 * time.Second)))
	var largest, smallest time.Duration = -1, time.Hour
	for i := 0; i < 60; i++ {
		before := time.Now()
		sec, err := s.Client.Logical().Read("ticketkeys/keys/" + keyring)
		if err != nil || sec == nil {
			t.Fatalf("read %s: %v", keyring, err)
		}
		v, err := strconv.ParseInt(fmt.Sprint(sec.Data["ttl"]), 10, 64)
		if err != nil {
			t.Fatalf("read %s: ttl %v: %v", keyring, sec.Data["ttl"], err)
		}
		ttl := time.Duration(v) * time.Second
		// The change is at act: the ttl runs to ceil(act - read time) plus the jitter.
		until := time.Duration(math.Ceil(act.Sub(before).Seconds())) * time.Second
		j := ttl - until
		largest, smallest = max(largest, j), min(smallest, j)
		if time.Until(act) < 3*time.Second {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("engine ttl jitter before the activation at %s: %s to %s past the change (production rule: up to %s)", act.Format("15:04:05"), smallest, largest, pjJitter)
	if largest <= 20*time.Second || largest > pjJitter+time.Second || smallest < -time.Second {
		t.Errorf("ttl past the change: %s to %s; want production-sized jitter, up to %s and more than 20 s", smallest, largest, pjJitter)
	}
}

// prevLagRE finds, in a current-key detail, how long after an activation a node was still on the previous key.
var prevLagRE = regexp.MustCompile(`still on the previous key \S+, (\S+) after the activation`)

// agentSwitchLags returns the longest time after an activation any round saw a node still on the
// previous key, how many node-rounds saw one, and the start of the round that saw the longest. The node
// skip (cut off Vault for a while, so on the previous key until its tolerance ran out) is left out.
func agentSwitchLags(reps []*fleetcheck.Report, skip string) (time.Duration, int, time.Time) {
	var longest time.Duration
	var at time.Time
	n := 0
	for _, rep := range reps {
		for _, nr := range rep.Nodes {
			if nr.Addr == skip {
				continue
			}
			for _, vr := range nr.Versions {
				if m := prevLagRE.FindStringSubmatch(vr.Current.Detail); m != nil {
					if d, err := time.ParseDuration(m[1]); err == nil {
						if d > longest {
							longest, at = d, rep.Started
						}
						n++
					}
				}
			}
		}
	}
	return longest, n, at
}

// noFalseRed fails the test for any failure in any round that is not the cut node's (node 2, or another
// node's ticket offered to it) between the cut and the first green round after the restore.
func noFalseRed(t *testing.T, reps []*fleetcheck.Report, f *fcFleet, cutAt, greenAt time.Time) {
	t.Helper()
	stale := f.addrs[2]
	expected, bad := 0, 0
	for _, rep := range reps {
		inCut := !cutAt.IsZero() && !rep.Started.Before(cutAt) && rep.Started.Before(greenAt)
		for _, fl := range rep.Failures {
			if inCut && (strings.HasPrefix(fl, stale+" ") || strings.Contains(fl, "offered to "+stale+":")) {
				expected++
				continue
			}
			bad++
			if bad <= 10 {
				t.Errorf("%s: round %d at %s reports a healthy node failing: %s", f.kind, rep.Round, rep.Started.Format("15:04:05.000"), fl)
			}
		}
	}
	if bad > 10 {
		t.Errorf("%s: %d failures of healthy nodes in all (first 10 above)", f.kind, bad)
	}
	if cutAt.IsZero() {
		t.Logf("%s: %d rounds; no node ever reported failing: %v", f.kind, len(reps), bad == 0)
		return
	}
	t.Logf("%s: %d rounds; no healthy node ever reported failing: %v (%d failures, all of the cut node %s while it was cut off)", f.kind, len(reps), bad == 0, expected, stale)
}

// nginxFileFleet: three nginx nodes (Debian's package) fed key files by their own Agents, which reload
// nginx; node 2 is cut off by stopping its Agent and restored by starting it again.
func nginxFileFleet(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, create fcKeyring) *fcFleet {
	const keyring = "fc-nginx-file"
	create(t, s, keyring)
	certFile, keyFile, _ := cert.WritePEM(t.TempDir())
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "big"), []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &fcFleet{kind: "nginx-file", keyring: keyring, format: "nginx"}
	var nodes []*agentNode
	for i := 0; i < 3; i++ {
		n := startAgentNode(t, s, agent.Nginx, keyring, fmt.Sprintf("fc-nginx%d", i), ":", "")
		port := servertest.FreePort(t)
		p := servertest.StartNginx(t, nginxConf(port, certFile, keyFile, n.Files[len(n.Files)-1], dataDir))
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p.WaitListening(t, addr)
		n.setAction(t, fmt.Sprintf("kill -HUP %d", p.MasterPID))
		p.Reload(t)
		nodes = append(nodes, n)
		f.addrs = append(f.addrs, addr)
	}
	// Key files: the slots hold current, next and slots - 2 previous keys (docs/nginx.md).
	f.previousKeys = len(nodes[0].Files) - 1 - 2
	f.cutOff = func(t *testing.T) { nodes[2].Agent.Stop() }
	f.restore = func(t *testing.T) { nodes[2].restartAgent(t, s, "") }
	return f
}

// caddyFleet: three Caddy nodes with the tls.stek.ticketkeys module, each logging in with its own
// AppRole. Not cut off (the module is a local node like the Go ones, which are).
func caddyFleet(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, bin string, create fcKeyring) *fcFleet {
	const keyring = "fc-caddy"
	create(t, s, keyring)
	f := &fcFleet{kind: "caddy", keyring: keyring, format: "go", nodeKind: fleetcheck.KindLocal, unnamed: true}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("fc-caddy%d", i)
		roleIDFile, secretIDFile := appRoleFiles(t, s, keyring, "node-"+keyring+"-"+name, t.TempDir())
		n := startCaddyNode(t, bin, name, cert, map[string]any{"key_source": map[string]any{
			"provider": "ticketkeys", "mount": "ticketkeys", "keyring": keyring, "address": s.Addr,
			"approle":           map[string]any{"role_id_file": roleIDFile, "secret_id_file": secretIDFile},
			"retry_backoff_min": "200ms", "retry_backoff_max": "2s",
		}})
		f.addrs = append(f.addrs, n.addr)
	}
	return f
}
