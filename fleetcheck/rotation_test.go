package fleetcheck

import (
	"context"
	"crypto/tls"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// liveServer is a Go TLS server that follows a schedule in real time, like a
// node that always holds the engine's window; frozen, it keeps the window it
// had (a node cut off Vault) and encrypts with the last key it knows.
type liveServer struct {
	addr   string
	s      *schedule
	frozen atomic.Pointer[Window]
}

func (l *liveServer) window(now time.Time) *Window {
	if w := l.frozen.Load(); w != nil {
		return w
	}
	return l.s.window(now)
}

func startLiveServer(t *testing.T, cert *testcert.Cert, s *schedule) *liveServer {
	l := &liveServer{s: s}
	cfg := cert.ServerConfig()
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		now := time.Now()
		w := l.window(now)
		k := w.KeyAt(now)
		if k == nil {
			k = w.Keys[len(w.Keys)-1]
		}
		return sealGo(&session{gos: ss}, k)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		now := time.Now()
		for _, k := range l.window(now).Keys {
			if now.Before(k.NotAfter) {
				if s, err := openTicket(FormatGo, identity, k); err == nil {
					return s.gos, nil
				}
			}
		}
		return nil, nil
	}
	l.addr = serveTLS(t, cfg)
	return l
}

// TestRunThroughRotations runs the continuous mode against three nodes
// following a 2-second schedule: green through three rotations; a node
// frozen right after it fetched the next key is failed for the key published
// after that before it activates, then shows matrix failures.
func TestRunThroughRotations(t *testing.T) {
	const period = 2 * time.Second
	cert := testcert.New(t, testcert.ECDSAP256)
	start := time.Now().Truncate(time.Second).Add(-period)
	s := newSchedule(t, FormatGo, 80, 20, start, period, 2*period)
	var nodes []*liveServer
	var addrs []string
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startLiveServer(t, cert, s))
		addrs = append(addrs, nodes[i].addr)
	}
	// The nodes here read the schedule in process, with no reader lag: a next-key grace of a quarter
	// of publish_ahead leaves the rounds 3 s to report node 2 before the activation (the derived grace
	// covers the engine's reader lag, 3 s of these 4, leaving one round; TestNextGraceCoversAgentJitter
	// proves that rule).
	c := newChecker(t, s, cert, addrs, func(c *Config) { c.Grace = 500 * time.Millisecond; c.NextGrace = period / 2 })
	var mu sync.Mutex
	var reps []*Report
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, time.Second, func(r *Report) {
			mu.Lock()
			reps = append(reps, r)
			mu.Unlock()
		})
	}()
	defer func() { cancel(); <-done }()
	snapshot := func() []*Report {
		mu.Lock()
		defer mu.Unlock()
		return append([]*Report(nil), reps...)
	}
	wait := func(what string, timeout time.Duration, cond func(*Report) bool) *Report {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			for _, r := range snapshot() {
				if cond(r) {
					return r
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no round showed %s within %s", what, timeout)
		return nil
	}

	wait("three rotations", 5*period, func(*Report) bool {
		seen := map[string]bool{}
		for _, r := range snapshot() {
			seen[r.Window.Current] = true
		}
		return len(seen) >= 4
	})
	for _, r := range snapshot() {
		if !r.OK {
			t.Fatalf("round %d at %s failed on a healthy fleet:\n%s", r.Round, r.Started.Format("15:04:05.000"), table(t, r))
		}
	}
	rounds := snapshot()

	// Freeze node 2 just after an activation: it holds the key published then.
	last := rounds[len(rounds)-1].Window
	time.Sleep(time.Until(last.NextActivation.Add(200 * time.Millisecond)))
	nodes[2].frozen.Store(s.window(time.Now()))
	held := nodes[2].frozen.Load().NextAfter(time.Now())
	frozenAt := time.Now()
	// Any round that starts after the next publication qualifies (a later
	// one sees a later next key, which node 2 lacks as well); a round under
	// -race on a busy machine can take longer than the period, so the wait
	// spans several.
	r := wait("node 2 not ready for the key after the one it holds", 4*period, func(r *Report) bool {
		n := nodeReport(t, r, nodes[2].addr)
		return r.Started.After(frozenAt) && r.Window.Next != held.ID && n.Next == StatusFail
	})
	if !r.Started.Before(r.Window.NextActivation) {
		t.Errorf("reported at %s, not before the activation at %s", r.Started.Format("15:04:05.000"), r.Window.NextActivation.Format("15:04:05.000"))
	}
	missedAt := r.Window.NextActivation
	wait("node 2's matrix column failing after the activation", 4*period, func(r *Report) bool {
		n := nodeReport(t, r, nodes[2].addr)
		return r.Started.After(missedAt) && n.MatrixColOK < n.MatrixColTotal
	})
}
