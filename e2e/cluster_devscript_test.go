//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// TestDevClusterScript runs scripts/dev-cluster.sh (make dev-cluster) as a user would: it waits for the
// script to report the cluster ready, runs the commands the script prints (and docs/production.md shows)
// against it, then sends SIGINT (Ctrl-C) and proves every Vault server it started is gone and its
// directory removed.
func TestDevClusterScript(t *testing.T) {
	vaultBin := vaulttest.VaultBinary(t)
	script, err := filepath.Abs("../scripts/dev-cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	base := devClusterPorts(t)
	// Every Vault command the script and the bootstrap scripts run goes through a wrapper that records its
	// arguments: what `ps` would show any user of the machine.
	argvLog := filepath.Join(t.TempDir(), "vault-argv.log")
	wrapper := filepath.Join(t.TempDir(), "vault")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nprintf '%s\\n' \"$*\" >>"+argvLog+"\nexec "+vaultBin+" \"$@\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script)
	cmd.Env = append(os.Environ(), "TICKETKEYS_DEV_CLUSTER_PORT="+strconv.Itoa(base), "VAULT_BIN="+wrapper)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var mu sync.Mutex
	var out strings.Builder
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if sc.Text() == "dev-cluster: ready" {
				close(ready)
			}
		}
		done <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGINT)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("dev-cluster.sh exited before it was ready: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	case <-time.After(5 * time.Minute):
		t.Fatalf("dev-cluster.sh not ready within 5 minutes\nstdout:\n%s\nstderr:\n%s", out.String(), stderr.String())
	}
	mu.Lock()
	printed := out.String()
	mu.Unlock()

	pidsLine := regexp.MustCompile(`\(pids (\d+) (\d+) (\d+)\)`).FindStringSubmatch(printed)
	workDir := regexp.MustCompile(`removes (\S+)\.`).FindStringSubmatch(printed)
	_, usage, ok1 := strings.Cut(printed, "In another shell:\n")
	usage, _, ok2 := strings.Cut(usage, "\nNode logs:")
	if pidsLine == nil || workDir == nil || !ok1 || !ok2 {
		t.Fatalf("dev-cluster.sh did not print its pids, its directory and the usage block:\n%s", printed)
	}
	// Clients must not stick to one node (docs/production.md): the printed VAULT_ADDR is the load balancer's.
	lbLine := regexp.MustCompile(`Load balancer \(HAProxy, pid (\d+), [^)]*\): (https://127\.0\.0\.1:(\d+))`).FindStringSubmatch(printed)
	if lbLine == nil {
		t.Fatalf("dev-cluster.sh did not print its load balancer:\n%s", printed)
	}
	if want := strconv.Itoa(base - 10); lbLine[3] != want {
		t.Errorf("the load balancer listens on port %s, want %s (TICKETKEYS_DEV_CLUSTER_PORT-10)", lbLine[3], want)
	}
	if !strings.Contains(usage, "export VAULT_ADDR="+lbLine[2]+" ") {
		t.Errorf("the usage block does not export the load balancer's address %s as VAULT_ADDR:\n%s", lbLine[2], usage)
	}

	// The root token and the unseal key are in 0600 files, never printed and never on a command line.
	secrets := map[string]string{}
	for _, name := range []string{"root-token", "unseal-key"} {
		path := filepath.Join(workDir[1], name)
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want a file of mode 0600", path, err, fi)
		}
		b, err := os.ReadFile(path)
		if err != nil || len(strings.TrimSpace(string(b))) < 16 {
			t.Fatalf("%s: %v, %d bytes; want the secret", path, err, len(b))
		}
		secrets[name] = strings.TrimSpace(string(b))
	}
	argv, err := os.ReadFile(argvLog)
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range secrets {
		if strings.Contains(printed, secret) || strings.Contains(stderr.String(), secret) {
			t.Errorf("dev-cluster.sh printed the %s; want only the path of its file", name)
		}
		if strings.Contains(string(argv), secret) {
			t.Errorf("dev-cluster.sh passed the %s on a Vault command line (visible in ps); want it read from its file", name)
		}
	}

	// Run the printed commands as they are, in one shell, as a user would paste them.
	shell := filepath.Join(t.TempDir(), "usage.sh")
	if err := os.WriteFile(shell, []byte("set -euo pipefail\n"+usage+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	run := exec.Command("bash", "-O", "expand_aliases", shell)
	run.Env = os.Environ()
	got, err := run.CombinedOutput()
	// The keyring read prints key material: the output is checked, never logged.
	if err != nil {
		t.Fatalf("the printed commands failed: %v (output withheld: it holds key material)", err)
	}
	for _, want := range []string{"failure_tolerance", "tls_ticket_keys", "created_at", "Success! Stepped down"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("the printed commands' output has no %q", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^node\d\s+127\.0\.0\.1:\d+\s+(leader|follower)\s+true$`).FindAllString(string(got), -1)); n != 3 {
		t.Errorf("list-peers shows %d voters, want 3", n)
	}
	if m := regexp.MustCompile(`(?m)^healthy\s+(\S+)`).FindStringSubmatch(string(got)); m == nil || m[1] != "true" {
		t.Errorf("autopilot state: healthy = %v, want true", m)
	}
	if fi, err := os.Stat(filepath.Join(workDir[1], "ticketkeys.snap")); err != nil || fi.Size() == 0 {
		t.Errorf("the printed snapshot command wrote no snapshot: %v", err)
	}

	// Ctrl-C: the script stops every server by PID and removes its directory.
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	stopped = true
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("dev-cluster.sh after SIGINT: %v, want exit status 130", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("dev-cluster.sh did not stop within 60s of SIGINT")
	}
	for _, p := range append(pidsLine[1:], lbLine[1]) {
		pid, _ := strconv.Atoi(p)
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d (a vault server or the load balancer) still exists after Ctrl-C (kill -0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(workDir[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev-cluster.sh left %s behind (%v)", workDir[1], err)
	}
}

// devClusterPorts finds a base port P such that P, P+1, P+10, P+11, P+20 and P+21 are free on 127.0.0.1.
func devClusterPorts(t *testing.T) int {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if base > 65500 || base < 1034 {
			continue
		}
		free := true
		for _, off := range []int{-10, 0, 1, 10, 11, 20, 21} { // -10: the load balancer
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no free block of ports for dev-cluster.sh")
	return 0
}
