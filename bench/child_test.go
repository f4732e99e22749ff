package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChildProcessProtocol runs the test binary itself as a serve child (see
// TestMain) and checks the whole protocol: ready with loopback addresses,
// CPU samples from the child's own accounting, an error answer, and a clean
// exit when stdin closes.
func TestChildProcessProtocol(t *testing.T) {
	_, certFile, keyFile := certConfig(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "child.log")
	ctx := context.Background()
	c, err := StartChild(ctx, exe, []string{"serve", "-nodes", "2", "-mode", "static", "-cert", certFile, "-key", keyFile, "-max-life", "1m"}, nil, logPath)
	if err != nil {
		t.Fatalf("StartChild: %v", err)
	}
	t.Cleanup(c.Stop)
	if c.PID == os.Getpid() || len(c.Addrs) != 2 {
		t.Fatalf("child pid %d (own %d), addrs %v: want another process with 2 addresses", c.PID, os.Getpid(), c.Addrs)
	}
	st, err := c.Command(ctx, "start")
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	// Burn 100ms of CPU in this process (bounded by 5s of wall time on a
	// busy machine): the child's sample must not see it.
	own0, _ := ProcessCPU()
	own1 := own0
	for deadline := time.Now().Add(5 * time.Second); own1-own0 < 100*time.Millisecond && time.Now().Before(deadline); {
		for x := 0; x < 100000; x++ {
			cpuSink += x * x
		}
		own1, _ = ProcessCPU()
	}
	fin, err := c.Command(ctx, "finish")
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	childCPU := time.Duration(fin.CPUus-st.CPUus) * time.Microsecond
	if own1-own0 < 50*time.Millisecond || childCPU > (own1-own0)/2 {
		t.Fatalf("CPU: this process burnt %s, the idle child reports %s: the child must report only its own CPU", own1-own0, childCPU)
	}
	if _, err := c.Command(ctx, "bogus"); err == nil || !strings.Contains(err.Error(), `got "bogus"`) {
		t.Fatalf("bogus command: got %v, want the child's error naming it", err)
	}
	c.Stop()
	if exited, err := c.Exited(); !exited || err != nil {
		t.Fatalf("after Stop: exited=%t err=%v, want a clean exit on stdin EOF", exited, err)
	}
	if err := syscall.Kill(c.PID, 0); err == nil {
		t.Fatalf("child pid %d still exists after Stop", c.PID)
	}
}

// cpuSink keeps the CPU-burning loop from being optimised away.
var cpuSink int

func TestStartChildReportsAFailingChild(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "child.log")
	_, err = StartChild(context.Background(), exe, []string{"serve", "-nodes", "0", "-cert", "x", "-key", "y"}, nil, logPath)
	if err == nil || !strings.Contains(err.Error(), "waiting for ready") {
		t.Fatalf("StartChild with a bad config: got %v, want a ready error", err)
	}
	b, _ := os.ReadFile(logPath)
	if !strings.Contains(string(b), "nodes: must be 1..16, got 0") {
		t.Fatalf("child log %q does not explain the failure", b)
	}
}
