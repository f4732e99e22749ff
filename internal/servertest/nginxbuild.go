package servertest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// OpenRestyLines are the OpenResty release lines the tests build from the source kit and run, oldest
// first (scripts/openresty-build.sh LINE builds one). Each bundles the nginx core of the same version.
var OpenRestyLines = []string{"1.25.3", "1.27.1", "1.29.2", "1.31.1"}

// DebianName is the NginxBuild.Name of Debian's packaged nginx.
const DebianName = "debian"

// NginxBuild is one nginx binary the tests can run: Debian's package (nginx, libnginx-mod-http-lua,
// libnginx-mod-stream, lua-resty-core) or an OpenResty line built from the source kit.
type NginxBuild struct {
	// Name is "debian" or "openresty-LINE".
	Name string
	// Version is the nginx core version, e.g. "1.22.1" (nginx -v).
	Version string
	// Bin is the nginx binary.
	Bin string
	// ModulesDir is linked as modules/ in each instance directory (Debian: /usr/lib/nginx/modules), so
	// `load_module modules/...` works; empty when the Lua and stream modules are built in.
	ModulesDir string
	// HeadersDir is a configured nginx tree (src/ and objs/) of this build, for nginx/layoutprobe; empty
	// for Debian (layoutprobe.DebianTree configures one from nginx-dev).
	HeadersDir string
	// Prefix is the OpenResty prefix (luajit/, lualib/, nginx/); empty for Debian.
	Prefix string
	// Emulator, when set, is the command line that runs Bin, a binary of another architecture: for the
	// arm64 build, qemu-aarch64-static -L SYSROOT (Arm64Nginx). Command and StartNginxWith use it.
	Emulator []string
	// Sysroot is the root of the unpacked foreign packages Bin comes from (arm64 build only).
	Sysroot string
}

// Command returns the command running this build's nginx with args, through Emulator when set.
func (b *NginxBuild) Command(args ...string) *exec.Cmd {
	if len(b.Emulator) == 0 {
		return exec.Command(b.Bin, args...)
	}
	argv := append(append(append([]string{}, b.Emulator[1:]...), b.Bin), args...)
	return exec.Command(b.Emulator[0], argv...)
}

// IsDebian reports whether b is Debian's packaged nginx.
func (b *NginxBuild) IsDebian() bool { return b.Name == DebianName }

// LoadModules returns the main-context lines that load the http Lua module (and, with stream, the
// stream module) for this build: Debian's dynamic modules, ndk first (else nginx fails with
// "undefined symbol: ndk_set_var_value"); nothing for OpenResty, which has them built in.
func (b *NginxBuild) LoadModules(stream bool) string {
	if b.ModulesDir == "" {
		return ""
	}
	s := "load_module modules/ndk_http_module.so;\nload_module modules/ngx_http_lua_module.so;\n"
	if stream {
		s += "load_module modules/ngx_stream_module.so;\n"
	}
	return s
}

var nginxVersionOut = regexp.MustCompile(`nginx version: [a-z]+/([0-9]+\.[0-9]+\.[0-9]+)`)

// binaryVersion runs `bin -v` and returns the nginx core version; OpenResty reports "openresty/1.27.1.2",
// whose first three numbers are the nginx core's.
func binaryVersion(bin string) (string, error) {
	return buildVersion(&NginxBuild{Bin: bin})
}

// buildVersion runs the build's `nginx -v` (through its emulator, if any) and returns the core version.
func buildVersion(b *NginxBuild) (string, error) {
	out, err := b.Command("-v").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s -v: %v: %s", b.Bin, err, out)
	}
	m := nginxVersionOut.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("%s -v printed no version: %q", b.Bin, out)
	}
	return string(m[1]), nil
}

// DebianNginx returns Debian's packaged nginx, or fails the test if it is not installed.
func DebianNginx(t testing.TB) *NginxBuild {
	t.Helper()
	bin := NginxBinary(t)
	v, err := binaryVersion(bin)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return &NginxBuild{Name: DebianName, Version: v, Bin: bin, ModulesDir: "/usr/lib/nginx/modules"}
}

// RepoRoot returns the repository root (two levels above this file).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("servertest: cannot locate the source file to find the repository root")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// errNoKit marks an OpenResty build that cannot run because the source kit is missing.
var errNoKit = errors.New("no OpenResty source kit")

// noKitError is errNoKit with the build script's own one-line reason (where it looked, what to do).
type noKitError string

func (e noKitError) Error() string        { return string(e) }
func (e noKitError) Is(target error) bool { return target == errNoKit }

type buildResult struct {
	mu    sync.Mutex
	build *NginxBuild
	err   error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*buildResult{}
)

// openResty builds (or finds) one line through scripts/openresty-build.sh, once per test binary.
func openResty(root, line string) (*NginxBuild, error) {
	buildsMu.Lock()
	r, ok := builds[line]
	if !ok {
		r = &buildResult{}
		builds[line] = r
	}
	buildsMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.build != nil || r.err != nil {
		return r.build, r.err
	}
	r.build, r.err = runBuildScript(root, line)
	return r.build, r.err
}

