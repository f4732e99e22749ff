package main

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

// Every flag is documented in bootstrap/agent/README.md, and the README
// documents no flag the command does not have.
func TestReadmeListsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var req request
	fs := newFlags(&req, io.Discard)
	declared := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		declared[f.Name] = true
		if !strings.Contains(string(readme), "| `-"+f.Name+"`") {
			t.Errorf("bootstrap/agent/README.md has no row for flag -%s (%s)", f.Name, f.Usage)
		}
	})
	for _, line := range strings.Split(string(readme), "\n") {
		if name, ok := strings.CutPrefix(line, "| `-"); ok {
			name, _, _ = strings.Cut(name, "`")
			name, _, _ = strings.Cut(name, " ")
			if !declared[name] {
				t.Errorf("bootstrap/agent/README.md documents flag -%s, which the command does not have", name)
			}
		}
	}
}

func TestRunRendersAndRejects(t *testing.T) {
	for _, c := range []struct {
		name       string
		args       []string
		wantStatus int
		wantOut    string
		wantErr    string
	}{
		{"haproxy config", []string{"-kind", "haproxy", "-keyring", "api", "-vault", "https://127.0.0.1:8200"}, 0, `secret "ticketkeys/keys/api?format=haproxy"`, ""},
		{"policy", []string{"-policy", "-keyring", "api"}, 0, `path "ticketkeys/keys/api"`, ""},
		{"unknown kind", []string{"-kind", "apache"}, 2, "", "apache"},
		{"stray argument", []string{"-kind", "nginx", "web"}, 2, "", `unexpected argument "web"`},
		{"unknown flag", []string{"-keyrng", "web"}, 2, "", "keyrng"},
		{"remote plain http", []string{"-kind", "nginx", "-vault", "http://vault.example.com:8200"}, 2, "", "plain http:// only to a loopback address"},
		{"loopback plain http", []string{"-kind", "nginx", "-vault", "http://127.0.0.1:8100"}, 0, `address = "http://127.0.0.1:8100"`, ""},
		{"remote plain http allowed", []string{"-kind", "nginx", "-insecure-http", "-vault", "http://vault.example.com:8200"}, 0, `address = "http://vault.example.com:8200"`, "INSECURE (-insecure-http)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut strings.Builder
			if got := run(c.args, &out, &errOut); got != c.wantStatus {
				t.Fatalf("status %d, want %d; stderr %q", got, c.wantStatus, errOut.String())
			}
			if !strings.Contains(out.String(), c.wantOut) || !strings.Contains(errOut.String(), c.wantErr) {
				t.Errorf("stdout %q stderr %q; want stdout containing %q and stderr containing %q", out.String(), errOut.String(), c.wantOut, c.wantErr)
			}
		})
	}
}
