package layoutprobe

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// DebianSource is where Debian's nginx-dev package installs the nginx source of the packaged nginx
// (unconfigured) and conf_flags, the configure flags a module must use to match the packaged binary.
const DebianSource = "/usr/share/nginx/src"

// debianStreamFlags configure stream as the packaged nginx has it (nginx -V: --with-stream=dynamic
// --with-stream_ssl_module); conf_flags leaves stream out.
var debianStreamFlags = []string{"--with-stream=dynamic", "--with-stream_ssl_module"}

var (
	confFlagsRE     = regexp.MustCompile(`(?s)NGX_CONF_FLAGS=\((.*)\)`)
	nginxVersionRE  = regexp.MustCompile(`#define\s+NGINX_VERSION\s+"([0-9.]+)"`)
	safeConfFlagsRE = regexp.MustCompile(`^--[a-z0-9_-]+(=[A-Za-z0-9_./-]+)?$`)
)

// DebianTree returns a configured copy of Debian's nginx source (src/ and objs/) for the probe, made
// once under cacheDir/nginx-debian-VERSION-tree: the source is copied to a temporary directory beside
// it, configured with Debian's conf_flags and the packaged stream flags, and renamed into place, so a
// half-configured tree is never used. A lock file makes concurrent callers wait for one configure.
func DebianTree(ctx context.Context, cacheDir string) (string, error) {
	flagsText, err := os.ReadFile(filepath.Join(DebianSource, "conf_flags"))
	if err != nil {
		return "", ErrNoDebianSource
	}
	header, err := os.ReadFile(filepath.Join(DebianSource, "src", "core", "nginx.h"))
	if err != nil {
		return "", fmt.Errorf("layoutprobe: %w", err)
	}
	mv := nginxVersionRE.FindSubmatch(header)
	if mv == nil {
		return "", fmt.Errorf("layoutprobe: no NGINX_VERSION in %s/src/core/nginx.h", DebianSource)
	}
	mf := confFlagsRE.FindSubmatch(flagsText)
	if mf == nil {
		return "", fmt.Errorf("layoutprobe: %s/conf_flags holds no NGX_CONF_FLAGS=( ... )", DebianSource)
	}
	flags := strings.Fields(string(mf[1]))
	for _, f := range flags {
		if !safeConfFlagsRE.MatchString(f) {
			return "", fmt.Errorf("layoutprobe: unexpected configure flag %q in %s/conf_flags", f, DebianSource)
		}
	}
	flags = append(flags, debianStreamFlags...)

	final := filepath.Join(cacheDir, "nginx-debian-"+string(mv[1])+"-tree")
	configured := func() bool {
		_, err := os.Stat(filepath.Join(final, "objs", "ngx_auto_config.h"))
		return err == nil
	}
	if configured() {
		return final, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("layoutprobe: %w", err)
	}
	lock, err := os.OpenFile(final+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("layoutprobe: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("layoutprobe: lock %s: %w", lock.Name(), err)
	}
	if configured() { // made by the caller we waited for
		return final, nil
	}
	tmp, err := os.MkdirTemp(cacheDir, ".nginx-debian-tree-")
	if err != nil {
		return "", fmt.Errorf("layoutprobe: %w", err)
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "cp", "-a", DebianSource+"/.", tmp).CombinedOutput(); err != nil {
		return "", fmt.Errorf("layoutprobe: copy %s: %v: %s", DebianSource, err, out)
	}
	cmd := exec.CommandContext(ctx, "sh", append([]string{"./configure"}, flags...)...)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		tail := string(out)
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return "", fmt.Errorf("layoutprobe: configure Debian's nginx source (needs build-essential libssl-dev zlib1g-dev libpcre2-dev): %v\n%s", err, tail)
	}
	_ = os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("layoutprobe: %w", err)
	}
	return final, nil
}
