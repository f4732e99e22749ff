// Package layoutprobe reads, from the headers of a configured nginx source tree, the layout that
// resty.ticketkeys (nginx/lib/resty/ticketkeys.lua) relies on: the offsets of the http and stream server
// configuration chains, ngx_ssl_t, the ticket-key element (and the bytes of its bitfield) and the name of
// the SSL_CTX ex_data index of the key array.
//
// It compiles c/probe.c with the host C compiler against the tree's include directories (objs/ and the
// src/ directories nginx's own Makefile uses) and runs it. Names that differ between nginx versions (the
// key element's type, the stream ssl configuration's type, the index symbol, the http `enable` flag) are
// found first by compiling small checks against the same headers, never from the version number, so a
// row is what the compiler says for that tree. The tests compare the row with the one the Lua module
// uses for the same nginx, so the Lua table and nginx cannot disagree silently.
package layoutprobe

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

//go:embed c/probe.c
var probeSource []byte

// Row is one nginx tree's layout as probe.c prints it (and as the Lua module's _layout_row() returns
// it). Offsets are bytes; nil means the field does not exist in that nginx.
type Row struct {
	NginxVersion       int     `json:"nginx_version"`
	NginxVersionString string  `json:"nginx_version_string"`
	PointerSize        int     `json:"pointer_size"`
	CycleConfCtx       int     `json:"cycle_conf_ctx"`
	Module             Module  `json:"module"`
	Array              Array   `json:"array"`
	SSL                SSL     `json:"ssl"`
	HTTP               Family  `json:"http"`
	Stream             *Family `json:"stream"`
	Key                Key     `json:"key"`
	IndexSymbol        string  `json:"index_symbol"`
}

// Module is ngx_module_t.
type Module struct {
	CtxIndex int `json:"ctx_index"`
	Index    int `json:"index"`
	Version  int `json:"version"`
}

// Array is ngx_array_t.
type Array struct {
	Elts   int `json:"elts"`
	Nelts  int `json:"nelts"`
	Size   int `json:"size"`
	Nalloc int `json:"nalloc"`
	Sizeof int `json:"sizeof"`
}

// SSL is ngx_ssl_t: the SSL_CTX pointer and the log pointer the module checks after it.
type SSL struct {
	Ctx int `json:"ctx"`
	Log int `json:"log"`
}

// Family is the server configuration chain of http or stream: the conf ctx, the core main conf's
// servers array, the core server conf's ctx pointer and the file name and line of its block (to name
// the block in warnings), and the SSL_CTX inside the ssl server conf.
type Family struct {
	ConfCtxMainConf int    `json:"conf_ctx_main_conf"`
	ConfCtxSrvConf  int    `json:"conf_ctx_srv_conf"`
	CoreMainServers int    `json:"core_main_servers"`
	CoreSrvCtx      int    `json:"core_srv_ctx"`
	CoreSrvFileName int    `json:"core_srv_file_name"`
	CoreSrvLine     int    `json:"core_srv_line"`
	SSLEnable       *int   `json:"ssl_enable"`
	SSLConfType     string `json:"ssl_conf_type,omitempty"`
	SSLCtx          int    `json:"ssl_ctx"`
}

// Key is the ticket-key element of the key array.
type Key struct {
	Type       string `json:"type,omitempty"`
	Sizeof     int    `json:"sizeof"`
	Name       int    `json:"name"`
	HMACKey    int    `json:"hmac_key"`
	AESKey     int    `json:"aes_key"`
	Expire     *int   `json:"expire"`
	ExpireSize *int   `json:"expire_size"`
	SizeField  *int   `json:"size_field"`
	SizeByte   *int   `json:"size_byte"`
	SharedByte *int   `json:"shared_byte"`
	SharedMask *int   `json:"shared_mask"`
}

