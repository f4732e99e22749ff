// Package servertest runs real nginx and HAProxy processes (Debian's packages, and OpenResty lines built
// from the source kit: NginxBuild) for tests.
//
// Every instance gets a private directory under t.TempDir(): its configuration file, pid file, error log,
// temp paths and sockets live there, so instances of several tests and engineers never share a file.
// Processes run in the foreground as children of the test and are stopped by PID at t.Cleanup.
//
// A configuration string may contain the placeholder {{DIR}}, replaced by the private directory before
// the file is written (e.g. `stats socket {{DIR}}/admin.sock level admin`, `ssl_certificate {{DIR}}/cert.pem`).
// Relative paths in an nginx configuration resolve against the same directory (it is both the prefix and
// the configuration directory), and `modules/` inside it links to Debian's module directory, so
// `load_module modules/ngx_http_lua_module.so;` works unchanged.
//
// The package does not pick ports: use FreePort and write the port into the configuration.
package servertest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Kind names the server software a Proc runs.
type Kind string

const (
	// KindNginx is Debian's nginx (master with worker processes).
	KindNginx Kind = "nginx"
	// KindHAProxy is Debian's HAProxy in master-worker mode (-W).
	KindHAProxy Kind = "haproxy"
)

// DirPlaceholder is replaced in a configuration by the instance's private directory.
const DirPlaceholder = "{{DIR}}"

// startTimeout bounds how long Start and Reload wait for the server to come up.
const startTimeout = 15 * time.Second

// Proc is one running nginx or HAProxy master and its workers.
type Proc struct {
	// Kind is the server software.
	Kind Kind
	// Dir is the private directory (prefix, configuration, pid file, logs).
	Dir string
	// ConfPath is the configuration file written from the conf string.
	ConfPath string
	// PIDFile is the pid file the master writes.
	PIDFile string
	// ErrorLog is the file that receives the server's error log (nginx) or stdout/stderr (both kinds).
	ErrorLog string
	// MasterPID is the PID of the master process; it never changes across Reload.
	MasterPID int

	bin    string
	cmd    *exec.Cmd
	done   chan struct{}
	waitMu sync.Mutex
	err    error
	stop   sync.Once
}

// NginxBinary returns the nginx binary path, or fails the test if nginx is not installed.
func NginxBinary(t testing.TB) string {
	t.Helper()
	return lookBinary(t, "nginx", "/usr/sbin/nginx")
}

// HAProxyBinary returns the haproxy binary path, or fails the test if HAProxy is not installed.
func HAProxyBinary(t testing.TB) string {
	t.Helper()
	return lookBinary(t, "haproxy", "/usr/sbin/haproxy")
}

func lookBinary(t testing.TB, name, fallback string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	t.Fatalf("servertest: %s not found in PATH or at %s: install the Debian package %q (scripts/debian-packages.txt)", name, fallback, name)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for a server the test starts
// next. It picks at random below the kernel's ephemeral range (net.ipv4.ip_local_port_range), where
// the client sockets of concurrent tests never land: a port from the ephemeral range (":0") can be taken
// by an outgoing connection between this check and the server's bind, which side-by-side tests with
// load running make likely. A port is never handed out twice by one test binary.
func FreePort(t testing.TB) int {
	t.Helper()
	if p, ok := pickBelowEphemeral(); ok {
		return p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("servertest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// pickBelowEphemeral tries random ports in the 16000 ports below the ephemeral range (at least 1024).
func pickBelowEphemeral() (int, bool) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				lo = v
			}
		}
	}
	base := max(lo-16000, 1024)
	if lo-base < 1000 {
		return 0, false
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		p := base + rand.IntN(lo-base)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[p] = true
		return p, true
	}
	return 0, false
}

// userDirective finds a main-context `user` directive in an nginx configuration.
var userDirective = regexp.MustCompile(`(?m)^\s*user\s`)

