package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
)

// Key set-ups of the nginx rows.
const (
	// NginxOwn: no ssl_session_ticket_key; every nginx makes its own random
	// keys at start (one per node, shared by its workers) and never rotates.
	NginxOwn = "own"
	// NginxLua: ticketkeys' Lua module (nginx/lib/resty/ticketkeys.lua)
	// installs a shared window file into the running workers; a rotation
	// writes a new window file (atomically, as Vault Agent does).
	NginxLua = "lua"
	// NginxReload: the same shared window as ssl_session_ticket_key files
	// (current key first); a rotation rewrites them and reloads every node
	// (SIGHUP to each master, as `nginx -s reload` does).
	NginxReload = "reload"
)

// NginxSetups are the set-ups in report order.
var NginxSetups = []string{NginxOwn, NginxLua, NginxReload}

// NginxSetupLabel names a set-up as the report does.
func NginxSetupLabel(setup string) string {
	switch setup {
	case NginxOwn:
		return "own keys per node (nginx default)"
	case NginxLua:
		return "ticketkeys via the Lua module"
	case NginxReload:
		return "shared key files + reload per rotation"
	}
	return setup
}

// nginxWindowPrevious is how many previous keys a window keeps: with the
// current and the next key a window of 4, the capacity of the Lua set-up's
// placeholders and the number of key files of the reload set-up.
const nginxWindowPrevious = 2

// NginxClusterSpec describes the nodes of one nginx set-up.
type NginxClusterSpec struct {
	// Builds are the nginx builds, one per node.
	Builds []*servertest.NginxBuild
	Setup  string
	Cert   CertSet
	// Workers is worker_processes per node.
	Workers int
	// ShutdownTimeout is worker_shutdown_timeout; zero leaves it unset.
	ShutdownTimeout time.Duration
	// LibDir is nginx/lib (the Lua module's lua_package_path root).
	LibDir string
	// StreamTicks bounds the /stream response: one line every 500 ms, this
	// many lines.
	StreamTicks int
	// LogDir, when set, receives each node's error log at Stop as
	// nginx-<LogName>-node<N>.log (the module logs key ids, never keys).
	LogDir, LogName string
}

// NginxCluster is the nodes of one set-up and the shared key window.
type NginxCluster struct {
	Spec  NginxClusterSpec
	Nodes []*servertest.Proc
	// Addrs are the nodes' TLS addresses (127.0.0.1:port).
	Addrs []string

	dir  string
	mu   sync.Mutex
	keys [][]byte // oldest first; the window is the last nginxWindowPrevious+2
	// rotations are the instants of the rotations (after every node was
	// told: window written, or every master signalled).
	rotations []time.Time
	reloads   int
}

