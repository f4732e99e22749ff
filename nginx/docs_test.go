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
// builds the tests run (Debian's, by its binary's version, and every OpenResty line), each with the
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
	want := map[string]string{servertest.DebianNginx(t).Version: servertest.DebianName}
	for _, l := range servertest.OpenRestyLines {
		want[l] = "openresty-" + l
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[2:] {
		cells := strings.Split(strings.Trim(line, "| "), "|")
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		if len(cells) != 6 {
			t.Fatalf("support table row %q: %d cells, want 6 (nginx, as shipped by, layout, http, stream, tested how)", line, len(cells))
		}
		version, layout, httpOK, streamOK, how := cells[0], cells[2], cells[3], cells[4], cells[5]
		build, ok := want[version]
		if !ok {
			t.Errorf("support table claims nginx %s, which no test runs (tested builds: %v)", version, want)
			continue
		}
		seen[version] = true
		if layout != layoutOf[version] {
			t.Errorf("support table: nginx %s layout %q, the module selects %q", version, layout, layoutOf[version])
		}
		if httpOK != "yes" || streamOK != "yes" {
			t.Errorf("support table: nginx %s http %q stream %q, the tests prove both (yes)", version, httpOK, streamOK)
		}
		var methods []string
		for _, m := range strings.Split(how, ",") {
			methods = append(methods, strings.TrimSpace(m))
		}
		wantMethods := []string{"layout probe", "unit", "e2e"}
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
