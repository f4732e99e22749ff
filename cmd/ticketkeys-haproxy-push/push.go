package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/haproxypush"
)

// The parsing and ring rules live in internal/haproxypush, shared with the schedule-invariants harness.
const ringSize = haproxypush.RingSize

var (
	parseKeysFile = haproxypush.ParseKeysFile
	missingSuffix = haproxypush.MissingSuffix
	keyID         = haproxypush.KeyID
	equal         = haproxypush.Equal
)

// Options configures one Push.
type Options struct {
	// Socket is the path of HAProxy's admin socket (`stats socket PATH level admin`).
	Socket string
	// File is the tls-ticket-keys file: base64 lines, the last three are the window in HAProxy's order.
	File string
	// Ref names the key reference in HAProxy: the file name exactly as in `bind ... tls-ticket-keys`.
	// If empty, File is used.
	Ref string
	// Timeout bounds each admin-socket exchange. If zero, 10 seconds.
	Timeout time.Duration
	// Attempts is how many times a failed push is tried in all (a reload can briefly refuse the socket).
	// If zero, 3. Vault Agent runs the command only when the file changes, so a push that gives up leaves
	// the ring stale until the next window change: retrying here is what keeps the nodes in step.
	Attempts int
	// RetryDelay is the pause between attempts. If zero, 1 second.
	RetryDelay time.Duration
	// PIDFile is HAProxy's pid file (`pidfile` in haproxy.cfg, or `-p`). When the admin socket is missing
	// or refuses connections, the push counts HAProxy as not running (ErrNotRunning) only if this file is
	// absent or names no live process; if empty, a missing socket is an error.
	PIDFile string
}

// ErrNotRunning reports that HAProxy is verifiably not running (the admin socket does not answer and the
// pid file is absent or names no live process): it will load the file when it starts, so there is nothing
// to push.
var ErrNotRunning = errors.New("HAProxy is not running")

// PushWithRetry is Push, tried up to opts.Attempts times. It does not retry ErrNotRunning or an invalid file.
func PushWithRetry(opts Options) (Report, error) {
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	var rep Report
	var err error
	for i := 0; i < opts.Attempts; i++ {
		if i > 0 {
			time.Sleep(opts.RetryDelay)
		}
		rep, err = Push(opts)
		if err == nil || errors.Is(err, ErrNotRunning) || errors.Is(err, errBadFile) {
			return rep, err
		}
	}
	return rep, fmt.Errorf("after %d attempts: %w", opts.Attempts, err)
}

// errBadFile marks a keys file that cannot be pushed; retrying would not help.
var errBadFile = errors.New("invalid keys file")

// Report says what a Push did, by key id only.
type Report struct {
	// Ref is the HAProxy key reference.
	Ref string
	// Sent holds the ids of the keys sent, in order (empty when the ring already matched).
	Sent []string
	// Ring holds the ids of HAProxy's ring after the run: previous, current (encrypting), next.
	Ring []string
}

// String summarises the report without key material.
func (r Report) String() string {
	if len(r.Sent) == 0 {
		return fmt.Sprintf("ref %s already current; ring ids %s", r.Ref, strings.Join(r.Ring, ","))
	}
	return fmt.Sprintf("ref %s: sent %d key(s) ids %s; ring ids %s (encrypting %s)", r.Ref, len(r.Sent),
		strings.Join(r.Sent, ","), strings.Join(r.Ring, ","), r.Ring[1])
}

