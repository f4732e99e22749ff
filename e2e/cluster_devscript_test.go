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
	cmd := exec.Command(script)
	cmd.Env = append(os.Environ(), "TICKETKEYS_DEV_CLUSTER_PORT="+strconv.Itoa(base), "VAULT_BIN="+vaultBin)
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

	env := regexp.MustCompile(`export VAULT_ADDR=(\S+) VAULT_CACERT=(\S+) VAULT_TOKEN=(\S+)`).FindStringSubmatch(printed)
	pidsLine := regexp.MustCompile(`\(pids (\d+) (\d+) (\d+)\)`).FindStringSubmatch(printed)
	workDir := regexp.MustCompile(`removes (\S+)\.`).FindStringSubmatch(printed)
	if env == nil || pidsLine == nil || workDir == nil {
		t.Fatalf("dev-cluster.sh did not print the export line, the pids and its directory:\n%s", printed)
	}
	vault := func(args ...string) (string, error) {
		c := exec.Command(vaultBin, args...)
		c.Env = append(os.Environ(), "VAULT_ADDR="+env[1], "VAULT_CACERT="+env[2], "VAULT_TOKEN="+env[3])
		b, err := c.CombinedOutput()
		return string(b), err
	}
	if !strings.HasPrefix(env[1], "https://127.0.0.1:") {
		t.Errorf("the printed VAULT_ADDR %s is not a TLS loopback address", env[1])
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"operator", "raft", "list-peers"}, "voter"},
		{[]string{"read", "-field=healthy", "sys/storage/raft/autopilot/state"}, "true"},
		{[]string{"read", "ticketkeys/keys/web", "format=haproxy"}, "tls_ticket_keys"},
		{[]string{"read", "ticketkeys/keys/web/history"}, "created_at"},
		{[]string{"operator", "raft", "snapshot", "save", filepath.Join(t.TempDir(), "ticketkeys.snap")}, ""},
	} {
		got, err := vault(c.args...)
		if err != nil || !strings.Contains(got, c.want) {
			// The read of the keyring prints key material: never log the output of a successful read.
			if strings.Contains(got, "ticket_key") {
				got = "(output withheld: it holds key material)"
			}
			t.Errorf("vault %s: %v, output %q does not contain %q", strings.Join(c.args, " "), err, got, c.want)
		}
	}
	if got, _ := vault("operator", "raft", "list-peers"); strings.Count(got, "voter") != 3 && strings.Count(got, "voter")+strings.Count(got, "leader") != 3 {
		t.Errorf("list-peers does not show three voters:\n%s", got)
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
	for _, p := range pidsLine[1:] {
		pid, _ := strconv.Atoi(p)
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("vault server pid %d still exists after Ctrl-C (kill -0: %v)", pid, err)
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
		if base > 65500 {
			continue
		}
		free := true
		for _, off := range []int{0, 1, 10, 11, 20, 21} {
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
