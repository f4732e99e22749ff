package promcollector

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

type fixed client.Status

func (f fixed) Status() client.Status { return client.Status(f) }

// TestCollect: the collector turns a Status into the documented metrics,
// with the constant labels, and no key id appears in the output.
func TestCollect(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 1, 0, 0, time.UTC)
	st := fixed{
		Now: now, CurrentID: "00112233445566778899aabbccddeeff",
		NextActivation: now.Add(42 * time.Second),
		Keys:           map[client.KeyState]int{client.StateCurrent: 1, client.StateNext: 1, client.StatePrevious: 2},
		LastRefresh:    now.Add(-10 * time.Second),
		Refreshes:      7, RefreshErrors: 3,
		Tickets: client.TicketCounts{Current: 100, Next: 2, Previous: 5, Miss: 4, Issued: 111},
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(New(st, prometheus.Labels{"keyring": "web"})); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP ticketkeys_exhausted 1 while no published ticket key may encrypt (Vault unreachable beyond the schedule).
# TYPE ticketkeys_exhausted gauge
ticketkeys_exhausted{keyring="web"} 0
# HELP ticketkeys_keys Ticket keys that decrypt now, by state.
# TYPE ticketkeys_keys gauge
ticketkeys_keys{keyring="web",state="current"} 1
ticketkeys_keys{keyring="web",state="local"} 0
ticketkeys_keys{keyring="web",state="next"} 1
ticketkeys_keys{keyring="web",state="previous"} 2
# HELP ticketkeys_last_refresh_success_timestamp_seconds Unix time of the last successful read of the ticket-key window.
# TYPE ticketkeys_last_refresh_success_timestamp_seconds gauge
ticketkeys_last_refresh_success_timestamp_seconds{keyring="web"} 1.89345605e+09
# HELP ticketkeys_next_activation_seconds Seconds until the next published ticket key activates.
# TYPE ticketkeys_next_activation_seconds gauge
ticketkeys_next_activation_seconds{keyring="web"} 42
# HELP ticketkeys_refresh_errors_total Failed or invalid reads of the ticket-key window.
# TYPE ticketkeys_refresh_errors_total counter
ticketkeys_refresh_errors_total{keyring="web"} 3
# HELP ticketkeys_refreshes_total Successful reads of the ticket-key window.
# TYPE ticketkeys_refreshes_total counter
ticketkeys_refreshes_total{keyring="web"} 7
# HELP ticketkeys_ticket_decryptions_total Session tickets decrypted, by the state of the key that decrypted them.
# TYPE ticketkeys_ticket_decryptions_total counter
ticketkeys_ticket_decryptions_total{keyring="web",state="current"} 100
ticketkeys_ticket_decryptions_total{keyring="web",state="local"} 0
ticketkeys_ticket_decryptions_total{keyring="web",state="next"} 2
ticketkeys_ticket_decryptions_total{keyring="web",state="previous"} 5
# HELP ticketkeys_ticket_misses_total Session tickets that no key decrypted (unknown, retired or forged).
# TYPE ticketkeys_ticket_misses_total counter
ticketkeys_ticket_misses_total{keyring="web"} 4
# HELP ticketkeys_tickets_issued_total Session tickets encrypted.
# TYPE ticketkeys_tickets_issued_total counter
ticketkeys_tickets_issued_total{keyring="web"} 111
# HELP ticketkeys_window_age_seconds Seconds since the ticket-key window was last read successfully from Vault.
# TYPE ticketkeys_window_age_seconds gauge
ticketkeys_window_age_seconds{keyring="web"} 10
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// With nothing read and no next key, the time-based gauges are absent.
	reg2 := prometheus.NewPedanticRegistry()
	reg2.MustRegister(New(fixed{Now: now, Exhausted: true}, nil))
	n, err := testutil.GatherAndCount(reg2, "ticketkeys_window_age_seconds", "ticketkeys_next_activation_seconds")
	if err != nil || n != 0 {
		t.Fatalf("absent gauges: count %d, err %v", n, err)
	}
	if v := testutil.ToFloat64(prometheus.Collector(newExhaustedOnly(now))); v != 1 {
		t.Fatalf("exhausted gauge: %v, want 1", v)
	}
}

// newExhaustedOnly returns a collector emitting only the exhausted gauge.
func newExhaustedOnly(now time.Time) prometheus.Collector {
	c := New(fixed{Now: now, Exhausted: true}, nil).(*collector)
	return onlyDesc{c, c.exhausted}
}

type onlyDesc struct {
	c *collector
	d *prometheus.Desc
}

func (o onlyDesc) Describe(ch chan<- *prometheus.Desc) { ch <- o.d }
func (o onlyDesc) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 64)
	o.c.Collect(all)
	close(all)
	for m := range all {
		if m.Desc() == o.d {
			ch <- m
		}
	}
}
