// Package promcollector exposes a client.Source's state as Prometheus
// metrics. It is a separate package so that the client package itself does
// not depend on Prometheus.
//
// The collector reads Source.Status at scrape time; it keeps no state of its
// own and never labels by key id or carries key material. Metrics (with the
// optional constant labels given to New):
//
//	ticketkeys_window_age_seconds                      seconds since the window was last read successfully
//	ticketkeys_next_activation_seconds                 seconds until the next published key activates (absent when none is known)
//	ticketkeys_last_refresh_success_timestamp_seconds  Unix time of the last successful read
//	ticketkeys_refreshes_total                         successful reads
//	ticketkeys_refresh_errors_total                    failed or invalid reads
//	ticketkeys_exhausted                               1 while no published key may encrypt
//	ticketkeys_keys{state}                             keys that decrypt now, by state
//	ticketkeys_ticket_decryptions_total{state}         tickets decrypted, by the state of the key
//	ticketkeys_ticket_misses_total                     tickets no key decrypted
//	ticketkeys_tickets_issued_total                    tickets encrypted
package promcollector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

// StatusSource is what the collector reads: *client.Source implements it.
type StatusSource interface {
	Status() client.Status
}

type collector struct {
	src StatusSource

	age, nextActivation, lastSuccess, refreshes, refreshErrors, exhausted,
	keys, decryptions, misses, issued *prometheus.Desc
}

// New returns a collector for src. constLabels (may be nil) are added to every
// metric, for example {"keyring": "web"} when a process serves several.
func New(src StatusSource, constLabels prometheus.Labels) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ticketkeys_"+name, help, labels, constLabels)
	}
	return &collector{
		src:            src,
		age:            d("window_age_seconds", "Seconds since the ticket-key window was last read successfully from Vault."),
		nextActivation: d("next_activation_seconds", "Seconds until the next published ticket key activates."),
		lastSuccess:    d("last_refresh_success_timestamp_seconds", "Unix time of the last successful read of the ticket-key window."),
		refreshes:      d("refreshes_total", "Successful reads of the ticket-key window."),
		refreshErrors:  d("refresh_errors_total", "Failed or invalid reads of the ticket-key window."),
		exhausted:      d("exhausted", "1 while no published ticket key may encrypt (Vault unreachable beyond the schedule)."),
		keys:           d("keys", "Ticket keys that decrypt now, by state.", "state"),
		decryptions:    d("ticket_decryptions_total", "Session tickets decrypted, by the state of the key that decrypted them.", "state"),
		misses:         d("ticket_misses_total", "Session tickets that no key decrypted (unknown, retired or forged)."),
		issued:         d("tickets_issued_total", "Session tickets encrypted."),
	}
}

var states = []client.KeyState{client.StateCurrent, client.StateNext, client.StatePrevious, client.StateLocal}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.age, c.nextActivation, c.lastSuccess, c.refreshes, c.refreshErrors,
		c.exhausted, c.keys, c.decryptions, c.misses, c.issued} {
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
	if !st.LastRefresh.IsZero() {
		gauge(c.age, st.Now.Sub(st.LastRefresh).Seconds())
		gauge(c.lastSuccess, float64(st.LastRefresh.UnixNano())/1e9)
	}
	if !st.NextActivation.IsZero() {
		gauge(c.nextActivation, st.NextActivation.Sub(st.Now).Seconds())
	}
	counter(c.refreshes, st.Refreshes)
	counter(c.refreshErrors, st.RefreshErrors)
	ex := 0.0
	if st.Exhausted {
		ex = 1
	}
	gauge(c.exhausted, ex)
	hits := map[client.KeyState]uint64{
		client.StateCurrent:  st.Tickets.Current,
		client.StateNext:     st.Tickets.Next,
		client.StatePrevious: st.Tickets.Previous,
		client.StateLocal:    st.Tickets.Local,
	}
	for _, s := range states {
		gauge(c.keys, float64(st.Keys[s]), string(s))
		counter(c.decryptions, hits[s], string(s))
	}
	counter(c.misses, st.Tickets.Miss)
	counter(c.issued, st.Tickets.Issued)
}
