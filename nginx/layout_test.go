package nginx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/layoutprobe"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// cacheDir is where built nginx trees are kept (as scripts/openresty-build.sh and vault-build.sh do).
func cacheDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TICKETKEYS_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(home, ".cache", "ticketkeys")
}

// probeTree returns the configured nginx tree of a build: the OpenResty build's headers, or Debian's
// nginx-dev source configured once under the cache.
func probeTree(t *testing.T, b *servertest.NginxBuild) string {
	t.Helper()
	if !b.IsDebian() {
		return b.HeadersDir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tree, err := layoutprobe.DebianTree(ctx, cacheDir(t))
	if err != nil {
		t.Fatalf("Debian's nginx tree for the layout probe: %v", err)
	}
	return tree
}

// TestLayoutMatchesHeaders proves, on every line, that the layout row the Lua module uses for that
// nginx (every offset and size it reads or writes, the key element's bitfield bytes and the ex_data index
// symbol) is the one the C compiler gives for that nginx's own headers (nginx/layoutprobe), and that the
// row's nginx version is the binary's.
func TestLayoutMatchesHeaders(t *testing.T) {
	eachNginx(t, func(t *testing.T, b *servertest.NginxBuild) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		probe, err := layoutprobe.Probe(ctx, probeTree(t, b))
		if err != nil {
			t.Fatal(err)
		}
		if probe.NginxVersionString != b.Version {
			t.Fatalf("the probed headers are nginx %s, the binary %s", probe.NginxVersionString, b.Version)
		}
		cert := testcert.New(t, testcert.ECDSAP256)
		inst := luatest.Start(t, luatest.Config{Nginx: b, Window: newWindow(t, luatest.NewKeys(t, 1, 80)), Cert: cert, Workers: 1})
		body := inst.Layout(t)
		if bytes.HasPrefix(body, []byte("refused")) {
			t.Fatalf("the module has no layout for nginx %s: %s", b.Version, body)
		}
		var lua layoutprobe.Row
		if err := json.Unmarshal(body, &lua); err != nil {
			t.Fatalf("decode the module's row %q: %v", body, err)
		}
		var named struct {
			Layout string `json:"layout"`
		}
		_ = json.Unmarshal(body, &named)
		if named.Layout != wantLayout(t, b) {
			t.Errorf("%s (nginx %s): the module selects layout %q, want %q", b.Name, b.Version, named.Layout, wantLayout(t, b))
		}
		if d := layoutprobe.Diff(probe, &lua); len(d) > 0 {
			t.Errorf("%s (nginx %s): the Lua layout %s disagrees with the headers:\n  %s", b.Name, b.Version, named.Layout, strings.Join(d, "\n  "))
		} else {
			pj, _ := json.Marshal(probe)
			t.Logf("%s: layout %s matches the headers: %s", b.Name, named.Layout, pj)
		}
		// The comparison sees a one-field difference (it cannot pass vacuously).
		wrong := *probe
		wrongStream := *probe.Stream
		wrongStream.CoreSrvCtx += 8
		wrong.Stream = &wrongStream
		if d := layoutprobe.Diff(probe, &wrong); len(d) != 1 || !strings.HasPrefix(d[0], "stream.core_srv_ctx: ") {
			t.Errorf("Diff of a row with stream.core_srv_ctx moved by 8: %q, want exactly that field", d)
		}
	})
}

