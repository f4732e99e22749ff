package fleetcheck

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestNextRound: continuous mode runs at the schedule's instants, not only
// every interval.
func TestNextRound(t *testing.T) {
	c := &Checker{cfg: Config{Grace: 5 * time.Second, NextGrace: 3 * time.Second}}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	rep := &Report{Window: &WindowSummary{RotationPeriod: 60, PublishAhead: 60, Keys: []KeySummary{
		{ID: "a", NotBefore: now.Add(-50 * time.Second), NotAfter: now.Add(10 * time.Minute)},
		{ID: "b", NotBefore: now.Add(10 * time.Second), NotAfter: now.Add(11 * time.Minute)},
	}}}
	for _, tc := range []struct {
		name     string
		now      time.Time
		interval time.Duration
		want     time.Time
	}{
		{"interval first", now, 2 * time.Second, now.Add(2 * time.Second)},
		{"the last proof before the activation", now, time.Hour, now.Add(10*time.Second - 5*time.Second - 2*eventDelay + eventDelay)},
		{"just after the activation", now.Add(9 * time.Second), time.Hour, now.Add(10*time.Second + eventDelay)},
		{"readiness grace of the key published at the activation", now.Add(11 * time.Second), time.Hour, now.Add(13*time.Second + eventDelay)},
		{"after the activation grace", now.Add(13500 * time.Millisecond), time.Hour, now.Add(15*time.Second + eventDelay)},
		{"the previous key past not_after", now.Add(16 * time.Second), time.Hour, now.Add(10*time.Minute + eventDelay)},
	} {
		if got := c.nextRound(rep, tc.interval, tc.now); !got.Equal(tc.want) {
			t.Errorf("%s: next round at %s, want %s", tc.name, got.Format(time.TimeOnly+".000"), tc.want.Format(time.TimeOnly+".000"))
		}
	}
}

// TestRunAndMetrics runs the continuous mode for a few rounds and reads the
// metrics of the last one.
func TestRunAndMetrics(t *testing.T) {
	s, servers, cert := goFleet(t, 3)
	servers[2].set(s.keys[1], s.keys[0]) // not ready for the next key
	c := newChecker(t, s, cert, addrs(servers), nil)
	// Until three rounds ran (bounded: a round takes well under a second, more under -race on a loaded machine).
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var mu sync.Mutex
	var rounds []int
	if err := c.Run(ctx, 300*time.Millisecond, func(r *Report) {
		mu.Lock()
		defer mu.Unlock()
		rounds = append(rounds, r.Round)
		if len(rounds) == 3 {
			cancel()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(rounds) < 3 || rounds[0] != 1 || rounds[len(rounds)-1] != len(rounds) {
		t.Fatalf("rounds %v; want at least 3, numbered from 1", rounds)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(c))
	want := `
# HELP ticketkeys_fleetcheck_nodes_ready_next_key Nodes that resumed a ticket under the next key in every TLS version (0 while no next key is published).
# TYPE ticketkeys_fleetcheck_nodes_ready_next_key gauge
ticketkeys_fleetcheck_nodes_ready_next_key{keyring="test"} 2
# HELP ticketkeys_fleetcheck_matrix_failures Cross-node offers that did not resume in the last round.
# TYPE ticketkeys_fleetcheck_matrix_failures gauge
ticketkeys_fleetcheck_matrix_failures{keyring="test"} 0
# HELP ticketkeys_fleetcheck_ok 1 if no check failed in the last round (pending is not a failure), else 0.
# TYPE ticketkeys_fleetcheck_ok gauge
ticketkeys_fleetcheck_ok{keyring="test"} 0
# HELP ticketkeys_fleetcheck_node_next_key_ready 1 if the node resumed a ticket under the next key in every TLS version; 0 if not (or not yet); absent while no next key is published.
# TYPE ticketkeys_fleetcheck_node_next_key_ready gauge
ticketkeys_fleetcheck_node_next_key_ready{keyring="test",node="` + servers[0].addr + `"} 1
ticketkeys_fleetcheck_node_next_key_ready{keyring="test",node="` + servers[1].addr + `"} 1
ticketkeys_fleetcheck_node_next_key_ready{keyring="test",node="` + servers[2].addr + `"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ticketkeys_fleetcheck_nodes_ready_next_key",
		"ticketkeys_fleetcheck_matrix_failures", "ticketkeys_fleetcheck_ok", "ticketkeys_fleetcheck_node_next_key_ready"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "ticketkeys_fleetcheck_seconds_until_activation" {
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v < 25*60 || v > 30*60 {
				t.Errorf("seconds until activation %.0f, want about 1800", v)
			}
			return
		}
	}
	t.Error("no ticketkeys_fleetcheck_seconds_until_activation")
}

// timerLateContext is a context whose deadline has passed while its timer
// has not fired yet (Err is still nil): what a busy machine shows for a
// moment, during which dials bounded by the deadline already fail.
type timerLateContext struct {
	context.Context
	deadline time.Time
}

func (c timerLateContext) Deadline() (time.Time, bool) { return c.deadline, true }

// A round cut by the run's deadline is not reported, even when the probes'
// deadline fires before the context's timer: its cut probes are not node
// failures, and the metrics keep the last whole round.
func TestCheckCutByDeadlineBeforeTheContextTimer(t *testing.T) {
	s, servers, cert := goFleet(t, 3)
	c := newChecker(t, s, cert, addrs(servers), nil)
	whole, err := c.Check(context.Background())
	if err != nil || !whole.OK {
		t.Fatalf("first round on a healthy fleet: %v, %+v", err, whole)
	}
	late := timerLateContext{Context: context.Background(), deadline: time.Now().Add(-time.Millisecond)}
	if rep, err := c.Check(late); err == nil {
		t.Fatalf("a round past the run's deadline was reported (OK=%v, failures %v); want the deadline's error", rep.OK, rep.Failures)
	}
	if c.Last() != whole {
		t.Errorf("the last report is not the last whole round")
	}
}
