package nginx_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
)

// TestSupportTableIsTrue proves that the support table of docs/nginx-lua.md lists exactly the nginx
// builds the tests run (Debian's, by its binary's version, every OpenResty line, and Debian's arm64 nginx
// under qemu-user), each row keyed by version and platform, with the
// layout the module selects for it, http and stream supported, and "tested how" naming the layout
// probe, the unit tests, the e2e test (all run every build) and valgrind exactly where
// `make valgrind-nginx` runs it.
func TestSupportTableIsTrue(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "nginx-lua.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- support-table:begin -->")
	table, _, ok2 := strings.Cut(after, "<!-- support-table:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/nginx-lua.md has no <!-- support-table:begin/end --> markers")
	}
	// Rows are keyed by nginx version and platform.
	want := map[string]string{servertest.DebianNginx(t).Version + " x86_64": servertest.DebianName}
	for _, l := range servertest.OpenRestyLines {
		want[l+" x86_64"] = "openresty-" + l
	}
	want[servertest.Arm64Nginx(t).Version+" arm64"] = servertest.Arm64Name
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[2:] {
		cells := strings.Split(strings.Trim(line, "| "), "|")
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		if len(cells) != 7 {
			t.Fatalf("support table row %q: %d cells, want 7 (nginx, platform, as shipped by, layout, http, stream, tested how)", line, len(cells))
		}
		version, layout, httpOK, streamOK, how := cells[0]+" "+cells[1], cells[3], cells[4], cells[5], cells[6]
		nginxVersion := cells[0]
		build, ok := want[version]
		if !ok {
			t.Errorf("support table claims nginx %s, which no test runs (tested builds: %v)", version, want)
			continue
		}
		seen[version] = true
		if layout != layoutOf[nginxVersion] {
			t.Errorf("support table: nginx %s layout %q, the module selects %q", version, layout, layoutOf[nginxVersion])
		}
		if httpOK != "yes" || streamOK != "yes" {
			t.Errorf("support table: nginx %s http %q stream %q, the tests prove both (yes)", version, httpOK, streamOK)
		}
		var methods []string
		for _, m := range strings.Split(how, ",") {
			methods = append(methods, strings.TrimSpace(m))
		}
		wantMethods := []string{"layout probe", "unit", "e2e"}
		if build == servertest.Arm64Name { // nginx/arm64_test.go
			wantMethods = []string{"layout probe (aarch64-linux-gnu-gcc)", "unit under qemu-user", "2-node resumption under qemu-user"}
		}
		if slices.Contains(ValgrindLines, build) {
			wantMethods = append(wantMethods, "valgrind")
		}
		if !slices.Equal(methods, wantMethods) {
			t.Errorf("support table: nginx %s tested how %q, want %q", version, how, strings.Join(wantMethods, ", "))
		}
	}
	for v, b := range want {
		if !seen[v] {
			t.Errorf("support table lacks nginx %s (%s), which the tests run", v, b)
		}
	}
}
