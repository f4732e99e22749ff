package fleetcheck

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// nodeMetric gathers c's metrics and returns the series of name for node
// (nil when absent).
func nodeMetric(t *testing.T, c *Checker, name, node string) *float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(c))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "node" && l.GetValue() == node {
					v := m.GetGauge().GetValue()
					return &v
				}
			}
		}
	}
	return nil
}

// TestVaultUnreadableJudgesAgainstTheLastWindow: when Vault cannot be read,
// the nodes are judged against the last window read (marked stale), not
// reported off schedule; with no window read yet the per-node answers are
// absent from the metrics, not 0 (an alert on 0 would fire fleet-wide).
func TestVaultUnreadableJudgesAgainstTheLastWindow(t *testing.T) {
	s, servers, cert := goFleet(t, 2)
	stale := servers[1]
	stale.set(s.keys[1], s.keys[0]) // lacks the next key
	c := newChecker(t, s, cert, addrs(servers), nil)
	check(t, c)
	s.err = errors.New("vault: connection refused")
	r := check(t, c)
	if !r.WindowStale || r.VaultError == "" || r.Window == nil {
		t.Errorf("Vault down: stale %v, vault error %q, window %v; want the last window, marked stale", r.WindowStale, r.VaultError, r.Window)
	}
	if n := nodeReport(t, r, servers[0].addr); n.Current != StatusOK || n.Next != StatusOK {
		t.Errorf("healthy node judged against no window: current %s, next %s; want ok, ok:\n%s", n.Current, n.Next, table(t, r))
	}
	if n := nodeReport(t, r, stale.addr); n.Next != StatusFail {
		t.Errorf("node without the next key, judged against the last window: next %s; want fail", n.Next)
	}
	if v := nodeMetric(t, c, "ticketkeys_fleetcheck_node_current_key_ok", servers[0].addr); v == nil || *v != 1 {
		t.Errorf("node_current_key_ok of a healthy node while Vault is down: %s; want 1", show(v))
	}
	if !strings.Contains(table(t, r), "stale") {
		t.Errorf("the table does not say the window is stale:\n%s", table(t, r))
	}

	// No window was ever read: unknown, so absent.
	c = newChecker(t, s, cert, addrs(servers), nil)
	check(t, c)
	for _, name := range []string{"ticketkeys_fleetcheck_node_current_key_ok", "ticketkeys_fleetcheck_node_next_key_ready"} {
		if v := nodeMetric(t, c, name, servers[0].addr); v != nil {
			t.Errorf("%s with no window ever read: %v; want absent", name, *v)
		}
	}
	if v := nodeMetric(t, c, "ticketkeys_fleetcheck_node_reachable", servers[0].addr); v == nil || *v != 1 {
		t.Errorf("node_reachable with no window: %s; want 1 (reachability needs no window)", show(v))
	}
}

func show(v *float64) string {
	if v == nil {
		return "absent"
	}
	return strconv.FormatFloat(*v, 'g', -1, 64)
}
