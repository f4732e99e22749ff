package bench

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// NginxSettings describe the nginx part of a run.
type NginxSettings struct {
	// Builds are the nodes' nginx builds ("debian 1.22.1", "openresty-1.27.1 1.27.1").
	Builds  []string `json:"builds"`
	Workers int      `json:"workers"`
	Cert    string   `json:"cert"`
	// Warmup, Duration and RotateEvery shape each resumption run.
	Warmup      time.Duration `json:"warmup_ns"`
	Duration    time.Duration `json:"duration_ns"`
	RotateEvery time.Duration `json:"rotate_every_ns"`
	Users       int           `json:"users"`
	Concurrency int           `json:"concurrency"`
	Interval    time.Duration `json:"interval_ns"`
	// LongPerNode is the keep-alive connections and the streams opened on
	// each node for the long-lived measurement.
	LongPerNode int `json:"long_per_node"`
	// RTTDuration is the measured time-to-first-byte load per set-up, TLS
	// version and RTT.
	RTTDuration time.Duration `json:"rtt_duration_ns"`
}

// NginxReport is the nginx part of a run.
type NginxReport struct {
	Settings NginxSettings     `json:"settings"`
	Runs     []NginxRun        `json:"runs,omitempty"`
	RTT      []RTTResult       `json:"rtt,omitempty"`
	Long     []NginxLongResult `json:"long,omitempty"`
	// Switch is the Lua module's switch at published instants, Agent stopped.
	Switch []NginxSwitchResult `json:"switch,omitempty"`
}

// NginxSummaryRow aggregates one set-up's runs over the TLS versions.
type NginxSummaryRow struct {
	Setup, Label                        string
	Runs, Connections, Offered, Resumed int
	Rotations                           int
	CPU                                 time.Duration
	// RelOwn is CPU per connection divided by the own-keys set-up's
	// (NaN when either is unknown).
	RelOwn float64
}

// Share is Resumed/Offered (NaN when nothing was offered).
func (s NginxSummaryRow) Share() float64 {
	if s.Offered == 0 {
		return math.NaN()
	}
	return float64(s.Resumed) / float64(s.Offered)
}

// CPUPerConn is CPU divided by Connections (0 when none).
func (s NginxSummaryRow) CPUPerConn() time.Duration {
	if s.Connections == 0 {
		return 0
	}
	return s.CPU / time.Duration(s.Connections)
}