func runBuildScript(root, line string) (*NginxBuild, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "scripts", "openresty-build.sh"), line)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 3 {
		return nil, noKitError(strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		tail := stderr.String()
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		return nil, fmt.Errorf("scripts/openresty-build.sh %s: %v\n%s", line, err, tail)
	}
	prefix := strings.TrimSpace(stdout.String())
	b := &NginxBuild{
		Name:       "openresty-" + line,
		Bin:        filepath.Join(prefix, "nginx", "sbin", "nginx"),
		HeadersDir: filepath.Join(prefix, "nginx-headers"),
		Prefix:     prefix,
	}
	v, err := binaryVersion(b.Bin)
	if err != nil {
		return nil, err
	}
	if v != line {
		return nil, fmt.Errorf("%s reports nginx %s, want %s", b.Bin, v, line)
	}
	b.Version = v
	return b, nil
}

// OpenResty returns the OpenResty line's build, building it first if needed (about 1 to 2 minutes a
// line on 2 cores, once: the build is cached outside the tree). Without the source kit
// (../shared/openresty-src beside the repository, or $OPENRESTY_SRC) the test is skipped with one line
// saying why, except under CI=true, where a missing kit fails the test. A failed build fails the test.
func OpenResty(t testing.TB, line string) *NginxBuild {
	t.Helper()
	b, err := openResty(RepoRoot(t), line)
	if errors.Is(err, errNoKit) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("servertest: OpenResty %s: %v (CI must run every line)", line, err)
		}
		t.Skipf("servertest: OpenResty %s skipped: %v", line, err)
	}
	if err != nil {
		t.Fatalf("servertest: OpenResty %s: %v", line, err)
	}
	return b
}

// NginxLines returns the names of every build the tests run, Debian first: "debian",
// "openresty-1.25.3", ... For subtests: t.Run(name, func(t) { b := NginxByName(t, name) ... }).
func NginxLines() []string {
	out := []string{DebianName}
	for _, l := range OpenRestyLines {
		out = append(out, "openresty-"+l)
	}
	return out
}

// NginxByName returns the build a name from NginxLines stands for (OpenResty lines may skip, see
// OpenResty).
func NginxByName(t testing.TB, name string) *NginxBuild {
	t.Helper()
	if name == DebianName {
		return DebianNginx(t)
	}
	line, ok := strings.CutPrefix(name, "openresty-")
	if !ok {
		t.Fatalf("servertest: unknown nginx build %q (want one of %v)", name, NginxLines())
	}
	return OpenResty(t, line)
}

// EachNginx runs body as a subtest per nginx build of NginxLines, all at the same time (t.Run from one
// goroutine each, so -parallel does not queue them behind each other), and returns when every subtest
// has finished. Subtests of OpenResty lines skip without the source kit (see OpenResty). Tests that run
// side by side must not share ports (FreePort per instance) or files.
func EachNginx(t *testing.T, body func(t *testing.T, b *NginxBuild)) {
	t.Helper()
	var wg sync.WaitGroup
	for _, name := range NginxLines() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, func(t *testing.T) { body(t, NginxByName(t, name)) })
		}()
	}
	wg.Wait()
}

// Arm64Name is the NginxBuild.Name of Debian's arm64 nginx run under qemu-user (Arm64Nginx).
const Arm64Name = "debian-arm64"

var arm64Build buildResult

// Arm64Nginx returns Debian 12's arm64 nginx (1.22.1 with the http Lua and stream modules) from the
// sysroot scripts/arm64-sysroot.sh builds once per machine, run on this machine by
// qemu-aarch64-static -L SYSROOT (Debian's qemu-user-static): the emulated master forks its workers as
// usual and every absolute path the guest opens is looked up in the sysroot first, then on the host
// (the test's configuration, certificates and window files). A missing qemu-aarch64-static or a failed
// sysroot build fails the test (scripts/debian-packages.txt lists qemu-user-static).
//
// qemu-user maps the guest's address space into the host's: on an x86_64 host the emulated nginx's
// pointers lie below 2^47, not near 0xaaaa... and 0xffff... as on arm64 hardware.
func Arm64Nginx(t testing.TB) *NginxBuild {
	t.Helper()
	qemu := lookBinary(t, "qemu-aarch64-static", "/usr/bin/qemu-aarch64-static")
	root := RepoRoot(t)
	arm64Build.mu.Lock()
	defer arm64Build.mu.Unlock()
	if arm64Build.build == nil && arm64Build.err == nil {
		arm64Build.build, arm64Build.err = arm64Sysroot(root, qemu)
	}
	if arm64Build.err != nil {
		t.Fatalf("servertest: arm64 nginx: %v", arm64Build.err)
	}
	return arm64Build.build
}

func arm64Sysroot(root, qemu string) (*NginxBuild, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "scripts", "arm64-sysroot.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scripts/arm64-sysroot.sh: %v\n%s", err, stderr.String())
	}
	sysroot := strings.TrimSpace(stdout.String())
	b := &NginxBuild{
		Name:       Arm64Name,
		Bin:        filepath.Join(sysroot, "usr", "sbin", "nginx"),
		ModulesDir: filepath.Join(sysroot, "usr", "lib", "nginx", "modules"),
		Emulator:   []string{qemu, "-L", sysroot},
		Sysroot:    sysroot,
	}
	v, err := buildVersion(b)
	if err != nil {
		return nil, err
	}
	b.Version = v
	return b, nil
}
