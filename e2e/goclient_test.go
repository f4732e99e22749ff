//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/resumption"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

const (
	goKeyring       = "goweb"
	goPeriod        = 8 * time.Second
	goRetain        = 24 * time.Second
	goReadPolicy    = `path "ticketkeys/keys/goweb" { capabilities = ["read"] }`
	goMinResumeRate = 0.999
)

// goNode is one Go TLS server with its own Source and its own Vault client.
type goNode struct {
	src  *client.Source
	addr string
}

// vaultClient returns a new API client for s with token tok, with a short
// timeout so that a stopped server fails reads quickly.
func vaultClient(t *testing.T, s *vaulttest.Server, tok string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.Timeout = 5 * time.Second
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	return c
}

// startGoNode starts an HTTPS server (http.Server.ServeTLS, which clones its
// config) whose ticket keys come from src.
func startGoNode(t *testing.T, cert *testcert.Cert, src *client.Source) goNode {
	t.Helper()
	cfg := cert.ServerConfig()
	if err := src.ConfigureServer(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig:         cfg,
		ReadHeaderTimeout: 5 * time.Second,
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") }),
		// Connections cut by the end of a load run log handshake errors;
		// the load client counts real failures.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return goNode{src: src, addr: ln.Addr().String()}
}

// runLoad runs the resumption client against addrs, pinned to one TLS version.
func runLoad(t *testing.T, ctx context.Context, addrs []string, cert *testcert.Cert, v uint16, d time.Duration, seed int64) resumption.Result {
	t.Helper()
	res, err := resumption.Run(ctx, resumption.Config{
		Addrs: addrs, ServerName: testcert.ServerName, RootCAs: cert.Pool,
		MinVersion: v, MaxVersion: v,
		Users: 40, Concurrency: 2, Interval: 3 * time.Millisecond,
		MaxConnections: 60000, MaxDuration: d, Seed: seed,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func firstFailures(r resumption.Result, n int) []string {
	var out []string
	for _, c := range r.Conns {
		if !c.Aborted && (c.HandshakeErr != "" || c.RequestErr != "") {
			out = append(out, fmt.Sprintf("%s node=%d %s%s", c.Start.Format("15:04:05.000"), c.Addr, c.HandshakeErr, c.RequestErr))
			if len(out) == n {
				break
			}
		}
	}
	return out
}

// waitFor polls cond every 100ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGoClientFleet is the end-to-end proof of the Go client against a real
// Vault server with the plugin:
//
//  1. three Go TLS servers, each with its own Source (one logged in with
//     AppRole through KeepLogin with a token that expires every few
//     seconds), serve through at least three real rotations while a client
//     with a session cache per simulated user connects to a random server
//     every time: the share of offered tickets that resume is >= 0.999 in
//     TLS 1.3 and in TLS 1.2, with no failed handshake;
//  2. Vault is stopped a few seconds before an activation: every node still
//     switches to the pre-published key at the activation time, reads fail
//     meanwhile, and no handshake fails;
//  3. Vault is restarted: every Source recovers by itself and cross-node
//     resumption is back at >= 0.999.
//
// It runs on every server (vaulttest.ForEachServer): Vault and OpenBao, which
// the client reaches through Vault's Go API client as it reaches Vault.
func TestGoClientFleet(t *testing.T) { vaulttest.ForEachServer(t, testGoClientFleet) }

func testGoClientFleet(t *testing.T, server vaulttest.Kind) {
	s := vaulttest.Start(t, vaulttest.WithServer(server))
	if _, err := s.Client.Logical().Write("ticketkeys/keys/"+goKeyring, map[string]any{
		"rotation_period": goPeriod.String(),
		"retain":          goRetain.String(),
	}); err != nil {
		t.Fatalf("create keyring: %v", err)
	}
	s.WritePolicy(t, "goweb-read", goReadPolicy)
	cert := testcert.New(t, testcert.ECDSAP256)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := []client.Option{client.WithLogger(logger), client.WithRetryBackoff(200*time.Millisecond, 2*time.Second)}

	// Errors the constructor must report against the real server. A 403 is
	// retried until the deadline (an Agent sidecar may not be ready yet).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	_, err := client.NewSource(short, vaultClient(t, s, s.NewToken(t, "default")), "ticketkeys", goKeyring, opts...)
	cancelShort()
	var re *api.ResponseError
	if !errors.Is(err, client.ErrPermissionDenied) || !errors.As(err, &re) || re.StatusCode != 403 {
		t.Fatalf("token without the policy: got %v, want ErrPermissionDenied wrapping Vault's 403", err)
	}
	if _, err := client.NewSource(ctx, vaultClient(t, s, s.RootToken), "ticketkeys", "missing", opts...); !errors.Is(err, client.ErrKeyringNotFound) {
		t.Fatalf("missing keyring: got %v, want ErrKeyringNotFound", err)
	}

	// Node 0 logs in with AppRole; its tokens live 4s (max 8s), so KeepLogin
	// renews and logs in again several times during the test.
	roleID, secretID := s.EnableAppRole(t, "goweb-node", "goweb-read")
	if _, err := s.Client.Logical().Write("auth/approle/role/goweb-node", map[string]any{"token_ttl": "4s", "token_max_ttl": "8s"}); err != nil {
		t.Fatalf("shorten approle token ttl: %v", err)
	}
	loginClient := vaultClient(t, s, "")
	var auth *approle.AppRoleAuth
	auth, err = approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID})
	if err != nil {
		t.Fatal(err)
	}
	login, err := client.KeepLogin(ctx, loginClient, auth, opts...)
	if err != nil {
		t.Fatalf("KeepLogin: %v", err)
	}
	t.Cleanup(func() { _ = login.Close() })

	var nodes []goNode
	var addrs []string
	for i := 0; i < 3; i++ {
		vc := loginClient
		if i > 0 {
			vc = vaultClient(t, s, s.NewToken(t, "goweb-read"))
		}
		src, err := client.NewSource(ctx, vc, "ticketkeys", goKeyring, opts...)
		if err != nil {
			t.Fatalf("node %d: NewSource: %v", i, err)
		}
		t.Cleanup(func() { _ = src.Close() })
		n := startGoNode(t, cert, src)
		nodes = append(nodes, n)
		addrs = append(addrs, n.addr)
	}

	// Watch every node's current key while the load runs.
	var (
		mu       sync.Mutex
		seen     = make([]map[string]bool, len(nodes))
		disagree int
		polls    int
	)
	for i := range seen {
		seen[i] = map[string]bool{}
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			polls++
			var ids []string
			for i, n := range nodes {
				st := n.src.Status()
				seen[i][st.CurrentID] = true
				ids = append(ids, st.CurrentID)
			}
			if ids[0] != ids[1] || ids[1] != ids[2] {
				disagree++
			}
			mu.Unlock()
		}
	}()

	// Phase 1: at least three rotations under load, both TLS versions at once.
	phase1 := time.Duration(3.5 * float64(goPeriod))
	var wg sync.WaitGroup
	results := map[uint16]resumption.Result{}
	var rmu sync.Mutex
	for i, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runLoad(t, context.Background(), addrs, cert, v, phase1, int64(i+1))
			rmu.Lock()
			results[v] = r
			rmu.Unlock()
		}()
	}
	wg.Wait()
	stopWatch()
	<-watchDone
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		r := results[v]
		t.Logf("phase 1 %s: %s p50=%s p99=%s", tls.VersionName(v), r, r.LatencyPercentile(50), r.LatencyPercentile(99))
		if r.HandshakeFailures != 0 || r.RequestFailures != 0 {
			t.Errorf("phase 1 %s: failures: %v", tls.VersionName(v), firstFailures(r, 5))
		}
		if r.Offered < 500 {
			t.Errorf("phase 1 %s: only %d offered tickets, too few to measure 0.999", tls.VersionName(v), r.Offered)
		}
		if rate := r.ResumeRate(); rate < goMinResumeRate {
			t.Errorf("phase 1 %s: resume rate %.5f (%d/%d), want >= %.3f", tls.VersionName(v), rate, r.Resumed, r.Offered, goMinResumeRate)
		}
	}
	mu.Lock()
	for i := range nodes {
		delete(seen[i], "")
		if len(seen[i]) < 4 {
			t.Errorf("phase 1: node %d used %d distinct current keys, want >= 4 (three rotations)", i, len(seen[i]))
		}
	}
	t.Logf("phase 1: keys seen per node %d/%d/%d; polls %d, polls with nodes disagreeing (at a boundary) %d",
		len(seen[0]), len(seen[1]), len(seen[2]), polls, disagree)
	if disagree > 3 {
		t.Errorf("phase 1: nodes disagreed on the current key in %d of %d polls", disagree, polls)
	}
	mu.Unlock()
	if n, _ := login.Logins(); n < 2 {
		t.Errorf("KeepLogin: %d logins after %s with an 8s max TTL, want >= 2", n, phase1)
	}
	if t.Failed() {
		return
	}

	// Phase 2: stop Vault shortly before an activation.
	var activation time.Time
	waitFor(t, 2*goPeriod, "every node to know the same next activation at least 3s ahead", func() bool {
		activation = nodes[0].src.Status().NextActivation
		if activation.IsZero() || time.Until(activation) < 3*time.Second {
			return false
		}
		for _, n := range nodes[1:] {
			if !n.src.Status().NextActivation.Equal(activation) {
				return false
			}
		}
		return true
	})
	waitFor(t, goPeriod, "3s before the activation", func() bool { return time.Until(activation) <= 3*time.Second })
	errsBefore := make([]uint64, len(nodes))
	idsBefore := make([]string, len(nodes))
	for i, n := range nodes {
		st := n.src.Status()
		errsBefore[i], idsBefore[i] = st.RefreshErrors, st.CurrentID
	}
	s.Stop()
	stoppedAt := time.Now()
	t.Logf("phase 2: vault stopped %s before the activation at %s", activation.Sub(stoppedAt).Round(time.Millisecond), activation.Format(time.RFC3339))
	outage := runLoad(t, context.Background(), addrs, cert, tls.VersionTLS13, time.Until(activation)+2*time.Second, 7)
	t.Logf("phase 2 (vault down, across the activation): %s", outage)
	if outage.HandshakeFailures != 0 || outage.RequestFailures != 0 {
		t.Errorf("phase 2: failures with vault down: %v", firstFailures(outage, 5))
	}
	if rate := outage.ResumeRate(); rate < goMinResumeRate {
		t.Errorf("phase 2: resume rate %.5f (%d/%d) across the activation with vault down, want >= %.3f", rate, outage.Resumed, outage.Offered, goMinResumeRate)
	}
	after := outage.Between(activation, activation.Add(2*time.Second))
	if after.Offered < 20 || after.Resumed != after.Offered {
		t.Errorf("phase 2: after the activation %d of %d offered tickets resumed, want all (and >= 20)", after.Resumed, after.Offered)
	}
	var switched string
	for i, n := range nodes {
		st := n.src.Status()
		if st.Exhausted || !st.CurrentNotBefore.Equal(activation) || st.CurrentID == idsBefore[i] {
			t.Errorf("phase 2: node %d did not switch at %s (exhausted=%v current_not_before=%s changed=%v)",
				i, activation.Format(time.RFC3339), st.Exhausted, st.CurrentNotBefore.Format(time.RFC3339), st.CurrentID != idsBefore[i])
		}
		if i == 0 {
			switched = st.CurrentID
		} else if st.CurrentID != switched {
			t.Errorf("phase 2: node %d switched to a different key than node 0", i)
		}
	}
	// Each node re-reads at the window's ttl plus jitter after the change, which can fall after the load
	// above ends: give it up to one period (Vault is still down) to report its failed read.
	waitFor(t, goPeriod, "every node to report a failed read while vault is down", func() bool {
		for i, n := range nodes {
			if st := n.src.Status(); st.RefreshErrors == errsBefore[i] || st.LastError == nil {
				return false
			}
		}
		return true
	})

	// Phase 3: restart Vault; the sources recover by themselves.
	s.Restart(t)
	restartedAt := time.Now()
	t.Logf("phase 3: vault back after %s", restartedAt.Sub(stoppedAt).Round(time.Millisecond))
	waitFor(t, 60*time.Second, "every source to read a good window again", func() bool {
		for _, n := range nodes {
			st := n.src.Status()
			if st.LastError != nil || st.LastRefresh.Before(restartedAt) || st.Exhausted {
				return false
			}
		}
		return true
	})
	t.Logf("phase 3: all sources recovered %s after the restart", time.Since(restartedAt).Round(time.Millisecond))
	// Let tickets issued under node-local keys (if the restart outlasted the
	// schedule) age out of the users' caches: one round of connections.
	warm := runLoad(t, context.Background(), addrs, cert, tls.VersionTLS13, 2*time.Second, 8)
	if warm.HandshakeFailures != 0 {
		t.Errorf("phase 3 warm-up: failures: %v", firstFailures(warm, 5))
	}
	rec := runLoad(t, context.Background(), addrs, cert, tls.VersionTLS13, goPeriod+2*time.Second, 9)
	t.Logf("phase 3 (recovered): %s", rec)
	if rec.HandshakeFailures != 0 || rec.RequestFailures != 0 {
		t.Errorf("phase 3: failures: %v", firstFailures(rec, 5))
	}
	if rate := rec.ResumeRate(); rate < goMinResumeRate {
		t.Errorf("phase 3: resume rate %.5f (%d/%d) after recovery, want >= %.3f", rate, rec.Resumed, rec.Offered, goMinResumeRate)
	}
	for i, n := range nodes {
		st := n.src.Status()
		// Next hits stay 0 here: the nodes share one clock, so none runs
		// ahead of the others (TestNextKeyDecrypts covers that case).
		t.Logf("node %d: refreshes=%d refresh_errors=%d tickets=%+v", i, st.Refreshes, st.RefreshErrors, st.Tickets)
	}
	if n, _ := login.Logins(); n < 3 {
		t.Errorf("KeepLogin: %d logins in total, want >= 3 (tokens live at most 8s)", n)
	}

	t.Run("purge-propagation", func(t *testing.T) { checkPurgePropagation(t, s, nodes, cert) })
	t.Run("purge-propagation-ttl-cap", func(t *testing.T) { checkPurgeWithinReadTTLCap(t, s) })
	t.Run("example-server", func(t *testing.T) { checkExampleServer(t, s, cert, roleID, secretID) })
}

