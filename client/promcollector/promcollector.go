// Package promcollector exposes a client.Source's state as Prometheus
// metrics. It is a separate package so that the client package itself does
// not depend on Prometheus.
//
// The collector reads Source.Status at scrape time; it keeps no state of its
// own and never labels by key id or carries key material. Instants are Unix
// timestamps (compute ages in PromQL: time() - metric), counters end in
// _total. Metrics (with the optional constant labels given to New):
//
//	ticketkeys_last_refresh_success_timestamp_seconds   last successful read of the window
//	ticketkeys_last_window_change_timestamp_seconds     last read that changed the window
//	ticketkeys_next_activation_timestamp_seconds        next published key's activation (absent when none is known)
//	ticketkeys_encrypt_until_timestamp_seconds          when the current key stops encrypting (absent while exhausted)
//	ticketkeys_legacy_tickets_until_timestamp_seconds   when previous-release tickets stop being accepted (absent when off)
//	ticketkeys_refreshes_total{result}                  reads of the window: result="success" or "error"
//	ticketkeys_exhausted                                1 while no published key may encrypt
//	ticketkeys_tickets_disabled                         1 while tickets are off (exhausted with WithDisableTicketsOnExhaustion)
//	ticketkeys_keys{state}                              keys that decrypt now, by state
//	ticketkeys_ticket_decryptions_total{result,state}   tickets offered: result="hit" by the key's state, or result="miss" with state="none"
//	ticketkeys_legacy_ticket_decryptions_total          hits on tickets in the previous release's format (no key name)
//	ticketkeys_tickets_issued_total                     tickets encrypted
//
// Useful alerts: time() > ticketkeys_encrypt_until_timestamp_seconds - 600
// (the schedule runs out in 10 minutes without a read), ticketkeys_exhausted
// == 1, and a rising rate of result="miss".
package promcollector

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

// StatusSource is what the collector reads: *client.Source implements it.
type StatusSource interface {
	Status() client.Status
}

type collector struct {
	src StatusSource

	lastSuccess, lastChange, nextActivation, encryptUntil, legacyUntil,
	refreshes, exhausted, disabled, keys, decryptions, legacy, issued *prometheus.Desc
}

// New returns a collector for src. constLabels (may be nil) are added to every
// metric, for example {"keyring": "web"} when a process serves several.
func New(src StatusSource, constLabels prometheus.Labels) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ticketkeys_"+name, help, labels, constLabels)
	}
	return &collector{
		src:            src,
		lastSuccess:    d("last_refresh_success_timestamp_seconds", "Unix time of the last successful read of the ticket-key window."),
		lastChange:     d("last_window_change_timestamp_seconds", "Unix time of the last read that changed the ticket-key window."),
		nextActivation: d("next_activation_timestamp_seconds", "Unix time at which the next published ticket key activates."),
		encryptUntil:   d("encrypt_until_timestamp_seconds", "Unix time at which the current ticket key stops encrypting, as far as the held window knows."),
		legacyUntil:    d("legacy_tickets_until_timestamp_seconds", "Unix time until which session tickets of the previous release's format are accepted."),
		refreshes:      d("refreshes_total", "Reads of the ticket-key window, by result (success, error).", "result"),
		exhausted:      d("exhausted", "1 while no published ticket key may encrypt (Vault unreachable beyond the schedule)."),
		disabled:       d("tickets_disabled", "1 while session tickets are off (exhausted with WithDisableTicketsOnExhaustion)."),
		keys:           d("keys", "Ticket keys that decrypt now, by state.", "state"),
		decryptions:    d("ticket_decryptions_total", "Session tickets offered by clients, by result (hit, miss) and the state of the key that decrypted them (none for a miss).", "result", "state"),
		legacy:         d("legacy_ticket_decryptions_total", "Session tickets in the previous release's format (no key name) that decrypted."),
		issued:         d("tickets_issued_total", "Session tickets encrypted."),
	}
}

var states = []client.KeyState{client.StateCurrent, client.StateNext, client.StatePrevious, client.StateLocal}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastSuccess, c.lastChange, c.nextActivation, c.encryptUntil, c.legacyUntil,
		c.refreshes, c.exhausted, c.disabled, c.keys, c.decryptions, c.legacy, c.issued} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	timestamp := func(d *prometheus.Desc, t time.Time) {
		if !t.IsZero() {
			gauge(d, float64(t.UnixNano())/1e9)
		}
	}
	bit := func(d *prometheus.Desc, b bool) {
		v := 0.0
		if b {
			v = 1
		}
		gauge(d, v)
	}
	timestamp(c.lastSuccess, st.LastRefresh)
	timestamp(c.lastChange, st.LastChange)
	timestamp(c.nextActivation, st.NextActivation)
	timestamp(c.encryptUntil, st.EncryptUntil)
	timestamp(c.legacyUntil, st.LegacyUntil)
	counter(c.refreshes, st.Refreshes, "success")
	counter(c.refreshes, st.RefreshErrors, "error")
	bit(c.exhausted, st.Exhausted)
	bit(c.disabled, st.TicketsDisabled)
	hits := map[client.KeyState]uint64{
		client.StateCurrent:  st.Tickets.Current,
		client.StateNext:     st.Tickets.Next,
		client.StatePrevious: st.Tickets.Previous,
		client.StateLocal:    st.Tickets.Local,
	}
	for _, s := range states {
		gauge(c.keys, float64(st.Keys[s]), string(s))
		counter(c.decryptions, hits[s], "hit", string(s))
	}
	counter(c.decryptions, st.Tickets.Miss, "miss", "none")
	counter(c.legacy, st.Tickets.Legacy)
	counter(c.issued, st.Tickets.Issued)
}
