//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bench"
)

// TestBenchHarnessQuick runs the `make bench` harness end to end in its
// quick mode on one TLS version and one certificate: a real Vault with the
// plugin, server nodes in a child process, the load, the hook cost, the
// Vault read cost (built-in KV and the same KV engine as an external
// plugin, built by tools/kvplugin/build.sh), the decryption benchmark, the
// time to first byte behind latency proxies and a 100-node fleet of each
// kind. It checks the measurements against what each scenario must show,
// not just that files exist.
func TestBenchHarnessQuick(t *testing.T) {
	vaultBin := os.Getenv("VAULT_BIN")
	if vaultBin == "" {
		t.Fatal("VAULT_BIN is not set: run through `make test-e2e`, or VAULT_BIN=$(scripts/vault-build.sh)")
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "ticketkeys-bench")
	root := benchModuleRoot(t)
	build := exec.Command("go", "build", "-o", exe, "./bench/cmd/ticketkeys-bench")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./bench/cmd/ticketkeys-bench: %v\n%s", err, out)
	}
	kvBuild := exec.Command(filepath.Join(root, "tools", "kvplugin", "build.sh"))
	kvBuild.Stderr = os.Stderr
	kvPlugin, err := kvBuild.Output()
	if err != nil {
		t.Fatalf("tools/kvplugin/build.sh: %v", err)
	}
	out := filepath.Join(dir, "results")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-quick", "-out", out, "-tls", "1.3", "-certs", "ecdsa",
		"-scenarios", "single,own,switch,ticketkeys", "-decrypt-windows", "1,4", "-budget", "4m",
		"-only", "cluster,hook,reads,decrypt,rtt,fleet") // the nginx rows: TestBenchNginxQuick
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VAULT_BIN="+vaultBin, "KV_PLUGIN_BIN="+strings.TrimSpace(string(kvPlugin)))
	logs, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ticketkeys-bench: %v\n%s", err, logs)
	}

	b, err := os.ReadFile(filepath.Join(out, "benchmark.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("benchmark.json: %v", err)
	}
	if len(rep.Notes) != 0 {
		t.Errorf("notes (skipped or failed steps): %q", rep.Notes)
	}
	runs := map[string]bench.RunResult{}
	for _, r := range rep.Runs {
		if r.Err != "" {
			t.Fatalf("run %s failed: %s", r.Scenario, r.Err)
		}
		runs[r.Scenario] = r
		t.Logf("%s: connections=%d offered=%d resumed=%d rotations=%d cpu/conn=%s", r.Scenario, r.Connections, r.Offered, r.Resumed, len(r.Rotations), r.CPUPerConn())
		if r.Offered < 100 || r.ServerCPU <= 0 || r.P99 <= 0 {
			t.Errorf("%s: offered=%d server CPU=%s p99=%s: want a real measurement", r.Scenario, r.Offered, r.ServerCPU, r.P99)
		}
		if r.HandshakeFailures+r.RequestFailures != 0 {
			t.Errorf("%s: %d handshake and %d request failures: %v", r.Scenario, r.HandshakeFailures, r.RequestFailures, r.ErrorSamples)
		}
	}
	if s := runs["single"].ResumeShare(); s < 0.99 {
		t.Errorf("single node resumed %.3f, want >= 0.99", s)
	}
	if s := runs["own"].ResumeShare(); s > 0.6 {
		t.Errorf("3 nodes with own keys resumed %.3f, want about 1/3", s)
	}
	sw := runs["switch"]
	if len(sw.Rotations) < 2 || sw.FailedResumptions() == 0 {
		t.Errorf("rotation without a window: %d rotations, %d failed resumptions; want >= 2 rotations and failures", len(sw.Rotations), sw.FailedResumptions())
	}
	tk := runs["ticketkeys"]
	if len(tk.Rotations) < 1 {
		t.Errorf("ticketkeys: %d rotations during a 14s load at a 5s period, want >= 1", len(tk.Rotations))
	}
	if s := tk.ResumeShare(); s < 0.99 {
		t.Errorf("ticketkeys resumed %.4f across rotations, want >= 0.99", s)
	}
	if len(tk.Sources) != 3 {
		t.Errorf("ticketkeys: %d source summaries, want 3", len(tk.Sources))
	}
	if tk.RelSingle <= 0 || math.IsNaN(tk.RelSingle) {
		t.Errorf("ticketkeys: CPU relative to a single node %v, want > 0", tk.RelSingle)
	}

	if len(rep.Hook) != 1 || rep.Hook[0].Ratio() <= 0 || rep.Hook[0].Hook.WindowKeys < 3 || rep.Hook[0].Hook.ResumedShare() < 0.9 {
		t.Errorf("hook cost: %+v, want a ratio, a window of >= 3 keys and mostly resumed handshakes", rep.Hook)
	}
	if rep.Reads == nil || rep.Reads.Keys.Reads == 0 || rep.Reads.KV.Reads == 0 || rep.Reads.Keys.DataBytes != rep.Reads.KV.DataBytes {
		t.Fatalf("read cost: %+v, want reads of both paths at the same data size", rep.Reads)
	}
	if x := rep.Reads.KVExternal; x == nil || x.Reads == 0 || x.DataBytes != rep.Reads.KV.DataBytes || x.PluginCPU <= 0 {
		t.Errorf("read cost: external KV plugin %+v, want reads at the same size with plugin CPU", x)
	}
	if nd := rep.Reads.KVNoDefault; nd == nil || nd.Reads == 0 {
		t.Errorf("read cost: built-in KV with a token without the default policy: %+v, want reads", nd)
	}
	if !rep.Reads.Audit || rep.Reads.Keys.AuditBytes <= 0 || rep.Reads.Keys.VaultCPU <= 0 || rep.Reads.Keys.PluginCPU <= 0 || rep.Reads.KV.PluginCPU >= rep.Reads.Keys.PluginCPU {
		t.Errorf("read cost: audit %t, keyring audit bytes %d, Vault CPU %s, plugin CPU %s (built-in KV's plugin CPU %s): want audited reads, with plugin CPU for the keyring only",
			rep.Reads.Audit, rep.Reads.Keys.AuditBytes, rep.Reads.Keys.VaultCPU, rep.Reads.Keys.PluginCPU, rep.Reads.KV.PluginCPU)
	}

	// Time to first byte at 50 ms RTT, TLS 1.3: 3 round trips at least
	// (TCP, handshake, request), full or resumed; ticketkeys resumes
	// across nodes, own keys about a third.
	if len(rep.RTT) != 2 {
		t.Fatalf("time to first byte: %d results, want own and ticketkeys at 50ms", len(rep.RTT))
	}
	for _, r := range rep.RTT {
		if r.Err != "" || r.Errors != 0 || r.Connections < 20 {
			t.Errorf("time to first byte %s: %d connections, %d errors, %q", r.Scenario, r.Connections, r.Errors, r.Err)
		}
		if r.RTT != 50*time.Millisecond || r.All.P50 < 3*r.RTT {
			t.Errorf("time to first byte %s: p50 %s at RTT %s, want >= 3 round trips", r.Scenario, r.All.P50, r.RTT)
		}
		share := float64(r.Resumed) / float64(max(r.Connections, 1))
		if (r.Scenario == "ticketkeys" && share < 0.9) || (r.Scenario == "own" && share > 0.6) {
			t.Errorf("time to first byte %s: %.2f resumed", r.Scenario, share)
		}
	}

	// Fleet: 100 nodes of each kind, every node holds the next key at its
	// activation, Vault's CPU and the audit device were measured.
	if len(rep.Fleet) != 2 {
		t.Fatalf("fleet: %d results, want sources and agents", len(rep.Fleet))
	}
	for _, f := range rep.Fleet {
		share, keys, ok := f.ActivationShare()
		t.Logf("fleet %s: startup %s, reads %d, peak %d/s, cpu/read %s, held at activation %.4f over %d keys", f.Kind, f.Startup, f.Reads, f.PeakReadsPerSecond(), f.CPUPerRead(), share, keys)
		if f.Err != "" || f.Nodes != 100 || f.ReadErrors != 0 || f.Reads == 0 {
			t.Errorf("fleet %s: %+v", f.Kind, f)
		}
		if !ok || share != 1 {
			t.Errorf("fleet %s: share of nodes holding the next key at activation %.4f over %d keys (measured %t), want 1", f.Kind, share, keys, ok)
		}
		if f.TotalCPU() <= 0 || f.AuditBytes <= 0 {
			t.Errorf("fleet %s: Vault CPU %s, audit bytes %d: want both measured", f.Kind, f.TotalCPU(), f.AuditBytes)
		}
	}
	// Tickets name their key, so a larger window need not cost more: the ratio is the benchmark's
	// to report (make bench), not a test's to time; here both sizes must have been measured.
	if len(rep.Decrypt) != 2 || rep.Decrypt[0].N == 0 || rep.Decrypt[1].N == 0 || rep.Decrypt[0].NsPerOp <= 0 || rep.Decrypt[1].NsPerOp <= 0 ||
		rep.Decrypt[1].Window <= rep.Decrypt[0].Window {
		t.Errorf("decryption benchmark %+v: want a measurement of a one-key and of a larger window", rep.Decrypt)
	}

	md, err := os.ReadFile(filepath.Join(out, "benchmark.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Cluster resumption", "4: ticketkeys (Vault)", "## Hook cost", "## Vault read cost", "load average", "(resumption.png)",
		"kvx/data/", "## Time to first byte over a round trip", "saves no round trip, only CPU", "(ttfb.png)", "## Fleet scale", "**Extrapolation**"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmark.md lacks %q", want)
		}
	}
	for _, name := range []string{"resumption.png", "ttfb.png"} {
		f, err := os.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(f); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		f.Close()
	}
}

