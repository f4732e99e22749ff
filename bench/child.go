package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// EnvChild marks a process started by StartChild as a serve child; a test
// binary checks it in TestMain to act as the child.
const EnvChild = "TICKETKEYS_BENCH_CHILD"

// Timeouts of the child protocol.
const (
	childReadyTimeout = 60 * time.Second // process start, certificate, first Vault reads
	childReplyTimeout = 15 * time.Second // one command's answer
	childStopGrace    = 5 * time.Second  // EOF on stdin until SIGKILL
)

// Child is a running serve child process (see ServeNodes).
type Child struct {
	// PID is the child's process id.
	PID int
	// Addrs are the nodes' addresses (127.0.0.1:port).
	Addrs []string

	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan replyOrErr
	done    chan struct{}
	waitErr error
	logFile *os.File
}

type replyOrErr struct {
	line []byte
	err  error
}

// StartChild runs exe with args ("serve" and its flags), the extra
// environment env and stderr appended to logPath, and waits for its Ready
// message. The child gets SIGKILL if the harness dies (Pdeathsig), and is
// otherwise ended by Stop.
func StartChild(ctx context.Context, exe string, args, env []string, logPath string) (*Child, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("serve child: open log %s: %w", logPath, err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(childEnv(), EnvChild+"=1"), env...)
	cmd.Stderr = lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("serve child: stdin pipe: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("serve child: stdout pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("serve child: start %s: %w", exe, err)
	}
	c := &Child{PID: cmd.Process.Pid, cmd: cmd, stdin: stdin, replies: make(chan replyOrErr, 4), done: make(chan struct{}), logFile: lf}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.replies <- replyOrErr{line: append([]byte(nil), sc.Bytes()...)}
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		c.replies <- replyOrErr{err: err}
		close(c.replies)
	}()
	go func() {
		c.waitErr = cmd.Wait()
		lf.Close()
		close(c.done)
	}()

	var ready Ready
	if err := c.read(ctx, childReadyTimeout, &ready); err != nil {
		c.Stop()
		return nil, fmt.Errorf("serve child (pid %d): waiting for ready: %w (log %s)", c.PID, err, logPath)
	}
	if ready.Type != "ready" || len(ready.Addrs) == 0 {
		c.Stop()
		return nil, fmt.Errorf("serve child (pid %d): first message: want type ready with addresses, got type %q with %d addresses", c.PID, ready.Type, len(ready.Addrs))
	}
	c.Addrs = ready.Addrs
	return c, nil
}

// childEnv is the harness's environment without VAULT_* variables, which
// would change what the children's Vault clients do (namespace, CA,
// token...); the Vault address and token go through EnvVaultAddr and
// EnvVaultToken only.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

// read decodes the next message into v, waiting at most timeout.
func (c *Child) read(ctx context.Context, timeout time.Duration, v any) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r, ok := <-c.replies:
		if !ok {
			return io.EOF
		}
		if r.err != nil {
			return fmt.Errorf("child output ended: %w", r.err)
		}
		if err := json.Unmarshal(r.line, v); err != nil {
			return fmt.Errorf("child message %.200q: %w", r.line, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("no answer within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Command sends cmd ("start" or "finish") and returns the child's Sample.
func (c *Child) Command(ctx context.Context, cmd string) (Sample, error) {
	var s Sample
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return s, fmt.Errorf("serve child (pid %d): send %s: %w", c.PID, cmd, err)
	}
	if err := c.read(ctx, childReplyTimeout, &s); err != nil {
		return s, fmt.Errorf("serve child (pid %d): %s: %w", c.PID, cmd, err)
	}
	if s.Error != "" {
		return s, fmt.Errorf("serve child (pid %d): %s: %s", c.PID, cmd, s.Error)
	}
	return s, nil
}

// Stop closes the child's stdin (it shuts down), waits up to a grace
// period, then kills it by PID, and waits for it. Safe to call more than
// once.
func (c *Child) Stop() {
	c.stdin.Close()
	select {
	case <-c.done:
		return
	case <-time.After(childStopGrace):
	}
	_ = syscall.Kill(c.PID, syscall.SIGKILL)
	<-c.done
}

// Exited reports whether the child has exited, and its wait error.
func (c *Child) Exited() (bool, error) {
	select {
	case <-c.done:
		if c.waitErr != nil && !errors.Is(c.waitErr, os.ErrProcessDone) {
			return true, c.waitErr
		}
		return true, nil
	default:
		return false, nil
	}
}