// Summary aggregates the runs per set-up (in NginxSetups order), leaving out
// failed runs: counts and CPU are summed over the TLS versions, so the
// shares and CPU per connection weigh each connection alike.
func (n *NginxReport) Summary() []NginxSummaryRow {
	var out []NginxSummaryRow
	for _, setup := range NginxSetups {
		row := NginxSummaryRow{Setup: setup, Label: NginxSetupLabel(setup), RelOwn: math.NaN()}
		for _, r := range n.Runs {
			if r.Setup != setup || r.Err != "" {
				continue
			}
			row.Runs++
			row.Connections += r.Connections
			row.Offered += r.Offered
			row.Resumed += r.Resumed
			row.Rotations += len(r.Rotations)
			row.CPU += r.ServerCPU
		}
		if row.Runs > 0 {
			out = append(out, row)
		}
	}
	var own time.Duration
	for _, r := range out {
		if r.Setup == NginxOwn {
			own = r.CPUPerConn()
		}
	}
	for i := range out {
		if own > 0 && out[i].Connections > 0 {
			out[i].RelOwn = float64(out[i].CPUPerConn()) / float64(own)
		}
	}
	return out
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func ratioNaN(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

func (r *Report) writeNginx(b *strings.Builder) {
	n := r.Nginx
	fmt.Fprintf(b, "## nginx: own keys, ticketkeys via the Lua module, rotation by reload\n\n")
	if n == nil || (len(n.Runs) == 0 && len(n.RTT) == 0 && len(n.Long) == 0 && len(n.Switch) == 0) {
		fmt.Fprintf(b, "Not measured (see Notes).\n\n")
		return
	}
	s := n.Settings
	fmt.Fprintf(b, "3 nginx nodes (%s), %d worker(s) each, behind the same random balancer as the Go rows (a node at random per connection), %s certificate. "+
		"Set-ups: own keys per node (no `ssl_session_ticket_key`: each nginx makes random keys at start); ticketkeys via the Lua module "+
		"(a shared window of current, next and 2 previous keys in a file, rewritten atomically per rotation as Vault Agent does, installed by "+
		"nginx/lib/resty/ticketkeys.lua without a reload); the same window as `ssl_session_ticket_key` files and a reload (SIGHUP to each master) per rotation. "+
		"%d users, %d connections in flight, %s pause; %s warm-up (not counted), then %s measured with a rotation every %s. "+
		"CPU is read from /proc: each master's utime+stime, and its workers' (live workers' utime+stime plus the master's cutime+cstime, "+
		"where the times of exited workers, the old generations of a reload, end up).\n\n",
		strings.Join(s.Builds, ", "), s.Workers, s.Cert, s.Users, s.Concurrency, s.Interval, s.Warmup, s.Duration, s.RotateEvery)
	if sum := n.Summary(); len(sum) > 0 {
		fmt.Fprintf(b, "| set-up | runs | resumed (of offered) | rotations | CPU/conn (µs) | vs own keys |\n|---|---:|---:|---:|---:|---:|\n")
		for _, x := range sum {
			fmt.Fprintf(b, "| %s | %d | %s | %d | %s | %s |\n", x.Label, x.Runs, pct(x.Share()), x.Rotations, us(x.CPUPerConn()), ratioNaN(x.RelOwn))
		}
		b.WriteString("\n")
	}
	if len(n.Runs) > 0 {
		fmt.Fprintf(b, "| TLS | set-up | conns | offered | resumed | failed/rotation | rotations | reloads | errors | workers CPU/conn (µs) | masters CPU/conn (µs) | handshake p50 (ms) | p99 (ms) |\n")
		fmt.Fprintf(b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range n.Runs {
			if x.Err != "" {
				fmt.Fprintf(b, "| %s | %s | failed: %s | | | | | | | | | | |\n", x.TLS, x.Label, mdEscape(x.Err))
				continue
			}
			fpr := "n/a"
			if v, ok := x.FailedPerRotation(); ok {
				fpr = fmt.Sprintf("%.1f", v)
			}
			fmt.Fprintf(b, "| %s | %s | %d | %d | %s | %s | %d | %d | %d | %s | %s | %s | %s |\n",
				x.TLS, x.Label, x.Connections, x.Offered, pct(x.ResumeShare()), fpr, len(x.Rotations), x.Reloads,
				x.HandshakeFailures+x.RequestFailures, us(x.WorkerCPUPerConn()), us(x.MasterCPUPerConn()), ms(x.P50), ms(x.P99))
		}
		b.WriteString("\n")
	}
	if len(n.RTT) > 0 {
		fmt.Fprintf(b, "Time to first byte of the same nodes behind the latency proxies of the Go rows (the same users, connections in flight and warm-up as there, "+
			"%s measured per RTT; the keys keep rotating as above):\n\n", s.RTTDuration)
		fmt.Fprintf(b, "| RTT | TLS | set-up | conns | resumed | errors | TTFB p50 (ms) | p99 (ms) | full p50 | resumed p50 |\n")
		fmt.Fprintf(b, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range n.RTT {
			if x.Err != "" {
				fmt.Fprintf(b, "| %s | %s | %s | failed: %s | | | | | | |\n", x.RTT, x.TLS, x.Label, mdEscape(x.Err))
				continue
			}
			share := "n/a"
			if x.Connections > 0 {
				share = pct(float64(x.Resumed) / float64(x.Connections))
			}
			fmt.Fprintf(b, "| %s | %s | %s | %d | %s | %d | %s | %s | %s | %s |\n", x.RTT, x.TLS, x.Label, x.Connections, share, x.Errors,
				ms0(x.All.P50), ms0(x.All.P99), statMS(x.Full, x.Full.P50), statMS(x.Resumption, x.Resumption.P50))
		}
		b.WriteString("\n")
	}
	if len(n.Long) > 0 {
		fmt.Fprintf(b, "What one rotation does to long-lived connections: %d idle HTTP/1.1 keep-alive connections and %d slow chunked responses "+
			"(a line every 500 ms, standing in for WebSocket-like streams) open on each node, TLS 1.3; then one rotation, the workers watched every 100 ms; "+
			"then a request on each keep-alive connection. Old workers are the generation a reload replaced; they linger while they still serve a stream.\n\n",
			s.LongPerNode, s.LongPerNode)
		fmt.Fprintf(b, "| set-up | worker_shutdown_timeout | keep-alive ended | streams ended | last stream end (s) | old workers | still alive at end | lingered (s) | old workers' RSS peak (MiB) | current workers' RSS (MiB) |\n")
		fmt.Fprintf(b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range n.Long {
			wst := "unset"
			if x.ShutdownTimeout > 0 {
				wst = x.ShutdownTimeout.String()
			}
			if x.Err != "" {
				fmt.Fprintf(b, "| %s | %s | failed: %s | | | | | | | |\n", x.Label, wst, mdEscape(x.Err))
				continue
			}
			last, linger := "-", "-"
			if x.StreamsEnded > 0 {
				last = fmt.Sprintf("%.1f", x.StreamsLastEnd.Seconds())
			}
			if x.OldWorkers > 0 {
				linger = fmt.Sprintf("%.1f", x.Linger.Seconds())
				if x.OldWorkersAtEnd > 0 {
					linger = fmt.Sprintf(">= %.0f (watch ended)", x.Observe.Seconds())
				}
			}
			fmt.Fprintf(b, "| %s | %s | %d of %d | %d of %d | %s | %d | %d | %s | %s | %s |\n", x.Label, wst,
				x.KeepAliveEnded, x.KeepAlive, x.StreamsEnded, x.Streams, last, x.OldWorkers, x.OldWorkersAtEnd, linger, mib(x.OldRSSPeak), mib(x.NewRSS))
		}
		b.WriteString("\n")
	}
	if len(n.Switch) > 0 {
		fmt.Fprintf(b, "The Lua module's switch at the published instants with the window file unchanged (as with Vault Agent stopped): one window "+
			"with a key activating every few seconds, written once; fresh TLS 1.2 handshakes probe the nodes in turn every 10 ms, and each "+
			"ticket's key name says which key encrypted it. The slowest switch lies between the two bounds: the latest a probe started after an "+
			"activation and still got the previous key, and the latest end of a node's first probe under the new key.\n\n")
		fmt.Fprintf(b, "| set-up | activations | gap (s) | probes | slowest switch, at least (ms) | at most (ms) | tickets under a key before its not_before | node-activations not seen |\n")
		fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range n.Switch {
			if x.Err != "" {
				fmt.Fprintf(b, "| %s | %d | %.0f | failed: %s | | | | |\n", x.Label, x.Activations, x.Gap.Seconds(), mdEscape(x.Err))
				continue
			}
			fmt.Fprintf(b, "| %s | %d | %.0f | %d | %s | %s | %d | %d |\n", x.Label, x.Activations, x.Gap.Seconds(), x.Probes,
				ms(x.LateMax), ms(x.SwitchedBy), x.Early, x.Unseen)
		}
		b.WriteString("\n")
	}
}
