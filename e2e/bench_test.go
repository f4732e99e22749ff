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
// Vault read cost and the decryption benchmark. It checks the measurements
// against what each scenario must show, not just that files exist.
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
	out := filepath.Join(dir, "results")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-quick", "-out", out, "-tls", "1.3", "-certs", "ecdsa",
		"-scenarios", "single,own,switch,ticketkeys", "-decrypt-windows", "1,4", "-budget", "3m")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VAULT_BIN="+vaultBin)
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
		t.Errorf("read cost: %+v, want reads of both paths at the same data size", rep.Reads)
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
	for _, want := range []string{"## Cluster resumption", "4: ticketkeys (Vault)", "## Hook cost", "## Vault read cost", "load average", "(resumption.png)"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmark.md lacks %q", want)
		}
	}
	f, err := os.Open(filepath.Join(out, "resumption.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("resumption.png: %v", err)
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
