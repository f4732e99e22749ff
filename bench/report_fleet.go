package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// FleetSettings are the knobs of the fleet runs.
type FleetSettings struct {
	Nodes            int           `json:"nodes"`
	RotationPeriod   time.Duration `json:"rotation_period_ns"`
	Retain           time.Duration `json:"retain_ns"`
	Duration         time.Duration `json:"duration_ns"`
	StartConcurrency int           `json:"start_concurrency"`
	AgentFormat      string        `json:"agent_format"`
	// CPUs is the machine's logical CPUs (Vault's ceiling here).
	CPUs int `json:"cpus"`
}

// FleetProjection is the load of a fleet of Nodes at a production
// rotation period, projected from a measured FleetResult (see Project).
type FleetProjection struct {
	Nodes          int
	RotationPeriod time.Duration
	// Spread is how long after a window change the fleet's re-reads are
	// spread over: the engine's ttl jitter (max(period/20, 1s), at most
	// 30s, plus its rounding second) and the reader's own delay.
	Spread time.Duration
	// AvgReadsPerSecond is Nodes x reads per node per period / period;
	// PeakReadsPerSecond is Nodes / Spread (every node re-reads once
	// after a change).
	AvgReadsPerSecond, PeakReadsPerSecond float64
	// AvgCores and PeakCores are those rates times the measured Vault +
	// plugin CPU per read.
	AvgCores, PeakCores float64
	// DrainOnCPUs is how long the burst takes on cpus cores when PeakCores
	// exceeds them (else Spread).
	DrainOnCPUs time.Duration
	// AuditPerDay is the audit log written per day.
	AuditPerDay float64
}

// engineJitterSpread is the spread of a fleet's re-reads after a window
// change, from the engine's ttl (path_keys.go ttlSeconds: the time to the
// change rounded up to whole seconds, plus a jitter of 0 .. max(period/20,
// 1s) capped at 30s) and the reader's own delay (Agent: +1 s for every
// reader alike; Source: a jitter of ttl/20, 100ms .. 5s).
func engineJitterSpread(period time.Duration, kind string) time.Duration {
	j := min(max(period/20, time.Second), 30*time.Second) + time.Second
	switch kind {
	case FleetAgents:
		return j // the +1 s shifts, it does not spread
	default:
		return j + min(max(period/20, 100*time.Millisecond), 5*time.Second)
	}
}

// Project scales r to nodes at a rotation period, on cpus cores.
func (r FleetResult) Project(nodes int, period time.Duration, cpus int) FleetProjection {
	p := FleetProjection{Nodes: nodes, RotationPeriod: period, Spread: engineJitterSpread(period, r.Kind)}
	perRead := r.CPUPerRead().Seconds()
	p.AvgReadsPerSecond = float64(nodes) * r.ReadsPerNodePerPeriod() / period.Seconds()
	p.PeakReadsPerSecond = float64(nodes) / p.Spread.Seconds()
	p.AvgCores = p.AvgReadsPerSecond * perRead
	p.PeakCores = p.PeakReadsPerSecond * perRead
	p.DrainOnCPUs = p.Spread
	if cpus > 0 && p.PeakCores > float64(cpus) {
		p.DrainOnCPUs = time.Duration(float64(nodes) * perRead / float64(cpus) * float64(time.Second))
	}
	if r.Reads > 0 {
		p.AuditPerDay = p.AvgReadsPerSecond * 86400 * float64(r.AuditBytes) / float64(r.Reads)
	}
	return p
}

func fleetLabel(kind string) string {
	switch kind {
	case FleetSources:
		return "client.Source (Go), format go"
	case FleetAgents:
		return "Agent-style readers (ttl + 1 s), format nginx"
	}
	return kind
}

