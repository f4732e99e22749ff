package vaulttest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Kind is the server a test runs against: Vault or OpenBao, its open-source
// fork. Both serve the same API, run the same plugin binary and take the same
// CLI commands and flags; they differ in what Kind's methods say.
type Kind string

const (
	// Vault is HashiCorp Vault (the pinned VaultVersion).
	Vault Kind = "vault"
	// OpenBao is OpenBao (the pinned OpenBaoVersion), built by
	// scripts/openbao-build.sh.
	OpenBao Kind = "openbao"
)

// OpenBaoVersion is the OpenBao release the tests run against. It must match
// scripts/openbao-build.sh.
const OpenBaoVersion = "2.6.2"

// ServersEnv names the servers the tests that run on every server
// (ForEachServer) run on: a comma-separated list of kinds, by default
// "vault,openbao". `make test` sets it to both; TICKETKEYS_SERVERS=vault runs
// the Vault half only.
const ServersEnv = "TICKETKEYS_SERVERS"

// CLI is the name of the server's command-line tool, which is also its Agent
// (`vault agent`, `bao agent`) and the name its processes are logged under.
func (k Kind) CLI() string {
	if k == OpenBao {
		return "bao"
	}
	return "vault"
}

// Version is the pinned release of the server, as sys/health reports it
// ("1.21.0", "2.6.2").
func (k Kind) Version() string {
	if k == OpenBao {
		return OpenBaoVersion
	}
	return strings.TrimPrefix(VaultVersion, "v")
}

// String is the kind's name, used as the subtest name of ForEachServer.
func (k Kind) String() string { return string(k) }

// Title is the product name for messages and docs: "Vault" or "OpenBao".
func (k Kind) Title() string {
	if k == OpenBao {
		return "OpenBao"
	}
	return "Vault"
}

// AuditDeclared is true when the server refuses to enable audit devices
// over the API (OpenBao: "cannot enable audit device via API; use
// declarative, config-based audit device management instead"), so that an
// audit device is an `audit` stanza of the server's configuration file,
// applied at start and on SIGHUP.
func (k Kind) AuditDeclared() bool { return k == OpenBao }

// CLIEnv is the environment a CLI of this server needs to reach addr with
// token: VAULT_ADDR and VAULT_TOKEN, which both CLIs read, and for OpenBao
// also BAO_ADDR and BAO_TOKEN, which `bao` reads first (a BAO_* variable left
// in the caller's environment would otherwise win).
func (k Kind) CLIEnv(addr, token string) []string {
	env := []string{"VAULT_ADDR=" + addr, "VAULT_TOKEN=" + token}
	if k == OpenBao {
		env = append(env, "BAO_ADDR="+addr, "BAO_TOKEN="+token)
	}
	return env
}

// Binary returns the path of the pinned server binary of kind k, or fails
// the test saying how to get one: VaultBinary for Vault, OpenBaoBinary for
// OpenBao.
func (k Kind) Binary(t testing.TB) string {
	t.Helper()
	path, err := k.binaryPath()
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return path
}

func (k Kind) binaryPath() (string, error) {
	switch k {
	case Vault:
		return vaultBinaryPath()
	case OpenBao:
		return cachedBinaryPath("BAO_BIN", "openbao-"+OpenBaoVersion, "bao", "scripts/openbao-build.sh (a cold build takes ~7 minutes of CPU)")
	}
	return "", fmt.Errorf("unknown server kind %q: want %q or %q", k, Vault, OpenBao)
}

// OpenBaoBinary returns the path of the pinned OpenBao binary, or fails the
// test saying how to get one. It is $BAO_BIN when set, otherwise
// ${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}/openbao-2.6.2/bao, which is
// where scripts/openbao-build.sh puts it.
func OpenBaoBinary(t testing.TB) string {
	t.Helper()
	return OpenBao.Binary(t)
}

// cachedBinaryPath is $envName when set, otherwise cacheDir/file under the
// build cache; it must be an executable file. build says how to make it.
func cachedBinaryPath(envName, cacheDir, file, build string) (string, error) {
	path := os.Getenv(envName)
	from := envName
	if path == "" {
		cache := os.Getenv("TICKETKEYS_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("no %s, no TICKETKEYS_CACHE and no home directory: %w", envName, err)
			}
			cache = filepath.Join(home, ".cache", "ticketkeys")
		}
		path = filepath.Join(cache, cacheDir, file)
		from = "the build cache"
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s binary %q (from %s) is missing: run %s or set %s: %w", file, path, from, build, envName, err)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s binary %q (from %s) is not an executable file (mode %v)", file, path, from, fi.Mode())
	}
	return path, nil
}

// Servers returns the kinds named by TICKETKEYS_SERVERS (default: Vault and
// OpenBao), failing the test on an unknown name.
func Servers(t testing.TB) []Kind {
	t.Helper()
	kinds, err := parseServers(os.Getenv(ServersEnv))
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return kinds
}

func parseServers(list string) ([]Kind, error) {
	if strings.TrimSpace(list) == "" {
		return []Kind{Vault, OpenBao}, nil
	}
	var kinds []Kind
	for _, name := range strings.Split(list, ",") {
		k := Kind(strings.TrimSpace(name))
		if k != Vault && k != OpenBao {
			return nil, fmt.Errorf("%s=%q: server %q is not %q or %q", ServersEnv, list, k, Vault, OpenBao)
		}
		kinds = append(kinds, k)
	}
	return kinds, nil
}

// ForEachServer runs body once per server of Servers, each as a subtest
// named after the kind ("vault", "openbao"): one test body, proven on every
// server. A server whose binary is missing fails its subtest saying how to
// build it.
func ForEachServer(t *testing.T, body func(t *testing.T, kind Kind)) {
	t.Helper()
	for _, k := range Servers(t) {
		t.Run(k.String(), func(t *testing.T) { body(t, k) })
	}
}

// ForEachServerParallel is ForEachServer with the servers' subtests run side
// by side, for a test whose body mostly waits (for an Agent's render, a
// rotation, an activation) rather than measuring what CPU time buys: the
// OpenBao half then adds little wall time to `make test`. Each subtest is
// started by t.Run from a goroutine of its own, as servertest.EachNginx does,
// not by t.Parallel, so that go test's -parallel limit (GOMAXPROCS, 2 here)
// does not queue the halves, or their own parallel subtests, behind each
// other; it returns when every subtest has finished. Each body starts its own
// server and must share no port or file with the other.
func ForEachServerParallel(t *testing.T, body func(t *testing.T, kind Kind)) {
	t.Helper()
	var wg sync.WaitGroup
	for _, k := range Servers(t) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(k.String(), func(t *testing.T) { body(t, k) })
		}()
	}
	wg.Wait()
}
