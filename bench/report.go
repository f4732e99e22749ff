package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Settings are the knobs of one harness run, printed in the report.
type Settings struct {
	Users int `json:"users"`
	// Warmup precedes every measured load (nothing in it is counted).
	Warmup      time.Duration `json:"warmup_ns"`
	Concurrency int           `json:"concurrency"`
	Interval    time.Duration `json:"interval_ns"`
	// BaselineDuration is the load of the runs without rotation (single,
	// own, static); RotationDuration that of the rotating ones.
	BaselineDuration time.Duration `json:"baseline_duration_ns"`
	RotationDuration time.Duration `json:"rotation_duration_ns"`
	RotationPeriod   time.Duration `json:"rotation_period_ns"`
	SwitchGap        time.Duration `json:"switch_gap_ns"`
	Retain           time.Duration `json:"retain_ns"`
	HookUsers        int           `json:"hook_users"`
	HookConcurrency  int           `json:"hook_concurrency"`
	HookSegment      time.Duration `json:"hook_segment_ns"`
	HookRounds       int           `json:"hook_rounds"`
	HookRetain       time.Duration `json:"hook_retain_ns"`
	ReadConcurrency  int           `json:"read_concurrency"`
	ReadSegment      time.Duration `json:"read_segment_ns"`
	ReadRounds       int           `json:"read_rounds"`
	ReadFormat       string        `json:"read_format"`
	VaultVersion     string        `json:"vault_version"`
	PluginVersion    string        `json:"plugin_version"`
	Budget           time.Duration `json:"budget_ns"`
}

// DecryptResult is one window size of the decryption benchmark.
type DecryptResult struct {
	Window      int     `json:"window"`
	N           int     `json:"n"`
	NsPerOp     float64 `json:"ns_per_op"`
	AllocsPerOp int64   `json:"allocs_per_op"`
}

// ReadResult compares keyring reads with KV v2 reads of the same size:
// the built-in engine and, when measured, the same engine run as an
// external plugin (KVExternal), which pays the plugin gRPC hop as the
// keyring does.
type ReadResult struct {
	Keys       ReadCost  `json:"keys"`
	KV         ReadCost  `json:"kv"`
	KVExternal *ReadCost `json:"kv_external,omitempty"`
	// KVNoDefault is the built-in KV read with a token that lacks Vault's
	// `default` policy (nil when not measured).
	KVNoDefault *ReadCost `json:"kv_no_default,omitempty"`
	// KeysNoDefault is the keyring read with the same token: what a node
	// token of bootstrap/node-approle.sh costs (nil when not measured).
	KeysNoDefault *ReadCost `json:"keys_no_default,omitempty"`
	Concurrency   int       `json:"concurrency"`
	WindowKeys    int       `json:"window_keys"`
	// Audit says a file audit device was enabled during the reads.
	Audit bool `json:"audit"`
	// KeysProfile and KVProfile are CPU profiles of the Vault server
	// (sys/pprof/profile) taken during keyring reads and during built-in
	// KV reads; nil when not taken.
	KeysProfile *VaultProfile `json:"keys_profile,omitempty"`
	KVProfile   *VaultProfile `json:"kv_profile,omitempty"`
}

