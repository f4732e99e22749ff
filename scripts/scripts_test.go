// Package scripts holds the project's helper scripts; its tests run them as
// `make test` and .ci/run do.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// notInstalled returns a real Debian package name that dpkg does not list as
// installed on this machine, or skips when every candidate is installed.
func notInstalled(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"cowsay", "sl", "fortune-mod", "bsdgames", "figlet"} {
		out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status}", p).Output()
		if err != nil || strings.TrimSpace(string(out)) != "installed" {
			return p
		}
	}
	t.Skip("every candidate package is installed; cannot test the missing-package path")
	return ""
}

func runDeps(t *testing.T, list string, asNobody bool) (stderr string, err error) {
	t.Helper()
	script, err := filepath.Abs("debian-deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if asNobody {
		cmd = exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", script)
	} else {
		cmd = exec.Command(script)
	}
	cmd.Env = append(os.Environ(), "TICKETKEYS_DEBIAN_PACKAGES="+list)
	var out strings.Builder
	cmd.Stderr = &out
	cmd.Stdout = &out
	err = cmd.Run()
	return out.String(), err
}

// The package list that make test and .ci/run install is installed here (make
// test ran debian-deps.sh before this test), and a second run is silent.
func TestDebianDepsInstalledIsSilent(t *testing.T) {
	out, err := runDeps(t, "debian-packages.txt", false)
	if err != nil || out != "" {
		t.Fatalf("debian-deps.sh with every package installed: err %v, output %q; want success and no output", err, out)
	}
}

// A user who is not root and lacks a package is stopped at once with the
// missing package named and the one command to run.
func TestDebianDepsNotRootNamesTheCommand(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to drop to nobody")
	}
	missing := notInstalled(t)
	// t.TempDir's parent is private to root; nobody must read the list.
	dir, err := os.MkdirTemp("", "debian-deps-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "packages.txt")
	if err := os.WriteFile(list, []byte("# test list\nbash\n"+missing+"  # not installed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runDeps(t, list, true)
	if err == nil {
		t.Fatalf("debian-deps.sh as nobody with %s missing succeeded; output %q", missing, out)
	}
	for _, want := range []string{"not installed: " + missing, "sudo ", "scripts/debian-deps.sh"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q does not contain %q", out, want)
		}
	}
	if strings.Contains(out, "bash "+missing) || strings.Contains(out, "installed: bash") {
		t.Errorf("output names the installed package bash as missing: %q", out)
	}
}

// An unreadable list is an error that names the file.
func TestDebianDepsMissingList(t *testing.T) {
	list := filepath.Join(t.TempDir(), "nope.txt")
	out, err := runDeps(t, list, false)
	if err == nil || !strings.Contains(out, list) {
		t.Fatalf("debian-deps.sh with no list: err %v, output %q; want a failure naming %s", err, out, list)
	}
}