// Push makes HAProxy's ring for opts.Ref equal the last three keys of opts.File, sending only the missing
// keys. It returns an error naming the step, and never including key material, when the file is invalid, the
// socket cannot be used, HAProxy rejects a key, or the ring does not match the file afterwards.
func Push(opts Options) (Report, error) {
	if opts.Ref == "" {
		opts.Ref = opts.File
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	rep := Report{Ref: opts.Ref}
	if strings.ContainsAny(opts.Ref, " \t\r\n;") {
		return rep, fmt.Errorf("ref %q: must not contain spaces, semicolons or line breaks (the admin socket splits commands on them)", opts.Ref)
	}
	data, err := os.ReadFile(opts.File)
	if err != nil {
		return rep, fmt.Errorf("read keys file: %w (%w)", err, errBadFile)
	}
	want, err := parseKeysFile(data)
	if err != nil {
		return rep, fmt.Errorf("keys file %s: %w (%w)", opts.File, err, errBadFile)
	}
	have, err := showRing(opts)
	if err != nil {
		return rep, err
	}
	missing := missingSuffix(have, want)
	for _, k := range missing {
		answer, err := exchange(opts, "set ssl tls-key "+opts.Ref+" "+k)
		if err != nil {
			return rep, fmt.Errorf("set ssl tls-key %s (key id %s): %w", opts.Ref, keyID(k), err)
		}
		if !strings.Contains(answer, "TLS ticket key updated") {
			return rep, fmt.Errorf("set ssl tls-key %s (key id %s): HAProxy answered %q", opts.Ref, keyID(k), firstLine(answer))
		}
		rep.Sent = append(rep.Sent, keyID(k))
	}
	after, err := showRing(opts)
	if err != nil {
		return rep, err
	}
	for _, k := range after {
		rep.Ring = append(rep.Ring, keyID(k))
	}
	if !equal(after, want) {
		wantIDs := make([]string, len(want))
		for i, k := range want {
			wantIDs[i] = keyID(k)
		}
		return rep, fmt.Errorf("ring %s after sending %d key(s) has ids %s, want %s (another writer changed it?)",
			opts.Ref, len(rep.Sent), strings.Join(rep.Ring, ","), strings.Join(wantIDs, ","))
	}
	return rep, nil
}

// ringLine matches one key of `show tls-keys <ref>`: "<ref id>.<slot> <base64>".
var ringLine = regexp.MustCompile(`^\d+\.\d+ (\S+)$`)

// showRing reads HAProxy's ring for the reference, oldest first.
func showRing(opts Options) ([]string, error) {
	answer, err := exchange(opts, "show tls-keys "+opts.Ref)
	if err != nil {
		return nil, fmt.Errorf("show tls-keys %s: %w", opts.Ref, err)
	}
	var ring []string
	for _, l := range strings.Split(answer, "\n") {
		if m := ringLine.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			ring = append(ring, m[1])
		}
	}
	if len(ring) != ringSize {
		// HAProxy's error answers carry no key material; a ring answer would have matched.
		return nil, fmt.Errorf("show tls-keys %s: got %d key line(s), want %d; HAProxy answered %q (is the ref spelled as in the bind line, and the socket level admin?)",
			opts.Ref, len(ring), ringSize, firstLine(answer))
	}
	return ring, nil
}

// checkStopped returns an error wrapping ErrNotRunning when HAProxy is verifiably not running: its pid file is
// absent or names no live process. Otherwise it returns nil (the socket error stands) or, when the pid file
// cannot settle it, an error saying why. A missing socket alone proves nothing: a mistyped -socket looks the
// same, and taking it for "stopped" would report success while keys are never pushed.
func checkStopped(pidFile string) error {
	if pidFile == "" {
		return errors.New("cannot tell a stopped HAProxy from a wrong socket path: check -socket against " +
			"haproxy.cfg's `stats socket`, and pass -pidfile (haproxy.cfg's `pidfile`) so that a stopped HAProxy " +
			"is not an error")
	}
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w (pid file %s absent)", ErrNotRunning, pidFile)
	}
	if err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	// HAProxy's master-worker mode writes the master's pid first; every line must name an exited process.
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return fmt.Errorf("pid file %s: %q is not a process id", pidFile, firstLine(f))
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("pid file %s: pid %d is running, yet its admin socket does not answer: check -socket "+
				"against haproxy.cfg's `stats socket`", pidFile, pid)
		}
	}
	return fmt.Errorf("%w (pid file %s names no running process)", ErrNotRunning, pidFile)
}

// exchange sends one command on a fresh connection (HAProxy's non-interactive mode answers and closes).
func exchange(opts Options, command string) (string, error) {
	c, err := net.DialTimeout("unix", opts.Socket, opts.Timeout)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			if stopped := checkStopped(opts.PIDFile); stopped != nil {
				return "", fmt.Errorf("dial admin socket %s: %w: %w", opts.Socket, err, stopped)
			}
		}
		return "", fmt.Errorf("dial admin socket %s: %w", opts.Socket, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(opts.Timeout)); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte(command + "\n")); err != nil {
		return "", fmt.Errorf("write to admin socket %s: %w", opts.Socket, err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(c); err != nil {
		return "", fmt.Errorf("read from admin socket %s: %w", opts.Socket, err)
	}
	return buf.String(), nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