// StartNginx writes conf (with {{DIR}} replaced) to a private directory and runs
// `nginx -p DIR -c DIR/nginx.conf -e DIR/error.log -g "daemon off; pid DIR/nginx.pid; ..."` until the
// master has written its pid file and started at least one worker (by then every listen socket is bound).
//
// conf must not set `daemon`, `pid` or `master_process off` (they are given on the command line). If the
// test runs as root and conf has no `user` directive, `user root;` is added too: t.TempDir() is mode 0700, so
// workers running as the default user could not read files in the private directory. The http temp paths
// default to Debian's shared /var/lib/nginx; set them under {{DIR}} in conf when that matters.
// The process is stopped at t.Cleanup.
func StartNginx(t testing.TB, conf string) *Proc {
	t.Helper()
	return StartNginxWith(t, &NginxBuild{Name: DebianName, Bin: NginxBinary(t), ModulesDir: "/usr/lib/nginx/modules"}, conf)
}

// StartNginxWith is StartNginx with a given nginx build (DebianNginx, OpenResty, Arm64Nginx): its binary
// (run through the build's Emulator, if any), and its module directory linked as modules/ when it has one.
func StartNginxWith(t testing.TB, b *NginxBuild, conf string) *Proc {
	t.Helper()
	bin := b.Bin
	dir := privateDir(t, "nginx")
	if b.ModulesDir != "" {
		if err := os.Symlink(b.ModulesDir, filepath.Join(dir, "modules")); err != nil {
			t.Fatalf("servertest: nginx modules link in %s: %v", dir, err)
		}
	}
	p := &Proc{
		Kind:     KindNginx,
		Dir:      dir,
		ConfPath: filepath.Join(dir, "nginx.conf"),
		PIDFile:  filepath.Join(dir, "nginx.pid"),
		ErrorLog: filepath.Join(dir, "error.log"),
		bin:      bin,
	}
	conf = strings.ReplaceAll(conf, DirPlaceholder, dir)
	if err := os.WriteFile(p.ConfPath, []byte(conf), 0o600); err != nil {
		t.Fatalf("servertest: write %s: %v", p.ConfPath, err)
	}
	globals := fmt.Sprintf("daemon off; pid %s;", p.PIDFile)
	if os.Geteuid() == 0 && !userDirective.MatchString(conf) {
		globals += " user root;"
	}
	if out, err := b.Command("-t", "-q", "-p", dir+"/", "-c", p.ConfPath, "-e", p.ErrorLog, "-g", globals).CombinedOutput(); err != nil {
		t.Fatalf("servertest: nginx -t rejected the configuration %s: %v\n%s", p.ConfPath, err, out)
	}
	p.start(t, b.Command("-p", dir+"/", "-c", p.ConfPath, "-e", p.ErrorLog, "-g", globals))
	return p
}

// StartHAProxy writes conf (with {{DIR}} replaced) to a private directory and runs
// `haproxy -W -db -f DIR/haproxy.cfg -p DIR/haproxy.pid` (master-worker mode, foreground) until the master
// has written its pid file, started a worker and handles SIGUSR2. Reload sends SIGUSR2 to the master (a seamless reload);
// the master PID never changes. conf must not set `daemon` or `master-worker no-exit-on-failure`-style
// options that detach. Its stdout/stderr go to ErrorLog. The process is stopped at t.Cleanup.
func StartHAProxy(t testing.TB, conf string) *Proc {
	t.Helper()
	bin := HAProxyBinary(t)
	dir := privateDir(t, "haproxy")
	p := &Proc{
		Kind:     KindHAProxy,
		Dir:      dir,
		ConfPath: filepath.Join(dir, "haproxy.cfg"),
		PIDFile:  filepath.Join(dir, "haproxy.pid"),
		ErrorLog: filepath.Join(dir, "haproxy.log"),
		bin:      bin,
	}
	conf = strings.ReplaceAll(conf, DirPlaceholder, dir)
	if err := os.WriteFile(p.ConfPath, []byte(conf), 0o600); err != nil {
		t.Fatalf("servertest: write %s: %v", p.ConfPath, err)
	}
	if out, err := exec.Command(bin, "-c", "-q", "-f", p.ConfPath).CombinedOutput(); err != nil {
		t.Fatalf("servertest: haproxy -c rejected the configuration %s: %v\n%s", p.ConfPath, err, out)
	}
	p.start(t, exec.Command(bin, "-W", "-db", "-f", p.ConfPath, "-p", p.PIDFile))
	return p
}

