package vaulttest

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// agentStartCheck is how long StartAgent watches a new agent for an
// immediate exit (a config error), so that such an error fails the test at
// once with the agent's log instead of as a timeout later.
const agentStartCheck = 500 * time.Millisecond

// StartAgent writes configHCL to a file in a new temporary directory and
// runs `vault agent -config=FILE` (`bao agent` on OpenBao) with s.VaultBin
// and VAULT_ADDR=s.Addr (and BAO_ADDR on OpenBao, which `bao` reads first). The
// agent is stopped by its PID when t ends; its log is printed when t fails.
// The config must name everything the agent needs (auto_auth, templates,
// files); paths in it should live in t.TempDir().
func StartAgent(t testing.TB, s *Server, configHCL string) *Process {
	t.Helper()
	env := []string{"VAULT_ADDR=" + s.Addr}
	if s.Kind == OpenBao {
		env = append(env, "BAO_ADDR="+s.Addr)
	}
	return startAgent(t, s.VaultBin, configHCL, env)
}

// startAgent runs `vault agent` from vaultBin with configHCL and the extra
// environment env; see StartAgent.
func startAgent(t testing.TB, vaultBin, configHCL string, env []string) *Process {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfg, []byte(configHCL), 0o600); err != nil {
		t.Fatalf("vaulttest: write agent config: %v", err)
	}
	return runAgent(t, vaultBin, []string{"agent", "-config=" + cfg}, env, filepath.Join(dir, "agent.log"))
}

// StartAgentCommand runs `vault agent ARGS...` with vaultBin exactly as a
// guide gives the command line (for example -config=/etc/.../agent.hcl), with
// no VAULT_* variable in its environment, so the configuration's own vault
// address is the one used; env (KEY=VALUE) is added to the agent's
// environment, a value replacing the base environment's (PATH, say: the
// commands the agent's templates run look themselves up in it). Otherwise as
// StartAgent: its log goes to a new temporary directory, it is stopped by its
// PID when t ends, and an immediate exit fails the test.
func StartAgentCommand(t testing.TB, vaultBin string, env []string, args ...string) *Process {
	t.Helper()
	return runAgent(t, vaultBin, append([]string{"agent"}, args...), env, filepath.Join(t.TempDir(), "agent.log"))
}

// runAgent starts `vaultBin args...` (an agent command) with the extra
// environment env and its log at logPath; see StartAgent.
func runAgent(t testing.TB, vaultBin string, args, env []string, logPath string) *Process {
	t.Helper()
	p, err := startProcess(filepath.Base(vaultBin)+" agent", vaultBin, args, env, logPath)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	p.logTailOnFailure(t)
	t.Cleanup(p.Stop)
	select {
	case <-p.Done():
		t.Fatalf("vaulttest: vault agent (pid %d) exited at start: %v\n%s", p.PID, p.ExitError(), p.LogTail(logTailLines))
	case <-time.After(agentStartCheck):
	}
	return p
}

// WaitFor polls cond every 100 ms until it returns true, and fails the test
// with the process log if the process exits or timeout passes first. what
// describes the awaited condition for the failure message.
func (p *Process) WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if p.Exited() {
			t.Fatalf("vaulttest: %s (pid %d) exited while waiting for %s: %v\n%s", p.Name, p.PID, what, p.ExitError(), p.LogTail(logTailLines))
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: %s (pid %d): no %s within %s\n%s", p.Name, p.PID, what, timeout, p.LogTail(logTailLines))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