// checkPurgePropagation measures, against the real engine, the time from
// `rotate mode=now purge_previous=true` until every Go node has dropped the
// purged keys: first as the nodes find out by themselves (their next read,
// at the window's ttl, here at most one rotation period; with a ttl cap on
// the engine, at most that cap), then with Source.Refresh called on every
// node right after the rotation (what an operator's tooling does in an
// emergency). A ticket issued under a purged key resumes on no node after.
func checkPurgePropagation(t *testing.T, s *vaulttest.Server, nodes []goNode, cert *testcert.Cert) {
	for _, refresh := range []bool{false, true} {
		how := "ttl"
		if refresh {
			how = "Refresh"
		}
		// Tickets under the key that is current now, which the purge ends:
		// one client cache per node.
		caches := make([]tls.ClientSessionCache, len(nodes))
		resumed := func(cache tls.ClientSessionCache, addr string) bool {
			cfg := cert.ClientConfig()
			cfg.ClientSessionCache = cache
			c, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatalf("%s: handshake with %s: %v", how, addr, err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, _ = c.Read(make([]byte, 1)) // the TLS 1.3 ticket follows the handshake
			return c.ConnectionState().DidResume
		}
		for i := range caches {
			caches[i] = tls.NewLRUClientSessionCache(1)
			resumed(caches[i], nodes[0].addr)
		}
		rotatedAt := time.Now()
		resp, err := s.Client.Logical().Write("ticketkeys/keys/"+goKeyring+"/rotate", map[string]any{"mode": "now", "purge_previous": true})
		if err != nil || resp == nil {
			t.Fatalf("%s: rotate mode=now purge_previous=true: %v", how, err)
		}
		purged := purgedIDs(t, s, rotatedAt)
		if len(purged) == 0 {
			t.Fatalf("%s: history lists no key purged by the rotation", how)
		}
		if refresh {
			var wg sync.WaitGroup
			for i, n := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := n.src.Refresh(context.Background()); err != nil {
						t.Errorf("Refresh on node %d: %v", i, err)
					}
				}()
			}
			wg.Wait()
			// Refresh returns once the new window is in use.
			for i, n := range nodes {
				if holdsAny(n.src.Window(), purged) {
					t.Errorf("node %d still holds a purged key after Refresh returned", i)
				}
			}
		}
		dropped := make([]time.Duration, len(nodes))
		waitFor(t, 2*goPeriod+5*time.Second, how+": every node to drop the purged keys", func() bool {
			all := true
			for i, n := range nodes {
				if dropped[i] != 0 {
					continue
				}
				if holdsAny(n.src.Window(), purged) {
					all = false
				} else {
					dropped[i] = time.Since(rotatedAt)
				}
			}
			return all
		})
		worst := max(dropped[0], dropped[1], dropped[2])
		t.Logf("purge propagation (%s): every Go node dropped the %d purged keys %s after rotate mode=now purge_previous=true (per node %v)",
			how, len(purged), worst.Round(time.Millisecond), dropped)
		for i, n := range nodes {
			if resumed(caches[i], n.addr) {
				t.Errorf("%s: a ticket under a purged key resumed on node %d", how, i)
			}
		}
	}
}