// TestBenchNginxQuick runs the harness's nginx part alone in quick mode on
// TLS 1.3: 3 real nginx nodes (Debian's, and OpenResty 1.27.1 when its
// build is cached or its source kit is there) per key set-up, and the
// long-lived connections across one rotation. It checks what each set-up
// must show (counts and states, no times).
func TestBenchNginxQuick(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "ticketkeys-bench")
	root := benchModuleRoot(t)
	build := exec.Command("go", "build", "-o", exe, "./bench/cmd/ticketkeys-bench")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./bench/cmd/ticketkeys-bench: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "results")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-quick", "-only", "nginx", "-out", out, "-tls", "1.3", "-rtts", "50ms", "-budget", "3m")
	cmd.Dir = root
	logs, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ticketkeys-bench: %v\n%s", err, logs)
	}
	b, err := os.ReadFile(filepath.Join(out, "benchmark.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("benchmark.json: %v", err)
	}
	for _, n := range rep.Notes {
		if !strings.Contains(n, "OpenResty") { // a machine without the OpenResty build runs 3 Debian nodes
			t.Errorf("note (skipped or failed step): %q", n)
		}
	}
	if rep.Nginx == nil {
		t.Fatal("no nginx part in the report")
	}
	runs := map[string]bench.NginxRun{}
	for _, r := range rep.Nginx.Runs {
		runs[r.Setup] = r
		if r.Err != "" || r.Connections == 0 || r.HandshakeFailures+r.RequestFailures != 0 || r.WorkerCPU <= 0 {
			t.Errorf("%s: error %q, %d connections, %d failures, workers' CPU %s", r.Setup, r.Err, r.Connections, r.HandshakeFailures+r.RequestFailures, r.WorkerCPU)
		}
	}
	// Own keys: one node in three holds the ticket's key.
	if s := runs[bench.NginxOwn].ResumeShare(); !(s > 0.15 && s < 0.6) {
		t.Errorf("own keys resumed %.3f of the offered tickets, want about 1/3", s)
	}
	for _, setup := range []string{bench.NginxLua, bench.NginxReload} {
		r := runs[setup]
		if s := r.ResumeShare(); s < 0.95 || len(r.Rotations) == 0 {
			t.Errorf("%s resumed %.3f over %d rotations, want (nearly) all across at least one rotation", setup, s, len(r.Rotations))
		}
	}
	if r := runs[bench.NginxReload]; r.Reloads == 0 || r.MasterCPU <= 0 {
		t.Errorf("reload: %d reloads, masters' CPU %s: want reloads and the masters' CPU counted", r.Reloads, r.MasterCPU)
	}
	if r := runs[bench.NginxLua]; r.Reloads != 0 {
		t.Errorf("lua: %d reloads", r.Reloads)
	}
	if len(rep.Nginx.RTT) != 3 {
		t.Errorf("time to first byte: %d rows, want one per set-up", len(rep.Nginx.RTT))
	}
	if len(rep.Nginx.Long) != 3 {
		t.Fatalf("long-lived: %d rows, want 3", len(rep.Nginx.Long))
	}
	lua, unset, set := rep.Nginx.Long[0], rep.Nginx.Long[1], rep.Nginx.Long[2]
	if lua.Err != "" || lua.KeepAliveEnded != 0 || lua.StreamsEnded != 0 || lua.OldWorkers != 0 {
		t.Errorf("lua module: %+v, want no connection ended and no worker replaced", lua)
	}
	if unset.Err != "" || unset.ShutdownTimeout != 0 || unset.KeepAliveEnded != unset.KeepAlive || unset.StreamsEnded != 0 ||
		unset.OldWorkers != 3 || unset.OldWorkersAtEnd != 3 || unset.OldRSSPeak <= 0 {
		t.Errorf("reload without worker_shutdown_timeout: %+v, want every idle connection closed, every stream kept, 3 old workers still alive", unset)
	}
	if set.Err != "" || set.ShutdownTimeout == 0 || set.KeepAliveEnded != set.KeepAlive || set.OldWorkers != 3 {
		t.Errorf("reload with worker_shutdown_timeout: %+v", set)
	}
	// The Lua module's switch at published instants: every node seen switching at every activation, no
	// ticket under a key before its not_before.
	if len(rep.Nginx.Switch) != 1 {
		t.Fatalf("switch at published instants: %d rows, want 1", len(rep.Nginx.Switch))
	}
	sw := rep.Nginx.Switch[0]
	if sw.Err != "" || sw.Probes == 0 || sw.Early != 0 || sw.Unseen != 0 {
		t.Errorf("switch at published instants: %+v, want every node switching at every activation and no early ticket", sw)
	}
	t.Logf("switch at published instants: %d activations, %d probes, slowest switch between %s and %s", sw.Activations, sw.Probes, sw.LateMax, sw.SwitchedBy)
	md, err := os.ReadFile(filepath.Join(out, "benchmark.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## nginx: own keys, ticketkeys via the Lua module, rotation by reload", "| ticketkeys via the Lua module | unset | 0 of 12 |",
		"masters CPU/conn", "(watch ended)"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmark.md lacks %q", want)
		}
	}
}

// benchModuleRoot is the directory of the module's go.mod.
func benchModuleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
