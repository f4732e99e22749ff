//go:build valgrind

package nginx_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// TestValgrindNginx runs one nginx process (master_process off, so the Lua module, OpenSSL's ticket
// callback and nginx's exit cleanup all run in the process valgrind watches) under memcheck through
// windows that grow past the placeholder capacity (malloc), shrink in place, grow again (the previous
// malloc'd array is zeroed and freed) and a graceful exit (nginx zeroes the key array after the Lua VM
// is closed). After each window it makes TLS 1.2 and 1.3 handshakes that encrypt and decrypt tickets.
// It fails on any error valgrind reports (ERROR SUMMARY must say 0 errors: invalid reads, writes and
// frees, and conditional jumps on uninitialised memory, such as a read of the whole 32-bit word of the
// 1.23.2+ key bitfield, of which nginx sets only 9 bits). It runs on Debian's nginx 1.22.1 and on the
// newest OpenResty line (ValgrindLines), one after the other. Run with `make valgrind-nginx`.
func TestValgrindNginx(t *testing.T) {
	for _, name := range ValgrindLines {
		t.Run(name, func(t *testing.T) { valgrindNginx(t, servertest.NginxByName(t, name)) })
	}
}

func valgrindNginx(t *testing.T, b *servertest.NginxBuild) {
	valgrind, err := exec.LookPath("valgrind")
	if err != nil {
		t.Fatalf("valgrind not found: install the Debian package valgrind (scripts/debian-packages.txt): %v", err)
	}
	nginxBin := b.Bin
	dir := t.TempDir()
	cert := testcert.New(t, testcert.ECDSAP256)
	certFile, keyFile, _ := cert.WritePEM(dir)
	placeholder := filepath.Join(dir, "placeholder.key")
	if err := os.WriteFile(placeholder, luatest.NewKey(t, 80), 0o600); err != nil {
		t.Fatal(err)
	}
	if b.ModulesDir != "" {
		if err := os.Symlink(b.ModulesDir, filepath.Join(dir, "modules")); err != nil {
			t.Fatal(err)
		}
	}
	window := filepath.Join(dir, "web.window")
	first := luatest.NewKeys(t, 2, 80)
	luatest.WriteWindow(t, window, first)
	httpsPort, statusPort, streamPort := servertest.FreePort(t), servertest.FreePort(t), servertest.FreePort(t)
	conf := fmt.Sprintf(`%[10]serror_log %[1]s/error.log notice;
events { worker_connections 128; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    lua_package_path "%[2]s/?.lua;;";
    ssl_certificate %[3]s;
    ssl_certificate_key %[4]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_ticket_key %[5]s;
    ssl_session_ticket_key %[5]s;
    lua_shared_dict ticketkeys 1m;
    init_worker_by_lua_block { require("resty.ticketkeys").start{ file = %[6]q, interval = 0.2, shared_dict = "ticketkeys" } }
    server { listen 127.0.0.1:%[7]d ssl; location / { return 200 "ok\n"; } }
    server {
        listen 127.0.0.1:%[8]d;
        location = /ticketkeys/status { content_by_lua_block { require("resty.ticketkeys").status() } }
    }
}
stream {
    server {
        listen 127.0.0.1:%[9]d ssl;
        ssl_certificate %[3]s;
        ssl_certificate_key %[4]s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_ticket_key %[5]s;
        return "hello\n";
    }
}
`, dir, luatest.LibDir(t), certFile, keyFile, placeholder, window, httpsPort, statusPort, streamPort, b.LoadModules(true))
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	vlog := filepath.Join(dir, "valgrind.log")
	cmd := exec.Command(valgrind, "--tool=memcheck", "--error-limit=no", "--log-file="+vlog,
		nginxBin, "-p", dir+"/", "-c", confPath, "-e", filepath.Join(dir, "error.log"),
		"-g", fmt.Sprintf("daemon off; master_process off; pid %s/nginx.pid;", dir))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start valgrind: %v", err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-done
		}
	})
	inst := &luatest.Instance{
		HTTPS:     fmt.Sprintf("127.0.0.1:%d", httpsPort),
		Stream:    fmt.Sprintf("127.0.0.1:%d", streamPort),
		StatusURL: fmt.Sprintf("http://127.0.0.1:%d/ticketkeys/status", statusPort),
	}
	if err := servertest.WaitListening(180*time.Second, inst.HTTPS, inst.Stream, fmt.Sprintf("127.0.0.1:%d", statusPort)); err != nil {
		t.Fatalf("nginx under valgrind did not come up: %v", err)
	}
	errLog := func() string { b, _ := os.ReadFile(filepath.Join(dir, "error.log")); return string(b) }

	// Each window: wait until the single process holds it, then handshake in TLS 1.2 and 1.3 on https and
	// stream, and resume each ticket once (the decrypt path).
	for i, n := range []int{2, 5, 2, 9, 1, 16, 3} {
		keys := first // the window the process started with
		if i > 0 {
			keys = luatest.NewKeys(t, n, 80)
		}
		luatest.WriteWindow(t, window, keys)
		want := luatest.IDs(keys)
		deadline := time.Now().Add(120 * time.Second)
		for {
			s, err := fetchOne(inst)
			if err == nil && luatest.AllBlocksHave(map[int]luatest.Status{s.PID: s}, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("window of %d keys not installed within 120 s (last status %+v, err %v); log:\n%s", n, s, err, errLog())
			}
			time.Sleep(200 * time.Millisecond)
		}
		for _, v := range versions {
			for _, stream := range []bool{false, true} {
				addr := inst.HTTPS
				if stream {
					addr = inst.Stream
				}
				if !luatest.CrossResumes(t, cert, v.v, addr, addr, stream) {
					t.Errorf("window of %d keys, %s %s: ticket not resumed", n, v.name, addr)
				}
			}
		}
		t.Logf("window of %d keys installed under valgrind; TLS 1.2/1.3 https and stream tickets resumed", n)
	}

	// Graceful exit by PID (SIGQUIT): nginx runs its pool cleanups, which zero the key arrays.
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		t.Fatalf("SIGQUIT %d: %v", pid, err)
	}
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("nginx under valgrind exited with %v", err)
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("nginx under valgrind did not exit within 120 s of SIGQUIT")
	}
	vb, err := os.ReadFile(vlog)
	if err != nil {
		t.Fatal(err)
	}
	report := string(vb)
	bad := regexp.MustCompile(`(?m)^==\d+== (Invalid (read|write|free)|Mismatched free|Source and destination overlap|Process terminating|Conditional jump or move depends on uninitialised|Use of uninitialised|Syscall param .* uninitialised)`)
	if m := bad.FindAllString(report, -1); len(m) > 0 {
		t.Errorf("valgrind found %d memory errors", len(m))
	}
	m := regexp.MustCompile(`ERROR SUMMARY: (\d+) errors.*`).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("valgrind log has no ERROR SUMMARY:\n%s", report)
	}
	summary := m[0]
	if m[1] != "0" || t.Failed() {
		t.Fatalf("%s: valgrind: %s, want 0 errors; its log:\n%s", b.Name, summary, report)
	}
	if !strings.Contains(errLog(), "installed a window of 3 keys") {
		t.Fatalf("the last window was not reported installed; log:\n%s", errLog())
	}
	t.Logf("%s (nginx %s): valgrind memcheck %s", b.Name, b.Version, summary)
}

// fetchOne reads the status of the only process.
func fetchOne(inst *luatest.Instance) (luatest.Status, error) {
	return luatest.FetchStatus(inst.StatusURL)
}