// privateDir makes the instance directory. It is world-traversable so that workers running as an
// unprivileged user can reach files placed there; the parent t.TempDir() still limits access.
func privateDir(t testing.TB, kind string) string {
	t.Helper()
	dir, err := os.MkdirTemp(t.TempDir(), kind)
	if err != nil {
		t.Fatalf("servertest: %s directory: %v", kind, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("servertest: chmod %s: %v", dir, err)
	}
	return dir
}

func (p *Proc) start(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	logf, err := os.OpenFile(p.ErrorLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("servertest: open %s: %v", p.ErrorLog, err)
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = p.Dir
	// Own process group: a signal to the test's group (Ctrl-C) does not race our ordered Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("servertest: start %s: %v", p.Kind, err)
	}
	logf.Close()
	p.cmd = cmd
	p.MasterPID = cmd.Process.Pid
	p.done = make(chan struct{})
	go func() {
		err := cmd.Wait()
		p.waitMu.Lock()
		p.err = err
		p.waitMu.Unlock()
		close(p.done)
	}()
	t.Cleanup(p.Stop)

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.done:
			t.Fatalf("servertest: %s master %d exited during start-up (%v); log %s:\n%s", p.Kind, p.MasterPID, p.exitErr(), p.ErrorLog, p.Log())
		default:
		}
		if pid, err := readPID(p.PIDFile); err == nil && pid == p.MasterPID && len(p.WorkerPIDs()) > 0 && p.handlesReload() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("servertest: %s master %d not ready (pid file, a worker and a handler for %v) within %v; log %s:\n%s", p.Kind, p.MasterPID, p.reloadSignal(), startTimeout, p.ErrorLog, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *Proc) exitErr() error {
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	return p.err
}

// Exited reports whether the master has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// readPID reads a pid file holding one decimal PID (HAProxy may write one PID per line; the first is used).
func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, fmt.Errorf("pid file %s is empty", path)
	}
	return strconv.Atoi(fields[0])
}

// WorkerPIDs returns the PIDs of the master's live child processes (workers, including old workers
// that are still draining after a reload), sorted. It reads /proc, so it needs Linux.
func (p *Proc) WorkerPIDs() []int {
	return childrenOf(p.MasterPID)
}

func childrenOf(parent int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Format: pid (comm) state ppid ...; comm may contain spaces, so cut after the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == parent {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// Log returns the instance's log file (nginx error log, or HAProxy's stdout/stderr).
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.ErrorLog)
	return string(b)
}

// Reload asks the running server to load its configuration file again and waits until a worker that did
// not exist before is running: nginx gets SIGHUP, HAProxy's master gets SIGUSR2. Old workers keep serving
// their open connections until those end (or a configured shutdown timeout). It fails the test if the
// server rejected the new configuration or no new worker appeared within 15 s.
func (p *Proc) Reload(t testing.TB) {
	t.Helper()
	if err := p.TryReload(); err != nil {
		t.Fatal(err)
	}
}