// IncludeDirs returns the include directories of a configured tree that exist: objs/ first (it holds
// ngx_auto_config.h), then the src/ directories of nginx's core, event, os, http and stream parts.
func IncludeDirs(tree string) []string {
	var out []string
	for _, d := range []string{"objs", "src/core", "src/event", "src/event/modules", "src/event/quic",
		"src/os/unix", "src/http", "src/http/modules", "src/http/v2", "src/http/v3", "src/stream"} {
		if fi, err := os.Stat(filepath.Join(tree, d)); err == nil && fi.IsDir() {
			out = append(out, filepath.Join(tree, d))
		}
	}
	return out
}

// compiler returns the C compiler: $CC or cc.
func compiler() string {
	if cc := os.Getenv("CC"); cc != "" {
		return cc
	}
	return "cc"
}

// Target is the machine the probe is compiled for. The zero Target is the host: compiler(), the tree's
// include directories, the probe run directly. A cross target (Arm64Target) names the cross compiler,
// the target's library headers (OpenSSL, PCRE2) that nginx's headers include, and the command that runs
// a target binary here (an emulator); its probe is linked statically.
type Target struct {
	// Name is the target's name in messages ("arm64"); empty for the host.
	Name string
	// CC is the C compiler; empty for compiler().
	CC string
	// Includes are more include directories, searched after the tree's (-isystem).
	Includes []string
	// Run is the command prefix that runs a target binary (e.g. qemu-aarch64-static); empty: run it.
	Run []string
}

// Arm64Target returns the arm64 (aarch64) target: Debian's cross compiler aarch64-linux-gnu-gcc
// (gcc-aarch64-linux-gnu), the arm64 OpenSSL and PCRE2 headers of sysroot (scripts/arm64-sysroot.sh
// unpacks libssl-dev and libpcre2-dev) and qemu-aarch64-static to run the probe.
func Arm64Target(sysroot string) Target {
	return Target{
		Name:     "arm64",
		CC:       "aarch64-linux-gnu-gcc",
		Includes: []string{filepath.Join(sysroot, "usr", "include", "aarch64-linux-gnu"), filepath.Join(sysroot, "usr", "include")},
		Run:      []string{"qemu-aarch64-static"},
	}
}

func (tg Target) cc() string {
	if tg.CC != "" {
		return tg.CC
	}
	return compiler()
}

// includeArgs returns the -I arguments of the tree's directories and the -isystem ones of the target.
func (tg Target) includeArgs(incs []string) []string {
	var args []string
	for _, d := range incs {
		args = append(args, "-I", d)
	}
	for _, d := range tg.Includes {
		args = append(args, "-isystem", d)
	}
	return args
}

// prelude includes nginx's headers as a module source file does.
const prelude = "#include <ngx_config.h>\n#include <ngx_core.h>\n#include <ngx_http.h>\n"

// compiles reports whether body (statements inside a function) compiles against the tree's headers,
// after prelude and extra includes.
func compiles(ctx context.Context, tg Target, incs []string, extra, body string) bool {
	src := prelude + extra + "int tk_check(void);\nint tk_check(void) {\n" + body + "\nreturn 0;\n}\n"
	args := append([]string{"-fsyntax-only", "-x", "c", "-"}, tg.includeArgs(incs)...)
	cmd := exec.CommandContext(ctx, tg.cc(), args...)
	cmd.Stdin = strings.NewReader(src)
	return cmd.Run() == nil
}

// features are the version-dependent names, found by compiling checks.
type features struct {
	keyType       string // ngx_ssl_ticket_key_t or ngx_ssl_session_ticket_key_t
	keyBitfield   bool
	httpSSLEnable bool
	streamSSLType string // "" when the tree has no stream headers
	indexSymbol   string
}