// checkPurgeWithinReadTTLCap measures emergency propagation where the
// rotation period is long (1h, so a ttl could be up to an hour): with the
// mount's max_read_ttl at its minimum (5s), three Sources following the ttl
// alone drop the purged key within the cap plus their jitter. An engine
// without max_read_ttl skips it (Refresh is then the bound, see
// checkPurgePropagation).
func checkPurgeWithinReadTTLCap(t *testing.T, s *vaulttest.Server) {
	const keyring, readTTLCap = "gocap", 5 * time.Second
	if _, err := s.Client.Logical().Write("ticketkeys/config", map[string]any{"max_read_ttl": int(readTTLCap / time.Second)}); err != nil {
		t.Fatalf("set max_read_ttl: %v", err)
	}
	cfg, err := s.Client.Logical().Read("ticketkeys/config")
	if err != nil || cfg == nil {
		t.Fatalf("read config: %v", err)
	}
	if _, ok := cfg.Data["max_read_ttl"]; !ok {
		t.Skip("the engine has no max_read_ttl: emergency propagation is bounded by Refresh (purge-propagation)")
	}
	t.Cleanup(func() { _, _ = s.Client.Logical().Write("ticketkeys/config", map[string]any{"max_read_ttl": 300}) })
	if _, err := s.Client.Logical().Write("ticketkeys/keys/"+keyring, map[string]any{"rotation_period": "1h", "retain": "2h"}); err != nil {
		t.Fatalf("create keyring: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var srcs []*client.Source
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		src, err := client.NewSource(ctx, vaultClient(t, s, s.RootToken), "ticketkeys", keyring, client.WithLogger(logger))
		cancel()
		if err != nil {
			t.Fatalf("NewSource %d: %v", i, err)
		}
		t.Cleanup(func() { _ = src.Close() })
		srcs = append(srcs, src)
	}
	if w := srcs[0].Window(); w.TTL > readTTLCap {
		t.Fatalf("read ttl %s, want at most max_read_ttl %s", w.TTL, readTTLCap)
	}
	purgedID := srcs[0].Status().CurrentID
	rotatedAt := time.Now()
	if _, err := s.Client.Logical().Write("ticketkeys/keys/"+keyring+"/rotate", map[string]any{"mode": "now", "purge_previous": true}); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	dropped := make([]time.Duration, len(srcs))
	// Without the cap the ttl would be up to an hour: 3 caps tell them apart
	// on a busy machine.
	waitFor(t, 3*readTTLCap, "every Source to drop the purged key by following the ttl", func() bool {
		all := true
		for i, src := range srcs {
			if dropped[i] == 0 && !holdsAny(src.Window(), map[string]bool{purgedID: true}) {
				dropped[i] = time.Since(rotatedAt)
			}
			all = all && dropped[i] != 0
		}
		return all
	})
	worst := max(dropped[0], dropped[1], dropped[2])
	t.Logf("purge propagation (ttl, rotation_period=1h, max_read_ttl=%s): every Source dropped the purged key %s after the rotation (per Source %v)",
		readTTLCap, worst.Round(time.Millisecond), dropped)
}

// purgedIDs returns the ids the keyring's history lists as purged at or
// after since.
func purgedIDs(t *testing.T, s *vaulttest.Server, since time.Time) map[string]bool {
	t.Helper()
	hist, err := s.Client.Logical().Read("ticketkeys/keys/" + goKeyring + "/history")
	if err != nil || hist == nil {
		t.Fatalf("read history: %v", err)
	}
	out := map[string]bool{}
	destroyed, _ := hist.Data["destroyed"].([]any)
	for _, d := range destroyed {
		m, _ := d.(map[string]any)
		at, _ := time.Parse(time.RFC3339, fmt.Sprint(m["destroyed_at"]))
		if m["reason"] == "purged" && !at.Before(since.Truncate(time.Second)) {
			out[fmt.Sprint(m["id"])] = true
		}
	}
	return out
}

func holdsAny(w *client.Window, ids map[string]bool) bool {
	for _, k := range w.Keys {
		if ids[k.ID] {
			return true
		}
	}
	return false
}

// checkExampleServer builds cmd/ticketkeys-example-server, runs two of them
// (logged in with AppRole) against s, and checks that they resume each
// other's sessions and that their status page carries no key id.
func checkExampleServer(t *testing.T, s *vaulttest.Server, cert *testcert.Cert, roleID, secretID string) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ticketkeys-example-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/cmd/ticketkeys-example-server")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the example server: %v\n%s", err, out)
	}
	certFile, keyFile, _ := cert.WritePEM(dir)
	secretFile := filepath.Join(dir, "secret_id")
	if err := os.WriteFile(secretFile, []byte(secretID), 0o600); err != nil {
		t.Fatal(err)
	}
	var addrs, adminAddrs []string
	freeAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	for i := 0; i < 2; i++ {
		addr, adminAddr := freeAddr(), freeAddr()
		adminAddrs = append(adminAddrs, adminAddr)
		logPath := filepath.Join(dir, fmt.Sprintf("example-%d.log", i))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-addr", addr, "-admin-addr", adminAddr, "-cert", certFile, "-key", keyFile, "-keyring", goKeyring,
			"-approle-role-id", roleID, "-approle-secret-id-file", secretFile)
		cmd.Env = append(os.Environ(), "VAULT_ADDR="+s.Addr, "VAULT_TOKEN=", "VAULT_AGENT_ADDR=")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				t.Logf("example server %d log:\n%s", i, b)
			}
		})
		waitFor(t, 60*time.Second, "example server "+addr+" to accept TLS", func() bool {
			select {
			case <-done:
				t.Fatalf("example server %d exited early", i)
			default:
			}
			c, err := tls.Dial("tcp", addr, cert.ClientConfig())
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
		addrs = append(addrs, addr)
	}
	res, err := resumption.Run(context.Background(), resumption.Config{
		Addrs: addrs, ServerName: testcert.ServerName, RootCAs: cert.Pool,
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		Users: 10, MaxConnections: 400, MaxDuration: 30 * time.Second, Seed: 11,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("example servers: %s", res)
	if res.HandshakeFailures != 0 || res.RequestFailures != 0 || res.Offered < 300 || res.ResumeRate() < goMinResumeRate {
		t.Errorf("example servers: %s, want no failures, >= 300 offered and a rate >= %.3f; failures %v", res, goMinResumeRate, firstFailures(res, 3))
	}

	// The status page is on the loopback admin listener only, and shows no
	// key id.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cert.ClientConfig()}}
	resp, err := hc.Get("https://" + addrs[0] + "/ticketkeys/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "refreshes") {
		t.Fatalf("the public TLS port serves the status page: %s", body)
	}
	resp, err = hc.Get("http://" + adminAddrs[0] + "/ticketkeys/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var st struct {
		Exhausted bool   `json:"exhausted"`
		Refreshes uint64 `json:"refreshes"`
	}
	if err := json.Unmarshal(body, &st); err != nil || resp.StatusCode != 200 || st.Exhausted || st.Refreshes < 1 {
		t.Fatalf("status page: HTTP %d, decode error %v, exhausted=%v refreshes=%d", resp.StatusCode, err, st.Exhausted, st.Refreshes)
	}
	mresp, err := hc.Get("http://" + adminAddrs[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metrics), `ticketkeys_refreshes_total{keyring="goweb",result="success"}`) {
		t.Fatalf("admin /metrics lacks ticketkeys_refreshes_total:\n%s", metrics)
	}
	hist, err := s.Client.Logical().Read("ticketkeys/keys/" + goKeyring + "/history")
	if err != nil || hist == nil {
		t.Fatalf("read history: %v", err)
	}
	keys, _ := hist.Data["keys"].([]any)
	if len(keys) == 0 {
		t.Fatal("history lists no keys")
	}
	for _, k := range keys {
		id, _ := k.(map[string]any)["id"].(string)
		if id == "" || strings.Contains(string(body), id) {
			t.Fatalf("status page shows a key id (or history has an empty id)")
		}
	}
}
