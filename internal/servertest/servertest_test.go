package servertest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", url, err)
	}
	return string(b)
}

// TestNginxStartReloadStop proves StartNginx serves the given configuration from a private directory,
// that Reload starts new workers under the same master and applies a changed file, and that Stop ends
// every process.
func TestNginxStartReloadStop(t *testing.T) {
	port := FreePort(t)
	conf := fmt.Sprintf(`
worker_processes 2;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path {{DIR}}/body;
  server {
    listen 127.0.0.1:%d;
    location / { return 200 "one\n"; }
  }
}
`, port)
	p := StartNginx(t, conf)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p.WaitListening(t, addr)
	if got := get(t, "http://"+addr+"/"); got != "one\n" {
		t.Fatalf("body before reload = %q, want %q", got, "one\n")
	}
	master := p.MasterPID
	workers := p.WorkerPIDs()
	if len(workers) != 2 {
		t.Fatalf("workers = %v, want 2 of them", workers)
	}
	if err := writeConf(p, strings.Replace(conf, `"one\n"`, `"two\n"`, 1)); err != nil {
		t.Fatal(err)
	}
	p.Reload(t)
	if p.MasterPID != master {
		t.Fatalf("master PID changed across reload: %d -> %d", master, p.MasterPID)
	}
	// Old workers finish idle connections at once; wait for them to go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := p.WorkerPIDs()
		if len(now) == 2 && !slices.ContainsFunc(now, func(pid int) bool { return slices.Contains(workers, pid) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reload workers = %v, old were %v", now, workers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := get(t, "http://"+addr+"/"); got != "two\n" {
		t.Fatalf("body after reload = %q, want %q", got, "two\n")
	}
	all := append([]int{master}, p.WorkerPIDs()...)
	p.Stop()
	for _, pid := range all {
		if alive(pid) {
			t.Fatalf("pid %d alive after Stop", pid)
		}
	}
}

// TestHAProxyStartReloadSocket proves StartHAProxy runs master-worker mode with an admin socket under
// {{DIR}}, that ExecSocket talks to it, and that Reload keeps the master and replaces the worker.
func TestHAProxyStartReloadSocket(t *testing.T) {
	port := FreePort(t)
	conf := fmt.Sprintf(`
global
  stats socket {{DIR}}/admin.sock level admin
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:%d
  http-request return status 200 content-type text/plain string "ok"
`, port)
	p := StartHAProxy(t, conf)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p.WaitListening(t, addr)
	if got := get(t, "http://"+addr+"/"); got != "ok" {
		t.Fatalf("body = %q, want ok", got)
	}
	out, err := ExecSocket(p.Dir+"/admin.sock", "show info")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Name: HAProxy") {
		t.Fatalf("show info answer lacks Name: HAProxy:\n%s", out)
	}
	master, workers := p.MasterPID, p.WorkerPIDs()
	p.Reload(t)
	if p.MasterPID != master {
		t.Fatalf("master changed: %d -> %d", master, p.MasterPID)
	}
	if now := p.WorkerPIDs(); slices.Equal(now, workers) {
		t.Fatalf("workers unchanged after reload: %v", now)
	}
	if got := get(t, "http://"+addr+"/"); got != "ok" {
		t.Fatalf("body after reload = %q, want ok", got)
	}
}

// TestHAProxyBackToBackReloads proves a reload is never lost: HAProxy's master ignores SIGUSR2 while it
// starts and again after each re-exec, so Start and Reload must not return, nor Reload signal, before the
// master handles it. Each of these reloads comes as soon as the one before it has its new worker.
func TestHAProxyBackToBackReloads(t *testing.T) {
	port := FreePort(t)
	conf := fmt.Sprintf(`
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:%d
  http-request return status 200 content-type text/plain string "ok"
`, port)
	for range 3 {
		p := StartHAProxy(t, conf)
		for i := range 5 {
			if err := p.TryReload(); err != nil {
				t.Fatalf("reload %d: %v", i+1, err)
			}
		}
		p.Stop()
	}
}

func writeConf(p *Proc, conf string) error {
	return writeFile(p.ConfPath, strings.ReplaceAll(conf, DirPlaceholder, p.Dir))
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// TestOpenRestyBuildScriptErrors proves how the harness reads scripts/openresty-build.sh: a missing
// source kit is errNoKit (the tests skip, or fail in CI) with the script's reason naming where it
// looked; an unknown line is a plain failure.
func TestOpenRestyBuildScriptErrors(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("OPENRESTY_SRC", empty)
	_, err := runBuildScript(RepoRoot(t), OpenRestyLines[0])
	if !errors.Is(err, errNoKit) || !strings.Contains(err.Error(), empty) {
		t.Fatalf("no kit: err %v, want errNoKit naming %s", err, empty)
	}
	_, err = runBuildScript(RepoRoot(t), "1.0.0")
	if err == nil || errors.Is(err, errNoKit) || !strings.Contains(err.Error(), "unknown line '1.0.0'") {
		t.Fatalf("unknown line: err %v, want a failure naming the line", err)
	}
}

// TestFreePortBelowEphemeralRange proves FreePort hands out distinct ports below the kernel's
// ephemeral range, where outgoing connections of concurrent tests cannot take them before the server
// binds.
func TestFreePortBelowEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skipf("no ephemeral port range to compare with: %v", err)
	}
	var lo int
	if _, err := fmt.Sscan(string(b), &lo); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if p >= lo || p < 1024 || seen[p] {
			t.Fatalf("FreePort gave %d (seen before: %t), want a new port in [1024, %d)", p, seen[p], lo)
		}
		seen[p] = true
	}
}