// Report is everything one harness run measured.
type Report struct {
	Started   time.Time       `json:"started"`
	Finished  time.Time       `json:"finished"`
	Machine   Machine         `json:"machine"`
	LoadStart string          `json:"loadavg_start"`
	LoadEnd   string          `json:"loadavg_end"`
	Settings  Settings        `json:"settings"`
	Runs      []RunResult     `json:"runs"`
	Hook      []HookCost      `json:"hook"`
	Decrypt   []DecryptResult `json:"decrypt"`
	Reads     *ReadResult     `json:"reads,omitempty"`
	// RTT is the time to first byte behind latency proxies (RTTSettings
	// describes the load); TTFBPlotFile its plot ("" when none was drawn).
	RTT          []RTTResult `json:"rtt,omitempty"`
	RTTSettings  RTTSettings `json:"rtt_settings"`
	TTFBPlotFile string      `json:"ttfb_plot_file,omitempty"`
	// Fleet is the fleet-scale runs (FleetSettings describes them).
	Fleet         []FleetResult `json:"fleet,omitempty"`
	FleetSettings FleetSettings `json:"fleet_settings"`
	// Nginx is the nginx part (nil when not run).
	Nginx *NginxReport `json:"nginx,omitempty"`
	// Notes are skipped steps and errors, in order.
	Notes []string `json:"notes"`
	// PlotFile is the PNG's file name, relative to the report ("" when no
	// plot was written).
	PlotFile string `json:"plot_file"`
}

// WriteJSON writes the report as indented JSON (the raw numbers).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond)) }

