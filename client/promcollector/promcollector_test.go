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
// named by Prometheus conventions (instants as _timestamp_seconds, counters
// as _total, one metric with a result label), with the constant labels, and
// no key id appears in the output.
func TestCollect(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 1, 0, 0, time.UTC)
	st := fixed{
		Now: now, CurrentID: "00112233445566778899aabbccddeeff",
		NextActivation: now.Add(42 * time.Second),
		EncryptUntil:   now.Add(42 * time.Second),
		LegacyUntil:    now.Add(time.Hour),
		Keys:           map[client.KeyState]int{client.StateCurrent: 1, client.StateNext: 1, client.StatePrevious: 2},
		LastRefresh:    now.Add(-10 * time.Second),
		LastChange:     now.Add(-20 * time.Second),
		Refreshes:      7, RefreshErrors: 3,
		Tickets: client.TicketCounts{Current: 100, Next: 2, Previous: 5, Miss: 4, Issued: 111, Legacy: 6},
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(New(st, prometheus.Labels{"keyring": "web"})); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP ticketkeys_encrypt_until_timestamp_seconds Unix time at which the current ticket key stops encrypting, as far as the held window knows.
# TYPE ticketkeys_encrypt_until_timestamp_seconds gauge
ticketkeys_encrypt_until_timestamp_seconds{keyring="web"} 1.893456102e+09
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
# HELP ticketkeys_last_window_change_timestamp_seconds Unix time of the last read that changed the ticket-key window.
# TYPE ticketkeys_last_window_change_timestamp_seconds gauge
ticketkeys_last_window_change_timestamp_seconds{keyring="web"} 1.89345604e+09
# HELP ticketkeys_legacy_ticket_decryptions_total Session tickets in the previous release's format (no key name) that decrypted.
# TYPE ticketkeys_legacy_ticket_decryptions_total counter
ticketkeys_legacy_ticket_decryptions_total{keyring="web"} 6
# HELP ticketkeys_legacy_tickets_until_timestamp_seconds Unix time until which session tickets of the previous release's format are accepted.
# TYPE ticketkeys_legacy_tickets_until_timestamp_seconds gauge
ticketkeys_legacy_tickets_until_timestamp_seconds{keyring="web"} 1.89345966e+09
# HELP ticketkeys_next_activation_timestamp_seconds Unix time at which the next published ticket key activates.
# TYPE ticketkeys_next_activation_timestamp_seconds gauge
ticketkeys_next_activation_timestamp_seconds{keyring="web"} 1.893456102e+09
# HELP ticketkeys_refreshes_total Reads of the ticket-key window, by result (success, error).
# TYPE ticketkeys_refreshes_total counter
ticketkeys_refreshes_total{keyring="web",result="error"} 3
ticketkeys_refreshes_total{keyring="web",result="success"} 7
# HELP ticketkeys_ticket_decryptions_total Session tickets offered by clients, by result (hit, miss) and the state of the key that decrypted them (none for a miss).
# TYPE ticketkeys_ticket_decryptions_total counter
ticketkeys_ticket_decryptions_total{keyring="web",result="hit",state="current"} 100
ticketkeys_ticket_decryptions_total{keyring="web",result="hit",state="local"} 0
ticketkeys_ticket_decryptions_total{keyring="web",result="hit",state="next"} 2
ticketkeys_ticket_decryptions_total{keyring="web",result="hit",state="previous"} 5
ticketkeys_ticket_decryptions_total{keyring="web",result="miss",state="none"} 4
# HELP ticketkeys_tickets_disabled 1 while session tickets are off (exhausted with WithDisableTicketsOnExhaustion).
# TYPE ticketkeys_tickets_disabled gauge
ticketkeys_tickets_disabled{keyring="web"} 0
# HELP ticketkeys_tickets_issued_total Session tickets encrypted.
# TYPE ticketkeys_tickets_issued_total counter
ticketkeys_tickets_issued_total{keyring="web"} 111
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// With nothing read, no next key and exhausted, the instants are absent.
	reg2 := prometheus.NewPedanticRegistry()
	reg2.MustRegister(New(fixed{Now: now, Exhausted: true, TicketsDisabled: true}, nil))
	n, err := testutil.GatherAndCount(reg2, "ticketkeys_last_refresh_success_timestamp_seconds", "ticketkeys_next_activation_timestamp_seconds",
		"ticketkeys_encrypt_until_timestamp_seconds", "ticketkeys_legacy_tickets_until_timestamp_seconds")
	if err != nil || n != 0 {
		t.Fatalf("absent instants: count %d, err %v", n, err)
	}
	for _, d := range []func(*collector) *prometheus.Desc{
		func(c *collector) *prometheus.Desc { return c.exhausted },
		func(c *collector) *prometheus.Desc { return c.disabled },
	} {
		c := New(fixed{Now: now, Exhausted: true, TicketsDisabled: true}, nil).(*collector)
		if v := testutil.ToFloat64(onlyDesc{c, d(c)}); v != 1 {
			t.Fatalf("%s: %v, want 1", d(c), v)
		}
	}
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