// StartNginxCluster writes the first window and starts one nginx per build.
// tb owns the processes (stopped by PID at tb's cleanup, or by Stop).
func StartNginxCluster(tb *TB, spec NginxClusterSpec) (*NginxCluster, error) {
	c := &NginxCluster{Spec: spec}
	err := tb.Do(func() {
		c.dir = tb.TempDir()
		for range nginxWindowPrevious + 2 {
			c.keys = append(c.keys, newTicketKey(tb))
		}
		if err := c.writeKeys(); err != nil {
			tb.Fatalf("%v", err)
		}
		for i, b := range spec.Builds {
			port := servertest.FreePort(tb)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			p := servertest.StartNginxWith(tb, b, c.config(b, port))
			c.Nodes = append(c.Nodes, p)
			c.Addrs = append(c.Addrs, addr)
			if err := servertest.WaitListening(15*time.Second, addr); err != nil {
				tb.Fatalf("nginx node %d (%s): %v", i, b.Name, err)
			}
		}
	})
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func newTicketKey(tb *TB) []byte {
	k := make([]byte, 80)
	if _, err := rand.Read(k); err != nil {
		tb.Fatalf("random ticket key: %v", err)
	}
	return k
}

// window returns the keys of the window in the engine's order: current,
// next, then the previous keys newest first.
func (c *NginxCluster) window() [][]byte {
	n := len(c.keys)
	out := [][]byte{c.keys[n-2], c.keys[n-1]}
	for i := n - 3; i >= n-2-nginxWindowPrevious; i-- {
		out = append(out, c.keys[i])
	}
	return out
}

func (c *NginxCluster) windowPath() string { return filepath.Join(c.dir, "web.window") }
func (c *NginxCluster) keyPath(i int) string {
	return filepath.Join(c.dir, fmt.Sprintf("ticket%d.key", i))
}

// writeKeys writes the window as the set-up needs it: a window file (Lua)
// or one raw key file per key, the current key's first (reload). Every file
// is written through a temporary file and a rename.
func (c *NginxCluster) writeKeys() error {
	w := c.window()
	switch c.Spec.Setup {
	case NginxLua:
		var b strings.Builder
		for _, k := range w {
			b.WriteString(base64.StdEncoding.EncodeToString(k))
			b.WriteByte('\n')
		}
		return writeAtomic(c.windowPath(), []byte(b.String()))
	case NginxReload:
		for i, k := range w {
			if err := writeAtomic(c.keyPath(i), k); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write key window: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write key window: %w", err)
	}
	return nil
}

// config is one node's nginx.conf: an https server answering "ok\n" on /
// and a slow chunked response on /stream (a long-lived stream).
func (c *NginxCluster) config(b *servertest.NginxBuild, port int) string {
	var keys, init string
	switch c.Spec.Setup {
	case NginxLua:
		// Placeholders give the key array its capacity; the module fills it
		// from the window file before the worker accepts a connection.
		ph := filepath.Join(c.dir, "placeholder.key")
		if _, err := os.Stat(ph); err != nil {
			k := make([]byte, 80)
			_, _ = rand.Read(k)
			_ = os.WriteFile(ph, k, 0o600)
		}
		for range nginxWindowPrevious + 2 {
			keys += fmt.Sprintf("    ssl_session_ticket_key %s;\n", ph)
		}
		init = fmt.Sprintf("    init_worker_by_lua_block { require(\"resty.ticketkeys\").start{ file = %q } }\n", c.windowPath())
	case NginxReload:
		for i := range nginxWindowPrevious + 2 {
			keys += fmt.Sprintf("    ssl_session_ticket_key %s;\n", c.keyPath(i))
		}
	}
	wst := ""
	if c.Spec.ShutdownTimeout > 0 {
		wst = fmt.Sprintf("worker_shutdown_timeout %dms;\n", c.Spec.ShutdownTimeout.Milliseconds())
	}
	ticks := max(c.Spec.StreamTicks, 1)
	return fmt.Sprintf(`%sworker_processes %d;
%serror_log {{DIR}}/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path {{DIR}}/body;
    proxy_temp_path {{DIR}}/proxy;
    fastcgi_temp_path {{DIR}}/fastcgi;
    uwsgi_temp_path {{DIR}}/uwsgi;
    scgi_temp_path {{DIR}}/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000;
    lua_package_path "%s/?.lua;;";
    lua_check_client_abort on;
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.2 TLSv1.3;
%s%s    server {
        listen 127.0.0.1:%d ssl;
        location / { return 200 "ok\n"; }
        location = /stream {
            content_by_lua_block {
                for i = 1, %d do
                    local ok = ngx.print("tick\n")
                    if not ok or not ngx.flush(true) then return end
                    ngx.sleep(0.5)
                end
            }
        }
    }
}
`, b.LoadModules(false), max(c.Spec.Workers, 1), wst, c.Spec.LibDir, c.Spec.Cert.CertFile, c.Spec.Cert.KeyFile, keys, init, port, ticks)
}

// Rotate makes a new key and gives the nodes the new window: a new window
// file (Lua), or new key files and a reload of every node (reload). Own
// keys do not rotate. It returns when every node was told.
func (c *NginxCluster) Rotate() error {
	if c.Spec.Setup == NginxOwn {
		return nil
	}
	k := make([]byte, 80)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = append(c.keys, k)
	// Keep only what a window needs.
	if n := len(c.keys); n > 2*(nginxWindowPrevious+2) {
		c.keys = append([][]byte(nil), c.keys[n-(nginxWindowPrevious+2):]...)
	}
	if err := c.writeKeys(); err != nil {
		return err
	}
	if c.Spec.Setup == NginxReload {
		for i, p := range c.Nodes {
			if err := p.Signal(syscall.SIGHUP); err != nil {
				return fmt.Errorf("reload nginx node %d: %w", i, err)
			}
		}
		c.reloads++
	}
	c.rotations = append(c.rotations, time.Now())
	return nil
}

// Rotations returns the rotation instants so far.
func (c *NginxCluster) Rotations() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.rotations...)
}

// RotateEvery rotates every period until ctx ends; it returns the first
// error, if any, when ctx ends.
func (c *NginxCluster) RotateEvery(ctx context.Context, period time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		var first error
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				done <- first
				return
			case <-t.C:
				if err := c.Rotate(); err != nil && first == nil {
					first = err
				}
			}
		}
	}()
	return done
}

// CPU sums NginxCPU over the nodes.
func (c *NginxCluster) CPU() (NginxCPU, error) {
	var sum NginxCPU
	for _, p := range c.Nodes {
		n, err := ReadNginxCPU(p.MasterPID)
		if err != nil {
			return sum, err
		}
		sum = sum.Add(n)
	}
	return sum, nil
}

// Stop stops every node by PID and keeps their error logs (Spec.LogDir).
func (c *NginxCluster) Stop() {
	for i, p := range c.Nodes {
		p.Stop()
		if c.Spec.LogDir == "" {
			continue
		}
		if b, err := os.ReadFile(p.ErrorLog); err == nil {
			_ = os.WriteFile(filepath.Join(c.Spec.LogDir, fmt.Sprintf("nginx-%s-node%d.log", c.Spec.LogName, i)), b, 0o644)
		}
	}
}