func pct(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

func ratio(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", v)
}

// WriteMarkdown writes the human report.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	s := r.Settings
	fmt.Fprintf(&b, "# ticketkeys benchmark\n\n")
	fmt.Fprintf(&b, "Run from %s to %s (%s). Produced by `make bench` (bench/cmd/ticketkeys-bench); "+
		"docs/benchmark.md explains how to read it.\n\n",
		r.Started.UTC().Format(time.RFC3339), r.Finished.UTC().Format(time.RFC3339), r.Finished.Sub(r.Started).Round(time.Second))

	fmt.Fprintf(&b, "## Machine\n\n")
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s |\n", r.Machine.CPUModel)
	fmt.Fprintf(&b, "| logical CPUs / GOMAXPROCS | %d / %d |\n", r.Machine.CPUs, r.Machine.GOMAXPROCS)
	fmt.Fprintf(&b, "| memory | %s |\n", r.Machine.MemTotal)
	fmt.Fprintf(&b, "| kernel, OS | %s, %s |\n", r.Machine.Kernel, r.Machine.OS)
	fmt.Fprintf(&b, "| Go | %s |\n", r.Machine.GoVersion)
	fmt.Fprintf(&b, "| Vault, plugin | %s, ticketkeys %s |\n", s.VaultVersion, s.PluginVersion)
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) at start | %s |\n", r.LoadStart)
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) at end | %s |\n\n", r.LoadEnd)
	fmt.Fprintf(&b, "The load client, the server nodes and Vault share these CPUs; a load average above the "+
		"number of CPUs means other work competed with the run and the CPU and latency figures are inflated.\n\n")

	r.writeSummary(&b)
	r.writeCluster(&b)
	r.writeHook(&b)
	r.writeDecrypt(&b)
	r.writeReads(&b)
	r.writeRTT(&b)
	r.writeFleet(&b)
	if r.Nginx != nil {
		r.writeNginx(&b)
	}
	r.writeMethod(&b)

	if len(r.Notes) > 0 {
		fmt.Fprintf(&b, "## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeSummary aggregates the cluster runs per scenario over every TLS
// version and certificate, and adds the hook and read ratios.
func (r *Report) writeSummary(b *strings.Builder) {
	type agg struct {
		label                             string
		runs, offered, resumed, rotations int
		rotating                          bool
		relSum                            float64
		relN                              int
	}
	var order []string
	by := map[string]*agg{}
	for _, x := range r.Runs {
		if x.Err != "" {
			continue
		}
		a := by[x.Scenario]
		if a == nil {
			a = &agg{label: x.Label}
			by[x.Scenario] = a
			order = append(order, x.Scenario)
		}
		a.runs++
		a.offered += x.Offered
		a.resumed += x.Resumed
		a.rotations += len(x.Rotations)
		a.rotating = a.rotating || x.Rotates
		if x.RelSingle > 0 {
			a.relSum += x.RelSingle
			a.relN++
		}
	}
	if len(order) == 0 && len(r.Hook) == 0 && r.Reads == nil && len(r.RTT) == 0 && len(r.Fleet) == 0 {
		return
	}
	fmt.Fprintf(b, "## Summary\n\n")
	if len(order) > 0 {
		fmt.Fprintf(b, "Over all TLS versions and certificates measured (details below):\n\n")
		fmt.Fprintf(b, "| scenario | runs | resumed | rotations | failed resumptions / rotation | server CPU / conn × single node (mean) |\n")
		fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|\n")
	}
	for _, id := range order {
		a := by[id]
		share := math.NaN()
		if a.offered > 0 {
			share = float64(a.resumed) / float64(a.offered)
		}
		rot, fpr := "—", "—"
		if a.rotating {
			rot = fmt.Sprintf("%d", a.rotations)
			if a.rotations > 0 {
				fpr = fmt.Sprintf("%.1f", float64(a.offered-a.resumed)/float64(a.rotations))
			}
		}
		rel := "n/a"
		if a.relN > 0 {
			rel = ratio(a.relSum / float64(a.relN))
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s |\n", a.label, a.runs, pct(share), rot, fpr, rel)
	}
	if len(order) > 0 {
		b.WriteString("\n")
	}
	for _, h := range r.Hook {
		if h.Err == "" {
			fmt.Fprintf(b, "- Hook cost, TLS %s: CPU per (resumed) connection with the client hook and a %d-key window is %s that of a plain single-key tls.Config.\n",
				h.TLS, h.Hook.WindowKeys, ratio(h.Ratio()))
		}
	}
	if x := r.Reads; x != nil && x.KV.PerSecond() > 0 && x.KV.P99 > 0 {
		fmt.Fprintf(b, "- Vault: a keyring read (%d keys) achieves %s the reads per second of a same-size KV v2 read, at %s its p99 latency.\n",
			x.WindowKeys, ratio(x.Keys.PerSecond()/x.KV.PerSecond()), ratio(float64(x.Keys.P99)/float64(x.KV.P99)))
		if e := x.KVExternal; e != nil && e.PerSecond() > 0 {
			fmt.Fprintf(b, "- Vault: the same KV engine as an external plugin achieves %s the reads per second of the built-in one (the plugin hop); the keyring read achieves %s of the external KV.\n",
				ratio(e.PerSecond()/x.KV.PerSecond()), ratio(x.Keys.PerSecond()/e.PerSecond()))
		}
		if kn := x.KeysNoDefault; kn != nil && kn.PerSecond() > 0 {
			fmt.Fprintf(b, "- Vault: with a node token of bootstrap/node-approle.sh (no `default` policy), a keyring read achieves %s the reads per second of the same-size KV v2 read with a token that carries `default`, at %s µs of Vault + plugin CPU against %s.\n",
				ratio(kn.PerSecond()/x.KV.PerSecond()), us(kn.VaultCPUPerRead()+kn.PluginCPUPerRead()), us(x.KV.VaultCPUPerRead()+x.KV.PluginCPUPerRead()))
		}
	}
	if l := r.summaryRTT(); l != "" {
		fmt.Fprintf(b, "- %s\n", l)
	}
	for _, f := range r.Fleet {
		if f.Err != "" {
			continue
		}
		held := "no activation measured"
		if share, keys, ok := f.ActivationShare(); ok {
			held = fmt.Sprintf("%s of the nodes held the next key at its activation (%d activations)", pctExact(share), keys)
		}
		fmt.Fprintf(b, "- Fleet of %d %s: %.0f reads/s mean, %d in the peak second, Vault + plugin %s µs CPU per read; %s.\n",
			f.Nodes, fleetLabel(f.Kind), f.AvgReadsPerSecond(), f.PeakReadsPerSecond(), us(f.CPUPerRead()), held)
	}
	b.WriteString("\n")
}

// summaryRTT is one line: the median time to first byte of ticketkeys
// against own keys, per TLS version and RTT.
func (r *Report) summaryRTT() string {
	var parts []string
	for _, k := range rttKeys(r.RTT) {
		var own, tk *RTTResult
		for i := range r.RTT {
			x := &r.RTT[i]
			if x.Err != "" || x.RTT != k.RTT || x.TLS != k.TLS {
				continue
			}
			switch x.Scenario {
			case "own":
				own = x
			case "ticketkeys":
				tk = x
			}
		}
		if own != nil && tk != nil {
			parts = append(parts, fmt.Sprintf("TLS %s at %s RTT %s ms", k.TLS, k.RTT, ms0(tk.All.P50-own.All.P50)))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "Time to first byte, median over all connections, ticketkeys minus own keys (3 nodes): " + strings.Join(parts, "; ") +
		" (TLS 1.2 saves a round trip, TLS 1.3 only CPU)."
}

func (r *Report) writeCluster(b *strings.Builder) {
	s := r.Settings
	fmt.Fprintf(b, "## Cluster resumption\n\n")
	fmt.Fprintf(b, "3 Go TLS server nodes (one child process), a random node per connection, %d simulated users each "+
		"with its own session cache, %d connections in flight with %s between a worker's connections. "+
		"Every run starts with %s of warm-up load that is not counted (it gives the users their first tickets); "+
		"then runs without rotation measure %s, rotating runs %s (rotation period %s; scenario 3 switches nodes %s apart).\n\n",
		s.Users, s.Concurrency, s.Interval, s.Warmup, s.BaselineDuration, s.RotationDuration, s.RotationPeriod, s.SwitchGap)
	if len(r.Runs) == 0 {
		fmt.Fprintf(b, "No cluster run completed.\n\n")
		return
	}
	fmt.Fprintf(b, "| TLS | cert | scenario | conns | conn/s | offered | resumed | failed resumptions | rotations | failed / rotation | errors | server CPU / conn (ms) | × single node | handshake p50 (ms) | p99 (ms) |\n")
	fmt.Fprintf(b, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.Runs {
		if x.Err != "" {
			fmt.Fprintf(b, "| %s | %s | %s | failed: %s | | | | | | | | | | | |\n", x.TLS, x.Cert, x.Label, mdEscape(x.Err))
			continue
		}
		fpr := "—"
		if v, ok := x.FailedPerRotation(); ok {
			fpr = fmt.Sprintf("%.1f", v)
		}
		rot := "—"
		if x.Rotates {
			rot = fmt.Sprintf("%d", len(x.Rotations))
		}
		rel := ratio(x.RelSingle)
		if x.Scenario == "single" {
			rel = "1.00× (reference)"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %d | %.0f | %d | %s | %d | %s | %s | %d | %s | %s | %s | %s |\n",
			x.TLS, x.Cert, x.Label, x.Connections, x.ConnRate(), x.Offered, pct(x.ResumeShare()),
			x.FailedResumptions(), rot, fpr, x.HandshakeFailures+x.RequestFailures,
			ms(x.CPUPerConn()), rel, ms(x.P50), ms(x.P99))
	}
	b.WriteString("\n")
	for _, x := range r.Runs {
		if len(x.ErrorSamples) == 0 {
			continue
		}
		var parts []string
		for msg, n := range x.ErrorSamples {
			parts = append(parts, fmt.Sprintf("%q ×%d", msg, n))
		}
		sort.Strings(parts)
		fmt.Fprintf(b, "- errors in TLS %s, %s, %s: %s\n", x.TLS, x.Cert, x.Label, mdEscape(strings.Join(parts, "; ")))
	}
	for _, x := range r.Runs {
		if x.Scenario != "ticketkeys" || len(x.Sources) == 0 {
			continue
		}
		var cur, next, prev, miss, refreshes, refreshErr uint64
		for _, s := range x.Sources {
			cur += s.HitCurrent
			next += s.HitNext
			prev += s.HitPrevious
			miss += s.Miss
			refreshes += s.Refreshes
			refreshErr += s.RefreshErrors
		}
		fmt.Fprintf(b, "- ticketkeys, TLS %s, %s: tickets decrypted by the current key %d, by a next key %d, by a previous key %d, misses %d; "+
			"Vault reads by the 3 nodes %d (failed %d).\n", x.TLS, x.Cert, cur, next, prev, miss, refreshes, refreshErr)
	}
	if r.PlotFile != "" {
		fmt.Fprintf(b, "\n![share of offered tickets resumed per second, one line per scenario, rotation instants dashed](%s)\n\n", r.PlotFile)
	}
}

func (r *Report) writeHook(b *strings.Builder) {
	s := r.Settings
	fmt.Fprintf(b, "## Hook cost\n\n")
	fmt.Fprintf(b, "One node, %d users, %d connections in flight without pause, so nearly every handshake is resumed; "+
		"%d rounds of %s (after 1s of warm-up) per configuration, alternating plain and hook. The hook's keyring rotates every %s and "+
		"retains keys %s, so its window holds current, next and previous keys.\n\n",
		s.HookUsers, s.HookConcurrency, s.HookRounds, s.HookSegment, s.RotationPeriod, s.HookRetain)
	if len(r.Hook) == 0 {
		fmt.Fprintf(b, "Not measured (see Notes).\n\n")
		return
	}
	fmt.Fprintf(b, "| TLS | cert | configuration | keys in window | conns | resumed | server CPU / conn (µs) | ratio hook / plain |\n")
	fmt.Fprintf(b, "|---|---|---|---:|---:|---:|---:|---:|\n")
	for _, h := range r.Hook {
		if h.Err != "" {
			fmt.Fprintf(b, "| %s | %s | failed: %s | | | | | |\n", h.TLS, h.Cert, mdEscape(h.Err))
			continue
		}
		for _, side := range []HookSide{h.Plain, h.Hook} {
			rt := ""
			if side.Config == h.Hook.Config {
				rt = ratio(h.Ratio())
			}
			fmt.Fprintf(b, "| %s | %s | %s | %d | %d | %s | %s | %s |\n", h.TLS, h.Cert, side.Config, side.WindowKeys,
				side.Connections, pct(side.ResumedShare()), us(side.CPUPerConn()), rt)
		}
		if h.Hook.HitCurrent+h.Hook.HitOther > 0 {
			fmt.Fprintf(b, "| %s | %s | (hook tickets: %d by the current key, %d by another key of the window) | | | | | |\n",
				h.TLS, h.Cert, h.Hook.HitCurrent, h.Hook.HitOther)
		}
	}
	b.WriteString("\n")
}

func (r *Report) writeDecrypt(b *strings.Builder) {
	fmt.Fprintf(b, "## Ticket decryption by window size (testing.B)\n\n")
	if len(r.Decrypt) == 0 {
		fmt.Fprintf(b, "Not measured (see Notes).\n\n")
		return
	}
	fmt.Fprintf(b, "`BenchmarkDecryptTicket/window=N` (bench/decrypt_test.go; `go test -bench DecryptTicket ./bench/`): "+
		"a ticket made with the oldest of N keys, decrypted through the client hook (a real Source's UnwrapSession). "+
		"Each ticket starts with the 16-byte name of the key that made it, so the hook looks the key up and tries "+
		"exactly one, whatever the window size: a forged or unknown ticket costs one lookup, not N decryptions. "+
		"(`legacy/window=N` in the go test output is a ticket of the previous release, without the name, which is "+
		"tried against at most `client.LegacyTicketKeys` keys while `WithLegacyTicketsUntil` accepts such tickets during a rolling upgrade.)\n\n")
	fmt.Fprintf(b, "| window | ns/op | allocs/op | × window=1 |\n|---:|---:|---:|---:|\n")
	base := r.Decrypt[0].NsPerOp
	for _, d := range r.Decrypt {
		rel := "n/a"
		if base > 0 && r.Decrypt[0].Window == 1 {
			rel = ratio(d.NsPerOp / base)
		}
		fmt.Fprintf(b, "| %d | %.0f | %d | %s |\n", d.Window, d.NsPerOp, d.AllocsPerOp, rel)
	}
	b.WriteString("\n")
}

func (r *Report) writeReads(b *strings.Builder) {
	s := r.Settings
	fmt.Fprintf(b, "## Vault read cost\n\n")
	if r.Reads == nil {
		fmt.Fprintf(b, "Not measured (see Notes).\n\n")
		return
	}
	x := r.Reads
	audit := "no audit device"
	if x.Audit {
		audit = "a file audit device enabled (every read is audited, as in production)"
	}
	fmt.Fprintf(b, "Same Vault with %s, same non-root token (policy: read on every path), %d concurrent readers, "+
		"%d alternating rounds of %s per path. The keyring read is `ticketkeys/keys/:name?format=%s` of a window of %d keys; "+
		"each KV v2 secret holds one value whose JSON data is the same size. `kv/` is the KV engine built into Vault; `kvx/` "+
		"(when measured) is the same engine (github.com/hashicorp/vault-plugin-secrets-kv, the version Vault builds in) run as an "+
		"external plugin, so it pays the plugin gRPC hop as the keyring does. CPU per read is read from /proc for the Vault "+
		"server process and for its plugin processes during each path's rounds (it includes Vault's idle work, which is small).\n\n",
		audit, x.Concurrency, s.ReadRounds, s.ReadSegment, s.ReadFormat, x.WindowKeys)
	fmt.Fprintf(b, "| read | data bytes | reads | errors | reads/s | × built-in KV v2 | p50 (ms) | p99 (ms) | Vault CPU / read (µs) | plugin CPU / read (µs) | audit bytes / read |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	rows := []ReadCost{x.Keys, x.KV}
	if x.KVExternal != nil {
		rows = append(rows, *x.KVExternal)
	}
	noDefault := map[string]bool{}
	for _, c := range []*ReadCost{x.KVNoDefault, x.KeysNoDefault} {
		if c != nil {
			rows = append(rows, *c)
			noDefault[c.Name] = true
		}
	}
	for _, c := range rows {
		rel := "n/a"
		if x.KV.PerSecond() > 0 {
			rel = ratio(c.PerSecond() / x.KV.PerSecond())
		}
		path := "`" + c.Path + "`"
		if noDefault[c.Name] {
			path += ", token without `default` policy"
		}
		fmt.Fprintf(b, "| %s | %d | %d | %d | %.0f | %s | %s | %s | %s | %s | %.0f |\n", path, c.DataBytes, c.Reads, c.Errors, c.PerSecond(), rel,
			ms(c.P50), ms(c.P99), us(c.VaultCPUPerRead()), us(c.PluginCPUPerRead()), c.AuditBytesPerRead())
	}
	tput, p99 := 0.0, 0.0
	if x.KV.PerSecond() > 0 {
		tput = x.Keys.PerSecond() / x.KV.PerSecond()
	}
	if x.KV.P99 > 0 {
		p99 = float64(x.Keys.P99) / float64(x.KV.P99)
	}
	fmt.Fprintf(b, "\nRatio keyring / KV v2: reads per second %s, p99 %s.", ratio(tput), ratio(p99))
	goal := "not met"
	if tput >= 0.9 {
		goal = "met"
	}
	fmt.Fprintf(b, " Goal: at least 0.90× the built-in KV v2 reads per second: %s.", goal)
	if e := x.KVExternal; e != nil && e.PerSecond() > 0 && x.KV.PerSecond() > 0 {
		hop := e.PerSecond() / x.KV.PerSecond()
		fmt.Fprintf(b, " The same KV engine as an external plugin reaches %s of the built-in one: that is the cost of the plugin hop, "+
			"which no external plugin can avoid; against it the keyring reaches %s (the engine's own difference at equal hop).",
			ratio(hop), ratio(x.Keys.PerSecond()/e.PerSecond()))
		if tput < 1 {
			share := (1 - hop) / (1 - tput)
			fmt.Fprintf(b, " Of the keyring's shortfall to the built-in KV (%.2f), the hop accounts for %.2f (%.0f%%).", 1-tput, 1-hop, 100*min(max(share, 0), 9.99))
		}
	}
	if nd := x.KVNoDefault; nd != nil && nd.PerSecond() > 0 && x.KV.PerSecond() > 0 {
		fmt.Fprintf(b, " The built-in KV read with a token without Vault's `default` policy reaches %s of the same read with it: "+
			"Vault re-parses the templated `default` policy on every request of a token that carries it, whatever the engine.",
			ratio(nd.PerSecond()/x.KV.PerSecond()))
		if kn := x.KeysNoDefault; kn != nil && kn.PerSecond() > 0 {
			fmt.Fprintf(b, " The node tokens of `bootstrap/node-approle.sh` lack `default` (they carry the reader policy and `ticketkeys-token-self`): "+
				"with such a token the keyring read reaches %s of the built-in KV read with a token that carries `default` (how most KV "+
				"readers are set up) and %s of the built-in KV read with the same token (the plugin hop again).",
				ratio(kn.PerSecond()/x.KV.PerSecond()), ratio(kn.PerSecond()/nd.PerSecond()))
		}
	}
	b.WriteString("\n\n")
	for _, c := range rows {
		if c.FirstError != "" {
			fmt.Fprintf(b, "- first error reading `%s`: %s\n", c.Path, mdEscape(c.FirstError))
		}
	}
	r.writeProfiles(b, x)
}

// writeProfiles breaks the Vault server's CPU per read down by part, for
// the keyring and the built-in KV read.
func (r *Report) writeProfiles(b *strings.Builder, x *ReadResult) {
	kp, vp := x.KeysProfile, x.KVProfile
	if kp == nil || vp == nil {
		return
	}
	fmt.Fprintf(b, "**Where a read's time goes inside the Vault server**: CPU profiles of the Vault process (`sys/pprof/profile`, %.0f s each, "+
		"saved as `logs/%s` and `logs/%s`) during keyring reads and during built-in KV reads, at the same concurrency; each part is the "+
		"cumulative CPU of one function of Vault %s divided by the reads served during the profile. Parts marked \"of which\" are inside "+
		"the part above them. The plugin process's own CPU (the gRPC server side, the engine's handler and its encoding) is not in "+
		"a Vault profile: it is the plugin CPU per read of the table above.\n\n",
		kp.Seconds, kp.File, vp.File, r.Settings.VaultVersion)
	if len(kp.PartsPerRead) == 0 || len(vp.PartsPerRead) == 0 {
		fmt.Fprintf(b, "(The `go` tool was not at hand to break the profiles down: `go tool pprof -top -cum logs/%s`.)\n\n", kp.File)
		return
	}
	fmt.Fprintf(b, "| Vault server CPU per read (µs) | keyring | built-in KV v2 | difference |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(b, "| **all (profile total)** | %s | %s | %s |\n", us(kp.TotalPerRead), us(vp.TotalPerRead), us(kp.TotalPerRead-vp.TotalPerRead))
	for _, p := range ProfileParts {
		k, v := kp.PartsPerRead[p.Name], vp.PartsPerRead[p.Name]
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", p.Name, us(k), us(v), us(k-v))
	}
	if x.KVExternal != nil {
		fmt.Fprintf(b, "| plugin process, all (from /proc, table above) | %s | — | |\n", us(x.Keys.PluginCPUPerRead()))
	}
	b.WriteString("\n")
	if kp.Top != "" {
		fmt.Fprintf(b, "<details><summary>Heaviest functions by own time during keyring reads (go tool pprof -top)</summary>\n\n```\n%s```\n\n</details>\n\n", topLines(kp.Top, 40))
	}
}

// topLines keeps the first n lines of `go tool pprof -top` output.
func topLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "")
}

func (r *Report) writeMethod(b *strings.Builder) {
	fmt.Fprintf(b, "## How each number was measured\n\n")
	for _, l := range []string{
		"**Scenarios.** (1) every node keeps crypto/tls's own random keys; (2) every node has the same key, set once; " +
			"(3) every rotation period a new shared key replaces the old one, which is dropped, node i switching i × the gap after node 0; " +
			"(4) every node runs its own client.Source against a real Vault with the plugin built from this checkout, " +
			"a keyring created just before the run, rotating during it. The single node serves the same users alone and is the CPU reference.",
		"**Warm-up.** Each run's load starts with a warm-up that gives most users a ticket; the measurement (connections, CPU, " +
			"latencies, rotations, the plot's time axis) starts when it ends, at the child's first CPU sample.",
		"**Offered / resumed.** A connection offers a ticket when its user's session cache held one at handshake time; " +
			"it resumed when tls.ConnectionState.DidResume is true (internal/resumption). Resumed is resumed / offered.",
		"**Failed resumptions per rotation.** Offered minus resumed over the whole run, divided by the rotations during the load " +
			"(scenario 3: the instants node 0 switched; scenario 4: the not_before of every key that activated during the load, " +
			"from the engine's history endpoint, one-second precision). Only for scenarios that rotate.",
		"**Connections cut by the end of the load** (the deadline cancels the connections in flight; internal/resumption marks them aborted) " +
			"are left out of every count; `benchmark.json` has their number per run (cut_at_end).",
		"**Server CPU per connection.** The child process running the nodes reads its own getrusage(RUSAGE_SELF) (user + system) " +
			"when the load starts and when it ends; the difference divided by the connections made. The load client runs in the " +
			"harness process and is not counted; scenario 4 includes the nodes' Vault reads.",
		"**× single node.** A cluster's CPU per connection divided by the single node's for the same TLS version and certificate.",
		"**Handshake latency.** Client-side wall time of tls.Conn.Handshake on loopback, all successful handshakes of the run; " +
			"it includes the client's own CPU and any queueing on the shared CPUs.",
		"**Plot.** For every second of a run, resumed / offered of the connections that started in it (seconds with nothing offered are left out).",
		"**Hook cost.** Same method as server CPU per connection, with one node, few users and no pause between connections: " +
			"the plain configuration uses tls.Config.SetSessionTicketKeys with one key, the hook uses client.Source.ConfigureServer on a live keyring.",
		"**Vault read cost.** Workers read the path in a loop through the Vault API client (one idle connection per worker), " +
			"each round bounded in time and count; reads/s is successful reads over wall time, p50/p99 over all successful reads.",
		"**Vault and plugin CPU.** utime + stime of the Vault server process and of its child processes (the plugins, named by " +
			"executable) from /proc/<pid>/stat (USER_HZ = 100), read around each measured segment.",
		"**Time to first byte.** One latency proxy per node (bench/latencyproxy.go): each direction delayed by RTT/2 with bounded " +
			"queues, order and spacing kept, the client's first bytes held one extra RTT for the TCP handshake. A new TLS connection per " +
			"request; from the start of the dial to the first response byte; full and resumed split by ConnectionState.DidResume.",
		"**Fleet.** Simulated nodes in the harness process, each with its own token and API client. A node holds a key from the end " +
			"of the first read that returned it; a key's publication is its not_before − publish_ahead (whole seconds, as the engine sets them).",
	} {
		fmt.Fprintf(b, "- %s\n", l)
	}
	b.WriteString("\n")
}

// mdEscape makes s safe inside a table cell.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
