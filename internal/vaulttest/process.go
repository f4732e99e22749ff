package vaulttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopGrace is how long Stop waits after SIGTERM before it sends SIGKILL.
// Vault shuts down its plugins on SIGTERM, which takes well under a second.
const stopGrace = 15 * time.Second

// logTailLines is how many lines of a process log are printed when a test
// fails.
const logTailLines = 80

// Process is one child process (a Vault server or a Vault Agent) started by
// this package. It runs in its own process group so that Stop can also reap
// the plugin processes Vault starts, and its combined stdout and stderr go to
// LogPath.
type Process struct {
	// Name is a short label used in messages ("vault server", "vault agent").
	Name string
	// PID is the process id of the started command.
	PID int
	// LogPath is the file that receives the process's stdout and stderr.
	LogPath string

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed

	stopOnce sync.Once
}

// startProcess starts bin with args, environment env (appended to a minimal
// base environment) and its output appended to logPath.
func startProcess(name, bin string, args, env []string, logPath string) (*Process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: open log %q: %w", name, logPath, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Env = append(baseEnv(), env...)
	// A process group of its own: Stop signals the group as a last resort,
	// so plugin processes Vault started cannot outlive the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &Process{Name: name, PID: cmd.Process.Pid, LogPath: logPath, cmd: cmd, logFile: lf, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// baseEnv is the environment of every child process: enough to run, and
// nothing from the caller's VAULT_* variables, which would otherwise change
// what the server or agent does (VAULT_TOKEN, VAULT_ADDR, ...).
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "HOME", "TMPDIR", "LANG", "TZ":
			env = append(env, kv)
		}
	}
	return env
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop ends the process: SIGTERM to its PID, then SIGKILL to its process
// group if it has not exited within stopGrace, then SIGKILL to whatever is
// left in its group (plugin processes). It waits for the exit and is safe to
// call more than once.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		if !p.Exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				_ = syscall.Kill(-p.PID, syscall.SIGKILL)
				<-p.done
			}
		}
		// Leftovers in the group (the group id is our child's PID).
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	})
}

// ExitError is the error cmd.Wait returned; nil while the process runs or
// when it exited with status 0.
func (p *Process) ExitError() error {
	if !p.Exited() {
		return nil
	}
	return p.waitErr
}

// LogTail returns the last n lines of the process log.
func (p *Process) LogTail(n int) string {
	return fileTail(p.LogPath, n)
}

// logTailOnFailure registers a cleanup that prints the tail of the log when
// t has failed. Register it before the cleanup that stops the process, so
// that it runs after the stop (cleanups run last-in, first-out) and sees the
// whole log.
func (p *Process) logTailOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- last %d lines of the %s log (pid %d, %s) ---\n%s", logTailLines, p.Name, p.PID, p.LogPath, p.LogTail(logTailLines))
		}
	})
}

// fileTail returns the last n lines of the file at path, or a note saying
// why it cannot.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	return tail(b, n)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	if n <= 0 || len(b) == 0 {
		return ""
	}
	i := len(b)
	for lines := 0; lines < n; lines++ {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			return string(b)
		}
		i = j
	}
	return string(b[i+1:])
}