// TestSharedCacheBlockSkipped proves, on every line, a configuration with a non-TLS stream server and a
// stream TLS block that has `ssl_session_cache shared:...` and no placeholder: the module installs the
// window in every other block (http and stream), leaves that block to nginx with one warning per worker
// naming it by file and line, and the block still completes TLS handshakes. On nginx 1.23.2+ nginx gives
// such a block a key array of its own (shared=1, size uninitialised), which the module must recognise
// and skip instead of refusing every block.
func TestSharedCacheBlockSkipped(t *testing.T) {
	eachNginx(t, func(t *testing.T, b *servertest.NginxBuild) {
		cert := testcert.New(t, testcert.ECDSAP256)
		keys := luatest.NewKeys(t, 3, 80)
		window := newWindow(t, keys)
		cfg := luatest.Config{Nginx: b, Window: window, Cert: cert, Stream: true, StreamSharedCache: true, StreamPlain: true}
		a := luatest.Start(t, cfg)
		other := luatest.Start(t, cfg)
		want := luatest.IDs(keys)
		for _, inst := range []*luatest.Instance{a, other} {
			st := inst.WaitIDs(t, want, 10*time.Second)
			for pid, s := range st {
				kinds := map[string]int{}
				for _, blk := range s.Blocks {
					kinds[blk.Kind]++
				}
				if kinds["http"] != 2 || kinds["stream"] != 1 || s.LastError != "" {
					t.Errorf("worker %d: installed blocks %v (last error %q), want 2 http and 1 stream", pid, kinds, s.LastError)
				}
				if len(s.Skipped) != 1 || s.Skipped[0].Kind != "stream" || !strings.HasSuffix(s.Skipped[0].Where, "nginx.conf:"+fmt.Sprint(sharedBlockLine(t, inst))) {
					t.Errorf("worker %d: skipped %+v, want the stream shared-cache block at nginx.conf:%d", pid, s.Skipped, sharedBlockLine(t, inst))
				}
			}
		}
		// One warning per worker, naming the block by file and line.
		line := sharedBlockLine(t, a)
		named := regexp.MustCompile(`\[warn\].*ticketkeys: stream server 1 \(` + regexp.QuoteMeta(a.Proc.ConfPath) + fmt.Sprintf(`:%d\)`, line))
		if n := len(named.FindAllString(a.Proc.Log(), -1)); n != 2 {
			t.Errorf("%d warnings naming the shared-cache block at %s:%d, want one per worker (2); log:\n%s", n, a.Proc.ConfPath, line, a.Proc.Log())
		}
		if errs := errorLines(a.Proc.Log()); len(errs) > 0 {
			t.Errorf("unexpected errors:\n%s", strings.Join(errs, "\n"))
		}
		// The window is used where it was installed, across instances; the skipped block still serves TLS
		// and the plain stream server answers.
		for _, v := range versions {
			if !luatest.CrossResumes(t, cert, v.v, a.HTTPS, other.HTTPS, false) {
				t.Errorf("%s: https ticket from A did not resume on B", v.name)
			}
			if !luatest.CrossResumes(t, cert, v.v, a.Stream, other.Stream, true) {
				t.Errorf("%s: stream ticket from A did not resume on B", v.name)
			}
			if _, err := luatest.Handshake(luatest.ClientConfig(cert, v.v), a.StreamShared, true); err != nil {
				t.Errorf("%s: the shared-cache stream block: %v", v.name, err)
			}
		}
		c, err := plainAnswer(a.StreamPlain)
		if err != nil || c != "plain\n" {
			t.Errorf("plain stream server answered %q, %v", c, err)
		}
		t.Logf("%s: window in 2 http + 1 stream blocks per worker; the shared-cache block at line %d skipped with one warning per worker", b.Name, line)
	})
}

// sharedBlockLine returns the line of the `server {` of the shared-cache stream block in the instance's
// nginx.conf.
func sharedBlockLine(t *testing.T, inst *luatest.Instance) int {
	t.Helper()
	conf, err := os.ReadFile(inst.Proc.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(conf), "\n")
	at := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "ssl_session_cache shared:tkstream") })
	for i := at; i >= 0; i-- {
		if strings.TrimSpace(lines[i]) == "server {" {
			return i + 1
		}
	}
	t.Fatalf("no shared-cache stream block in %s", inst.Proc.ConfPath)
	return 0
}

// plainAnswer reads everything a plain TCP server sends until it closes.
func plainAnswer(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}