func bytesHuman(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

// cores2 prints a CPU load in cores with two significant digits.
func cores2(c float64) string { return strconv.FormatFloat(c, 'g', 2, 64) }

func secs(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }

func (r *Report) writeFleet(b *strings.Builder) {
	s := r.FleetSettings
	fmt.Fprintf(b, "## Fleet scale\n\n")
	if len(r.Fleet) == 0 {
		fmt.Fprintf(b, "Not measured (see Notes).\n\n")
		return
	}
	fmt.Fprintf(b, "%d simulated nodes in the harness process against the one Vault of this run (file audit device on), each with its own "+
		"token, shaped like a node token of bootstrap/node-approle.sh (the reader policy and ticketkeys-token-self, without Vault's `default` policy), and its own API client and connection, reading a keyring created for the run "+
		"(rotation_period %s, retain %s, publish_ahead = rotation_period). At most %d first reads in flight while the fleet starts; "+
		"then %s measured. Either every node is a client.Source (what a Go server embeds), or an Agent-style reader: it reads the "+
		"`%s` format and reads again ttl + 1 s later, as Vault Agent's consul-template does. A node *holds* a key once a read "+
		"returned it (Agent's file write and the server's reload are not included).\n\n",
		s.Nodes, s.RotationPeriod, s.Retain, s.StartConcurrency, s.Duration, s.AgentFormat)
	fmt.Fprintf(b, "**Load on Vault.**\n\n")
	fmt.Fprintf(b, "| nodes read with | nodes | startup (s) | reads | errors | reads/s mean | reads/s peak second | reads / node / period | read p50 (ms) | p99 (ms) | Vault + plugin CPU, cores mean | peak second | CPU / read, Vault + plugin (µs) | audit / read |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.Fleet {
		if x.Err != "" {
			fmt.Fprintf(b, "| %s | %d | failed: %s | | | | | | | | | | | |\n", fleetLabel(x.Kind), x.Nodes, mdEscape(x.Err))
			continue
		}
		cores := 0.0
		if sec := x.Seconds(); sec > 0 {
			cores = x.TotalCPU().Seconds() / sec
		}
		auditPerRead := 0.0
		if x.Reads > 0 {
			auditPerRead = float64(x.AuditBytes) / float64(x.Reads)
		}
		fmt.Fprintf(b, "| %s | %d | %s | %d | %d | %.0f | %d | %.2f | %s | %s | %.2f | %.2f | %s = %s + %s | %s |\n",
			fleetLabel(x.Kind), x.Nodes, secs(x.Startup), x.Reads, x.ReadErrors, x.AvgReadsPerSecond(), x.PeakReadsPerSecond(),
			x.ReadsPerNodePerPeriod(), ms(x.ReadP50), ms(x.ReadP99), cores, x.PeakCores(), us(x.CPUPerRead()),
			us(perRead(x.VaultCPU, x.Reads)), us(perRead(x.TotalCPU()-x.VaultCPU, x.Reads)), bytesHuman(auditPerRead))
	}
	fmt.Fprintf(b, "\n**Keys reaching the nodes** (publish_ahead %s).\n\n", r.fleetPublishAhead())
	fmt.Fprintf(b, "| nodes read with | keys published and activated in the window | publish → last node holds it, median / worst (s) | keys activated in the window | held by every node at activation |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|\n")
	for _, x := range r.Fleet {
		if x.Err != "" {
			continue
		}
		med, worst, keys, incomplete := x.Propagation()
		prop := "—"
		if keys > 0 {
			prop = fmt.Sprintf("%s / %s", secs(med), secs(worst))
			if incomplete > 0 {
				prop += fmt.Sprintf(" (%d of them not held by every node by the end of the run)", incomplete)
			}
		}
		act, activated := "no activation measured", 0
		if share, n, ok := x.ActivationShare(); ok {
			act, activated = fmt.Sprintf("%s of %d node-activations", pctExact(share), n*x.Nodes), n
		}
		fmt.Fprintf(b, "| %s | %d | %s | %d | %s |\n", fleetLabel(x.Kind), keys, prop, activated, act)
	}
	b.WriteString("\nRead latency is measured in the harness process, which runs all the nodes (1,000 Sources decode their " +
		"windows there) on the CPUs Vault uses: when Vault's peak second stays well under the machine's cores, the latency is " +
		"mostly the clients' own CPU and the machine's other load, not Vault's queue.\n\n")
	for _, x := range r.Fleet {
		if x.FirstError != "" {
			fmt.Fprintf(b, "- first read error (%s): %s\n", fleetLabel(x.Kind), mdEscape(x.FirstError))
		}
		if share, _, ok := x.ActivationShare(); ok && share < 1 {
			fmt.Fprintf(b, "- **%s: not every node held the next key at its activation** (%s): those nodes could not decrypt tickets made with it by nodes that switched on time.\n",
				fleetLabel(x.Kind), pctExact(share))
		}
	}
	r.writeFleetProjection(b)
}

// fleetPublishAhead is the keyring's publish_ahead as the fleet saw it.
func (r *Report) fleetPublishAhead() string {
	for _, x := range r.Fleet {
		if x.PublishAhead > 0 {
			return x.PublishAhead.String()
		}
	}
	return "unknown"
}

// pctExact prints a share with enough digits that anything below 100%
// never prints as 100.0%.
func pctExact(v float64) string {
	if v >= 1 {
		return "100%"
	}
	return fmt.Sprintf("%.3f%%", math.Floor(v*100000)/1000)
}

func (r *Report) writeFleetProjection(b *strings.Builder) {
	cpus := r.FleetSettings.CPUs
	period := time.Hour
	fmt.Fprintf(b, "\n**Extrapolation** to larger fleets at the default rotation_period of %s (publish_ahead %s), from the measured "+
		"reads per node per period and CPU and audit bytes per read, on %d cores like this machine's. After every window change "+
		"each node re-reads once, spread over the engine's ttl jitter (%s at a 1h period) and the reader's own delay; between "+
		"changes Vault is idle. Linear scaling is an assumption: it holds while Vault's CPU is what "+
		"limits (not tokens, connections or storage, which this run does not scale).\n\n", period, period, cpus, min(max(period/20, time.Second), 30*time.Second))
	fmt.Fprintf(b, "| nodes read with | nodes | reads/s mean | reads/s in the burst after a change | burst spread (s) | Vault cores mean | cores needed in the burst | burst lasts on %d cores (s) | audit log per day |\n", cpus)
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.Fleet {
		if x.Err != "" || x.Reads == 0 {
			continue
		}
		for _, n := range []int{1000, 10000, 100000} {
			p := x.Project(n, period, cpus)
			fmt.Fprintf(b, "| %s | %d | %.1f | %.0f | %s | %s | %s | %s | %s |\n", fleetLabel(x.Kind), n, p.AvgReadsPerSecond,
				p.PeakReadsPerSecond, secs(p.Spread), cores2(p.AvgCores), cores2(p.PeakCores), secs(p.DrainOnCPUs), bytesHuman(p.AuditPerDay))
		}
	}
	b.WriteString("\n")
	for _, l := range fleetLimitLines(r.Fleet, cpus, period) {
		fmt.Fprintf(b, "- %s\n", l)
	}
	b.WriteString("\n")
}

// fleetLimitLines say, from the projection, what limits first.
func fleetLimitLines(results []FleetResult, cpus int, period time.Duration) []string {
	var out []string
	for _, x := range results {
		if x.Err != "" || x.Reads == 0 {
			continue
		}
		p := x.Project(100000, period, cpus)
		line := fmt.Sprintf("%s at 100,000 nodes: the mean load is small (%.1f reads/s, %.2f cores); what limits first is the burst after each change: "+
			"%.0f reads/s need %.1f cores for %ss", fleetLabel(x.Kind), p.AvgReadsPerSecond, p.AvgCores, p.PeakReadsPerSecond, p.PeakCores, secs(p.Spread))
		if p.PeakCores > float64(cpus) {
			line += fmt.Sprintf("; on %d cores it queues and lasts about %ss, still far inside publish_ahead (%s), so every node holds the next key "+
				"before it activates, but read latency in the burst grows to seconds", cpus, secs(p.DrainOnCPUs), period)
		} else {
			line += fmt.Sprintf(", which %d cores absorb", cpus)
		}
		line += fmt.Sprintf(". Next is the audit log: %s per day.", bytesHuman(p.AuditPerDay))
		out = append(out, line)
	}
	return out
}
