package ticketkeys

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestVersionAgreesWithRegisterAndDocs holds the engine's Version, the
// default version bootstrap/register.sh registers and the versions the docs
// tell an operator to register or upgrade to to one value: Vault refuses a
// plugin whose reported version differs from the registered one, so any
// disagreement breaks registration or an upgrade done as documented. Only a
// rollback example may name another (the previous) version.
func TestVersionAgreesWithRegisterAndDocs(t *testing.T) {
	// register.sh's default, computed by the script's own line over version.go.
	script, err := os.ReadFile("bootstrap/register.sh")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^\s*version=\$\(sed [^\n]*version\.go"\)$`).Find(script)
	if line == nil {
		t.Fatal("bootstrap/register.sh: no line deriving the default version from version.go")
	}
	out, err := exec.Command("bash", "-c", "root=.; "+strings.TrimSpace(string(line))+`; printf %s "$version"`).Output()
	if err != nil {
		t.Fatalf("running register.sh's version line: %v", err)
	}
	if got := string(out); got != Version {
		t.Errorf("bootstrap/register.sh registers %q by default; version.go says %q", got, Version)
	}

	flagVersion := regexp.MustCompile("-(?:plugin-)?version=(v[0-9][^\\s`'\"]*)")
	registerV := regexp.MustCompile(`register\.sh -v (v[0-9][^\s` + "`" + `]*)`)
	checked := 0
	for _, doc := range []string{"README.md", "docs/production.md", "bootstrap/README.md"} {
		b, err := os.ReadFile(doc)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, m := range flagVersion.FindAllStringSubmatchIndex(text, -1) {
			checked++
			if v := text[m[2]:m[3]]; v != Version {
				t.Errorf("%s: %q registers or enables %s; version.go says %s", doc, text[m[0]:m[1]], v, Version)
			}
		}
		for _, m := range registerV.FindAllStringSubmatchIndex(text, -1) {
			checked++
			v := text[m[2]:m[3]]
			rollback := strings.Contains(strings.ToLower(text[max(0, m[0]-200):m[0]]), "roll back")
			switch {
			case rollback && v == Version:
				t.Errorf("%s: the rollback example registers %s, the version being built; it must name the previous release", doc, v)
			case !rollback && v != Version:
				t.Errorf("%s: %q registers %s; version.go says %s", doc, text[m[0]:m[1]], v, Version)
			}
		}
	}
	if checked < 5 {
		t.Fatalf("found only %d version mentions in the docs: the patterns no longer match them", checked)
	}
}