// TryReload is Reload returning an error instead of failing the test.
func (p *Proc) TryReload() error {
	if p.Exited() {
		return fmt.Errorf("servertest: %s master %d has exited (%v); cannot reload", p.Kind, p.MasterPID, p.exitErr())
	}
	before := p.WorkerPIDs()
	logBefore := len(p.Log())
	sig := p.reloadSignal()
	if err := p.waitHandlesReload(); err != nil {
		return err
	}
	if err := syscall.Kill(p.MasterPID, sig); err != nil {
		return fmt.Errorf("servertest: signal %v to %s master %d: %w", sig, p.Kind, p.MasterPID, err)
	}
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		for _, pid := range p.WorkerPIDs() {
			if !slices.Contains(before, pid) {
				return nil
			}
		}
		if p.Exited() {
			return fmt.Errorf("servertest: %s master %d exited during reload (%v); log:\n%s", p.Kind, p.MasterPID, p.exitErr(), p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tail := p.Log()
	if logBefore <= len(tail) {
		tail = tail[logBefore:]
	}
	return fmt.Errorf("servertest: %s master %d started no new worker within %v after reload (configuration rejected?); new log lines:\n%s", p.Kind, p.MasterPID, startTimeout, tail)
}

// Signal sends sig to the master process by PID. A reload signal waits first until the master handles it
// (see handlesReload), so that it is never dropped.
func (p *Proc) Signal(sig syscall.Signal) error {
	if sig == p.reloadSignal() {
		if err := p.waitHandlesReload(); err != nil {
			return err
		}
	}
	return syscall.Kill(p.MasterPID, sig)
}

// reloadSignal is the signal that makes the master load its configuration again: SIGHUP for nginx,
// SIGUSR2 for HAProxy's master.
func (p *Proc) reloadSignal() syscall.Signal {
	if p.Kind == KindHAProxy {
		return syscall.SIGUSR2
	}
	return syscall.SIGHUP
}

// handlesReload reports whether the master process has a handler installed for its reload signal, as
// the kernel shows it (SigCgt in /proc/PID/status). HAProxy's master ignores SIGUSR2 between writing its
// pid file, forking its worker and entering its loop, and again after every re-exec: a signal sent then
// is discarded, and the reload never happens.
func (p *Proc) handlesReload() bool {
	caught, err := caughtSignals(p.MasterPID)
	return err == nil && caught&(1<<(uint(p.reloadSignal())-1)) != 0
}

// waitHandlesReload waits until handlesReload holds, the master exits, or 15 s pass.
func (p *Proc) waitHandlesReload() error {
	deadline := time.Now().Add(startTimeout)
	for !p.handlesReload() {
		if p.Exited() {
			return fmt.Errorf("servertest: %s master %d has exited (%v); log:\n%s", p.Kind, p.MasterPID, p.exitErr(), p.Log())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("servertest: %s master %d installed no handler for %v within %v; log:\n%s", p.Kind, p.MasterPID, p.reloadSignal(), startTimeout, p.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// caughtSignals reads the mask of signals pid has handlers for (bit n-1 for signal n) from /proc.
func caughtSignals(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			return strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no SigCgt line", pid)
}

// WaitWorkers waits until the master has n live worker processes (nginx forks them one after the other,
// so StartNginx may return with fewer), or fails the test after 15 s.
func (p *Proc) WaitWorkers(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for len(p.WorkerPIDs()) != n {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("servertest: %s master %d has workers %v, want %d; log:\n%s", p.Kind, p.MasterPID, p.WorkerPIDs(), n, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitListening waits until every addr (host:port) accepts a TCP connection, or fails the test after 15 s.
func (p *Proc) WaitListening(t testing.TB, addrs ...string) {
	t.Helper()
	if err := WaitListening(startTimeout, addrs...); err != nil {
		t.Fatalf("servertest: %s master %d: %v; log:\n%s", p.Kind, p.MasterPID, err, p.Log())
	}
}

// WaitListening waits until every addr accepts a TCP connection or timeout passes.
func WaitListening(timeout time.Duration, addrs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not accepting connections after %v: %w", a, timeout, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// Stop terminates the master by PID (SIGTERM, then SIGKILL after 5 s), waits for it, and kills any worker
// that outlived it. It is safe to call more than once and is registered with t.Cleanup by Start*.
func (p *Proc) Stop() {
	p.stop.Do(func() {
		workers := p.WorkerPIDs()
		if !p.Exited() {
			_ = syscall.Kill(p.MasterPID, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(p.MasterPID, syscall.SIGKILL)
				<-p.done
			}
		}
		// Workers normally exit with the master; kill by PID any that did not (re-parented to init).
		for _, pid := range workers {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ExecSocket sends one command line to a UNIX stream socket (HAProxy's admin socket) and returns the
// whole answer. The command is not logged: `set ssl tls-key` carries key material.
func ExecSocket(path, command string) (string, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("servertest: dial admin socket %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(strings.TrimRight(command, "\n") + "\n")); err != nil {
		return "", fmt.Errorf("servertest: write to admin socket %s: %w", path, err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(c); err != nil {
		return buf.String(), fmt.Errorf("servertest: read from admin socket %s: %w", path, err)
	}
	return buf.String(), nil
}
