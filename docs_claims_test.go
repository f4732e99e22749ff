package ticketkeys

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// registryHosts are package and module registries. Documentation names none of them: a guide says which
// tool fetches what (GOPROXY, apt, opm), and the reader's machine decides where from.
var registryHosts = regexp.MustCompile(`(?i)\b(proxy\.golang\.org|sum\.golang\.org|pkg\.go\.dev|registry\.npmjs\.org|pypi\.org|crates\.io|hub\.docker\.com|registry-1\.docker\.io|ghcr\.io|quay\.io|luarocks\.org|opm\.openresty\.org)\b`)

// TestDocsNameNoRegistryHost: docs/caddy.md named the Go module proxy's host in its text (issue 21 item 7).
func TestDocsNameNoRegistryHost(t *testing.T) {
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("bootstrap/*/*.md")
	files = append(append(files, more...), "README.md", "bootstrap/README.md")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := registryHosts.FindString(line); m != "" {
				t.Errorf("%s:%d names the registry host %s; say which tool fetches it (GOPROXY, apt, ...) instead", f, i+1, m)
			}
		}
	}
}

// TestDocsEmergencyRotationBound: docs/production.md said purged keys leave the nodes "up to one rotation
// period later", while the engine caps every read's ttl at max_read_ttl (readttl_test.go): a 24 h rotation
// period still drops them within minutes. The paragraph must give the engine's bound (issue 21 item 7).
func TestDocsEmergencyRotationBound(t *testing.T) {
	b, err := os.ReadFile("docs/production.md")
	if err != nil {
		t.Fatal(err)
	}
	_, para, ok := strings.Cut(string(b), "- **Emergency rotation.**")
	if !ok {
		t.Fatal(`docs/production.md has no "- **Emergency rotation.**" paragraph`)
	}
	for _, end := range []string{"\n- ", "\n\n"} {
		if i := strings.Index(para, end); i >= 0 {
			para = para[:i]
		}
	}
	para = strings.Join(strings.Fields(para), " ")
	if strings.Contains(para, "up to one rotation period later") {
		t.Errorf("docs/production.md, Emergency rotation: says purged keys go %q; the engine bounds it by max_read_ttl", "up to one rotation period later")
	}
	if !strings.Contains(para, "`max_read_ttl`") || !strings.Contains(para, "default 5m") {
		t.Errorf("docs/production.md, Emergency rotation: want the bound `max_read_ttl` (default 5m) named; got %q", para)
	}
	if d := defaultMaxReadTTL.String(); d != "5m0s" {
		t.Errorf("the engine's default max_read_ttl is %s; docs/production.md says 5m", d)
	}
}