// detect compiles the checks (concurrently: each is a separate compiler run) and picks the names.
func detect(ctx context.Context, tg Target, incs []string) (features, error) {
	const stream = "#include <ngx_stream.h>\n"
	checks := map[string][2]string{
		"key:ngx_ssl_ticket_key_t":                {"", "ngx_ssl_ticket_key_t *p = 0; (void) p;"},
		"key:ngx_ssl_session_ticket_key_t":        {"", "ngx_ssl_session_ticket_key_t *p = 0; (void) p;"},
		"bitfield:ngx_ssl_ticket_key_t":           {"", "ngx_ssl_ticket_key_t k; k.shared = 1; k.size = 80; (void) sizeof(k.expire); (void) k;"},
		"bitfield:ngx_ssl_session_ticket_key_t":   {"", "ngx_ssl_session_ticket_key_t k; k.shared = 1; k.size = 80; (void) sizeof(k.expire); (void) k;"},
		"enable":                                  {"", "(void) sizeof(((ngx_http_ssl_srv_conf_t *) 0)->enable);"},
		"stream:ngx_stream_ssl_srv_conf_t":        {stream, "(void) sizeof(((ngx_stream_ssl_srv_conf_t *) 0)->ssl);"},
		"stream:ngx_stream_ssl_conf_t":            {stream, "(void) sizeof(((ngx_stream_ssl_conf_t *) 0)->ssl);"},
		"index:ngx_ssl_ticket_keys_index":         {"", "(void) sizeof(ngx_ssl_ticket_keys_index);"},
		"index:ngx_ssl_session_ticket_keys_index": {"", "(void) sizeof(ngx_ssl_session_ticket_keys_index);"},
	}
	ok := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for name, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r := compiles(ctx, tg, incs, c[0], c[1])
			mu.Lock()
			ok[name] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return features{}, err
	}
	var f features
	one := func(what, prefix string, names ...string) (string, error) {
		var found []string
		for _, n := range names {
			if ok[prefix+n] {
				found = append(found, n)
			}
		}
		if len(found) != 1 {
			return "", fmt.Errorf("layoutprobe: %s: want exactly one of %v declared by the headers, found %v", what, names, found)
		}
		return found[0], nil
	}
	var err error
	if f.keyType, err = one("ticket-key element type", "key:", "ngx_ssl_ticket_key_t", "ngx_ssl_session_ticket_key_t"); err != nil {
		return f, err
	}
	if f.indexSymbol, err = one("key array ex_data index", "index:", "ngx_ssl_ticket_keys_index", "ngx_ssl_session_ticket_keys_index"); err != nil {
		return f, err
	}
	f.keyBitfield = ok["bitfield:"+f.keyType]
	f.httpSSLEnable = ok["enable"]
	if ok["stream:ngx_stream_ssl_srv_conf_t"] || ok["stream:ngx_stream_ssl_conf_t"] {
		if f.streamSSLType, err = one("stream ssl configuration type", "stream:", "ngx_stream_ssl_srv_conf_t", "ngx_stream_ssl_conf_t"); err != nil {
			return f, err
		}
	}
	return f, nil
}

// Probe compiles and runs probe.c against the configured nginx tree (a directory with src/ and objs/)
// and returns its row.
func Probe(ctx context.Context, tree string) (*Row, error) {
	return ProbeTarget(ctx, tree, Target{})
}

