//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// agentRetryCap is the bound the shipped Agent configuration puts on the pause between two tries of a
// failed window read (auto_auth's max_backoff, which Agent 1.21 gives its template retry), and
// agentRetrySlack what a try itself may take on a loaded 2-core machine.
const (
	agentRetryCap   = 5 * time.Second
	agentRetrySlack = 1500 * time.Millisecond
)

// outageProxy stands between Agent and Vault: it passes everything through, except that once armed,
// every read of the keyring answers 500 (as Vault does during an election) for outage, counted from the
// first read after arming. It records the time and status of every keyring read.
type outageProxy struct {
	keysPath string
	outage   time.Duration

	mu       sync.Mutex
	armed    bool
	start    time.Time // first read after arming: the outage begins
	attempts []proxyAttempt
}

type proxyAttempt struct {
	at     time.Time
	status int
}

func (p *outageProxy) handler(backend *url.URL) http.Handler {
	rp := httputil.NewSingleHostReverseProxy(backend)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, p.keysPath) {
			rp.ServeHTTP(w, r)
			return
		}
		now := time.Now()
		p.mu.Lock()
		fail := false
		if p.armed {
			if p.start.IsZero() {
				p.start = now
			}
			fail = now.Sub(p.start) < p.outage
		}
		status := http.StatusOK
		if fail {
			status = http.StatusInternalServerError
		}
		p.attempts = append(p.attempts, proxyAttempt{at: now, status: status})
		p.mu.Unlock()
		if fail {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintln(w, `{"errors":["local node not active but active cluster node not found (test: an election)"]}`)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

// snapshot returns the outage's start and the reads recorded so far.
func (p *outageProxy) snapshot() (time.Time, []proxyAttempt) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.start, append([]proxyAttempt(nil), p.attempts...)
}

// TestAgentRetryBoundedDuringOutage runs a real Vault Agent with the configuration bootstrap/agent renders
// (the one ticketkeys-agent-config prints) against a Vault whose keyring reads answer 500 for 60 s, and
// checks that Agent never leaves more than the configured cap (5 s, plus the time of a try) between two
// requests, during the outage and from its end to the first successful read. (Each try of Agent's template
// is up to 3 requests about 1 to 1.5 s apart: the Vault API client's own retries of a 500.) Agent 1.21's
// default cap is 1 minute: its tries after a failure pause 0.25, 0.5, 1, 2, 4, 8, 16, 32 s, so the stock
// configuration fails here with a 16 s pause (the ~18 s without a read that made TestClusterSnapshotRestore
// miss a key).
func TestAgentRetryBoundedDuringOutage(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	const keyring = "retry"
	createKeyring(t, s, keyring)

	backend, err := url.Parse(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &outageProxy{keysPath: "/v1/ticketkeys/keys/" + keyring, outage: 60 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy.handler(backend), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	dir := t.TempDir()
	roleIDFile, secretIDFile := appRoleFiles(t, s, keyring, "node-retry", dir)
	p := agent.Params{VaultAddr: "http://" + ln.Addr().String(), Keyring: keyring, RoleIDFile: roleIDFile,
		SecretIDFile: secretIDFile, Dir: dir, Command: []string{}}
	cfg, err := agent.Render(agent.Envoy, p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg, fmt.Sprintf("max_backoff = %q", agentRetryCap.String())) {
		t.Fatalf("the rendered Agent configuration does not set max_backoff = %q, the cap this test checks:\n%s", agentRetryCap, cfg)
	}
	files, err := agent.Files(agent.Envoy, p)
	if err != nil {
		t.Fatal(err)
	}
	// Without VAULT_ADDR in its environment (vaulttest.StartAgent sets it, and it overrides the
	// configuration's address): Agent talks to the proxy only.
	cfgFile := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a := vaulttest.StartAgentCommand(t, s.VaultBin, nil, "-config="+cfgFile)
	a.WaitFor(t, 60*time.Second, "first render", func() bool {
		_, err := os.Stat(files[0])
		return err == nil
	})

	proxy.mu.Lock()
	proxy.armed = true
	proxy.mu.Unlock()
	// Agent reads again within a ttl (at most the 10 s period); the outage then lasts 60 s; the first read
	// after it must come within the cap.
	deadline := time.Now().Add(agentPeriod + proxy.outage + agentRetryCap + 30*time.Second)
	var start time.Time
	var attempts []proxyAttempt
	for {
		start, attempts = proxy.snapshot()
		if !start.IsZero() && len(attempts) > 0 && attempts[len(attempts)-1].status == http.StatusOK &&
			attempts[len(attempts)-1].at.After(start) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful keyring read after the outage in time; reads: %s\n--- agent log ---\n%s",
				describeAttempts(start, attempts), a.LogTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}

	var during []proxyAttempt
	for _, at := range attempts {
		if !at.at.Before(start) {
			during = append(during, at)
		}
	}
	failed := 0
	for i, at := range during {
		if at.status != http.StatusOK {
			failed++
		}
		if i == 0 {
			continue
		}
		if gap := at.at.Sub(during[i-1].at); gap > agentRetryCap+agentRetrySlack {
			t.Errorf("Agent waited %s between its tries at +%s and +%s of the outage: the cap is %s (+%s for a try)",
				gap.Round(10*time.Millisecond), during[i-1].at.Sub(start).Round(10*time.Millisecond),
				at.at.Sub(start).Round(10*time.Millisecond), agentRetryCap, agentRetrySlack)
		}
	}
	// The outage must have pushed Agent's backoff to its cap, or the test proved nothing.
	if failed < 6 {
		t.Errorf("only %d failed reads in a %s outage: the backoff never reached its cap", failed, proxy.outage)
	}
	recovered := during[len(during)-1].at.Sub(start.Add(proxy.outage))
	t.Logf("outage of %s: %d failed tries, then the first successful read %s after Vault answered again; tries: %s",
		proxy.outage, failed, recovered.Round(10*time.Millisecond), describeAttempts(start, during))
	if recovered > agentRetryCap+agentRetrySlack {
		t.Errorf("Agent read the keyring %s after Vault answered again: the cap is %s", recovered, agentRetryCap)
	}
}

// describeAttempts lists the reads as +offset from the outage's start and status.
func describeAttempts(start time.Time, attempts []proxyAttempt) string {
	var b strings.Builder
	for _, at := range attempts {
		fmt.Fprintf(&b, "+%s:%d ", at.at.Sub(start).Round(10*time.Millisecond), at.status)
	}
	return strings.TrimSpace(b.String())
}
