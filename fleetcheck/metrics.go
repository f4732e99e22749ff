package fleetcheck

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the last round of a Checker as Prometheus metrics.
// Labels are the keyring and, per node, its address; never key ids (they
// change every rotation) or material. Register it with a registry:
//
//	reg.MustRegister(fleetcheck.NewCollector(checker))
type Collector struct {
	c *Checker
}

// NewCollector returns a collector of c's last report.
func NewCollector(c *Checker) *Collector { return &Collector{c: c} }

const ns = "ticketkeys_fleetcheck_"

var (
	descRounds      = prometheus.NewDesc(ns+"rounds_total", "Rounds run since start.", []string{"keyring"}, nil)
	descOK          = prometheus.NewDesc(ns+"ok", "1 if no check failed in the last round (pending is not a failure), else 0.", []string{"keyring"}, nil)
	descLastRound   = prometheus.NewDesc(ns+"last_round_timestamp_seconds", "Start of the last round, Unix seconds.", []string{"keyring"}, nil)
	descDuration    = prometheus.NewDesc(ns+"round_duration_seconds", "Duration of the last round.", []string{"keyring"}, nil)
	descVaultOK     = prometheus.NewDesc(ns+"vault_read_ok", "1 if the last round read the window from Vault, else 0.", []string{"keyring"}, nil)
	descNodes       = prometheus.NewDesc(ns+"nodes", "Nodes checked.", []string{"keyring"}, nil)
	descReachable   = prometheus.NewDesc(ns+"nodes_reachable", "Nodes that completed a handshake in every TLS version.", []string{"keyring"}, nil)
	descReadyNext   = prometheus.NewDesc(ns+"nodes_ready_next_key", "Nodes that resumed a ticket under the next key in every TLS version (0 while no next key is published).", []string{"keyring"}, nil)
	descNextPub     = prometheus.NewDesc(ns+"next_key_published", "1 if a next key is published, else 0.", []string{"keyring"}, nil)
	descUntilAct    = prometheus.NewDesc(ns+"seconds_until_activation", "Seconds from now until the next key activates (absent while none is published).", []string{"keyring"}, nil)
	descPairs       = prometheus.NewDesc(ns+"matrix_pairs", "Cross-node offers (source, target, TLS version) in the last round.", []string{"keyring"}, nil)
	descMatrixFail  = prometheus.NewDesc(ns+"matrix_failures", "Cross-node offers that did not resume in the last round.", []string{"keyring"}, nil)
	descRetiredAcc  = prometheus.NewDesc(ns+"retired_keys_accepted", "Retired keys that at least one node still resumed in the last round.", []string{"keyring"}, nil)
	descRetiredHeld = prometheus.NewDesc(ns+"retired_keys_checked", "Retired keys offered to the nodes in the last round.", []string{"keyring"}, nil)
	descRetiredOpen = prometheus.NewDesc(ns+"retired_keys_not_refused_everywhere", "Retired keys held that some node has not refused yet (not offered to it yet, unreachable, or still resuming).", []string{"keyring"}, nil)

	descNodeReachable = prometheus.NewDesc(ns+"node_reachable", "1 if the node completed a handshake in every TLS version.", []string{"keyring", "node"}, nil)
	descNodeCurrent   = prometheus.NewDesc(ns+"node_current_key_ok", "1 if the node's fresh tickets carry the scheduled key (within its tolerance) in every TLS version; absent while no window was ever read.", []string{"keyring", "node"}, nil)
	descNodeNext      = prometheus.NewDesc(ns+"node_next_key_ready", "1 if the node resumed a ticket under the next key in every TLS version; 0 if not (or not yet); absent while no next key is published.", []string{"keyring", "node"}, nil)
	descNodePrevious  = prometheus.NewDesc(ns+"node_previous_keys_ok", "1 if the node resumed a ticket under each previous key offered (the retain promise) in every TLS version; absent when none was offered.", []string{"keyring", "node"}, nil)
	descNodeLifetime  = prometheus.NewDesc(ns+"node_ticket_lifetime_seconds", "Shortest ticket lifetime the node sent in its TLS versions (absent when it sent none); below rotation_period its users lose resumption before any rotation.", []string{"keyring", "node"}, nil)
	descResumption    = prometheus.NewDesc(ns+"resumption_window_seconds", "Longest a ticket resumes as far as the keyring goes (a key's not_after - not_before).", []string{"keyring"}, nil)
	descNodeRetired   = prometheus.NewDesc(ns+"node_retired_keys_accepted", "Offers under retired keys the node resumed in the last round (every TLS version).", []string{"keyring", "node"}, nil)
	descNodeMatrix    = prometheus.NewDesc(ns+"node_matrix_failures", "Matrix offers that did not resume: direction=row (this node's tickets elsewhere), column (others' tickets here).", []string{"keyring", "node", "direction"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRounds, descOK, descLastRound, descDuration, descVaultOK, descNodes, descReachable,
		descReadyNext, descNextPub, descUntilAct, descPairs, descMatrixFail, descRetiredAcc, descRetiredHeld, descRetiredOpen,
		descNodeReachable, descNodeCurrent, descNodeNext, descNodePrevious, descNodeLifetime, descResumption, descNodeRetired, descNodeMatrix} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Collector) Collect(ch chan<- prometheus.Metric) {
	r := m.c.Last()
	if r == nil {
		return
	}
	kr := r.Keyring
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{kr}, labels...)...)
	}
	ch <- prometheus.MustNewConstMetric(descRounds, prometheus.CounterValue, float64(r.Round), kr)
	g(descOK, b2f(r.OK))
	g(descLastRound, float64(r.Started.UnixNano())/1e9)
	g(descDuration, r.Finished.Sub(r.Started).Seconds())
	g(descVaultOK, b2f(r.VaultError == ""))
	g(descNodes, float64(len(r.Nodes)))
	reachable, accepted, offered, open := 0, 0, 0, 0
	for _, n := range r.Nodes {
		if n.Reachable {
			reachable++
		}
	}
	for _, rs := range r.Retired {
		if len(rs.AcceptedBy) > 0 {
			accepted++
		}
		if rs.OfferedThisRound {
			offered++
		}
		if rs.RefusedEverywhereSince.IsZero() {
			open++
		}
	}
	g(descReachable, float64(reachable))
	g(descReadyNext, float64(r.NodesReadyNext))
	published := r.Window != nil && r.Window.Next != ""
	g(descNextPub, b2f(published))
	if published {
		g(descUntilAct, time.Until(r.Window.NextActivation).Seconds())
	}
	if r.Window != nil && r.Window.ResumptionWindow > 0 {
		g(descResumption, r.Window.ResumptionWindow)
	}
	g(descPairs, float64(r.Matrix.Pairs))
	g(descMatrixFail, float64(r.Matrix.Failures))
	g(descRetiredAcc, float64(accepted))
	g(descRetiredHeld, float64(offered))
	g(descRetiredOpen, float64(open))
	for _, n := range r.Nodes {
		g(descNodeReachable, b2f(n.Reachable), n.Addr)
		// Unknown answers (no window ever read, no next key) are absent, not 0.
		if n.Current != StatusNone {
			g(descNodeCurrent, b2f(n.Current == StatusOK), n.Addr)
		}
		if published && n.Next != StatusNone {
			g(descNodeNext, b2f(n.Next == StatusOK), n.Addr)
		}
		if n.Previous != StatusNone {
			g(descNodePrevious, b2f(n.Previous == StatusOK), n.Addr)
		}
		if n.TicketLifetime > 0 {
			g(descNodeLifetime, n.TicketLifetime, n.Addr)
		}
		g(descNodeRetired, float64(n.retiredAccepted), n.Addr)
		g(descNodeMatrix, float64(n.matrixRowFails), n.Addr, "row")
		g(descNodeMatrix, float64(n.matrixColFails), n.Addr, "column")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var _ prometheus.Collector = (*Collector)(nil)