// ProbeTarget is Probe for a target machine: probe.c compiled by the target's compiler against the
// tree's headers and the target's library headers, and run through the target's Run command. A tree
// configured on the host serves a target with the same data model (x86_64 and arm64 Linux are both LP64):
// the row then is the target compiler's layout of the same declarations.
func ProbeTarget(ctx context.Context, tree string, tg Target) (*Row, error) {
	if _, err := os.Stat(filepath.Join(tree, "objs", "ngx_auto_config.h")); err != nil {
		return nil, fmt.Errorf("layoutprobe: %s is not a configured nginx tree (no objs/ngx_auto_config.h): %w", tree, err)
	}
	incs := IncludeDirs(tree)
	if !compiles(ctx, tg, incs, "", "") {
		return nil, fmt.Errorf("layoutprobe: nginx's headers in %s do not compile with %s (missing build packages? see scripts/debian-packages.txt): %s", tree, tg.cc(), compileOutput(ctx, tg, incs))
	}
	f, err := detect(ctx, tg, incs)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "layoutprobe-")
	if err != nil {
		return nil, fmt.Errorf("layoutprobe: temp dir: %w", err)
	}
	defer os.RemoveAll(work)
	src, bin := filepath.Join(work, "probe.c"), filepath.Join(work, "probe")
	if err := os.WriteFile(src, probeSource, 0o600); err != nil {
		return nil, fmt.Errorf("layoutprobe: write %s: %w", src, err)
	}
	args := []string{"-o", bin, src, "-DTK_KEY_T=" + f.keyType, "-DTK_INDEX_SYM=" + f.indexSymbol}
	if f.keyBitfield {
		args = append(args, "-DTK_KEY_HAS_BITFIELD=1")
	}
	if f.httpSSLEnable {
		args = append(args, "-DTK_HTTP_SSL_ENABLE=1")
	} else {
		args = append(args, "-DTK_HTTP_SSL_ENABLE=0")
	}
	if f.streamSSLType != "" {
		args = append(args, "-DTK_STREAM_SSL_T="+f.streamSSLType)
	}
	args = append(args, tg.includeArgs(incs)...)
	if len(tg.Run) > 0 {
		args = append(args, "-static")
	}
	if out, err := exec.CommandContext(ctx, tg.cc(), args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("layoutprobe: compile probe.c against %s: %v\n%s", tree, err, out)
	}
	run := append(append([]string{}, tg.Run...), bin)
	out, err := exec.CommandContext(ctx, run[0], run[1:]...).Output()
	if err != nil {
		return nil, fmt.Errorf("layoutprobe: run the probe for %s: %v", tree, err)
	}
	var row Row
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&row); err != nil {
		return nil, fmt.Errorf("layoutprobe: decode the probe's output %q: %w", out, err)
	}
	return &row, nil
}

// compileOutput returns the compiler's messages for the bare prelude (for an error message).
func compileOutput(ctx context.Context, tg Target, incs []string) string {
	args := append([]string{"-fsyntax-only", "-x", "c", "-"}, tg.includeArgs(incs)...)
	cmd := exec.CommandContext(ctx, tg.cc(), args...)
	cmd.Stdin = strings.NewReader(prelude)
	out, _ := cmd.CombinedOutput()
	if len(out) > 2000 {
		out = out[:2000]
	}
	return string(out)
}

// Diff compares the layout fields of two rows (type names, which the Lua module does not know, are
// left out) and returns one line per difference, "field: probe X, lua Y", sorted.
func Diff(probe, lua *Row) []string {
	a, b := flatten(probe), flatten(lua)
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		switch k {
		case "key.type", "stream.ssl_conf_type", "http.ssl_conf_type", "nginx_version_string":
			continue
		}
		if a[k] != b[k] {
			out = append(out, fmt.Sprintf("%s: probe %s, lua %s", k, a[k], b[k]))
		}
	}
	sort.Strings(out)
	return out
}

// flatten renders a row as "a.b" -> JSON value text (absent fields as "null").
func flatten(r *Row) map[string]string {
	out := map[string]string{}
	b, err := json.Marshal(r)
	if err != nil {
		return out
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return out
	}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if mm, ok := v.(map[string]any); ok {
			for k, vv := range mm {
				walk(strings.TrimPrefix(prefix+"."+k, "."), vv)
			}
			return
		}
		t, _ := json.Marshal(v)
		out[prefix] = string(t)
	}
	walk("", m)
	// An omitted ssl_enable is the same as null.
	for _, fam := range []string{"http", "stream"} {
		if _, ok := out[fam+".ssl_ctx"]; ok {
			if _, ok := out[fam+".ssl_enable"]; !ok {
				out[fam+".ssl_enable"] = "null"
			}
		}
	}
	return out
}

// ErrNoDebianSource is returned by DebianTree when Debian's nginx-dev package is not installed.
var ErrNoDebianSource = errors.New("layoutprobe: /usr/share/nginx/src/conf_flags not found: install the Debian package nginx-dev (scripts/debian-packages.txt)")
