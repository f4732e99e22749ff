package bench

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// RTTSettings are the knobs of the time-to-first-byte measurement.
type RTTSettings struct {
	RTTs        []time.Duration `json:"rtts_ns"`
	Users       int             `json:"users"`
	Concurrency int             `json:"concurrency"`
	Warmup      time.Duration   `json:"warmup_ns"`
	Duration    time.Duration   `json:"duration_ns"`
	Cert        string          `json:"cert"`
}

// rttKey groups the results of one RTT and TLS version.
type rttKey struct {
	RTT time.Duration
	TLS string
}

// pooled returns the time to first byte of every full and every resumed
// handshake of the results at k, over both scenarios (the handshake kind,
// not the scenario, sets the round trips).
func pooled(results []RTTResult, k rttKey) (full, resumed TTFBStats) {
	var f, r []time.Duration
	for _, x := range results {
		if x.Err != "" || x.RTT != k.RTT || x.TLS != k.TLS {
			continue
		}
		for _, ms := range x.FullMS {
			f = append(f, time.Duration(ms*float64(time.Millisecond)))
		}
		for _, ms := range x.ResumedMS {
			r = append(r, time.Duration(ms*float64(time.Millisecond)))
		}
	}
	return ttfbStats(f), ttfbStats(r)
}

func rttKeys(results []RTTResult) []rttKey {
	seen := map[rttKey]bool{}
	var keys []rttKey
	for _, x := range results {
		k := rttKey{x.RTT, x.TLS}
		if x.Err == "" && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].RTT != keys[j].RTT {
			return keys[i].RTT < keys[j].RTT
		}
		return keys[i].TLS < keys[j].TLS
	})
	return keys
}

func msRTT(d time.Duration, rtt time.Duration) string {
	if rtt <= 0 {
		return ms0(d) + " ms"
	}
	return fmt.Sprintf("%s ms (%.1f RTT)", ms0(d), float64(d)/float64(rtt))
}

// ms0 prints whole milliseconds (never "-0").
func ms0(d time.Duration) string {
	v := math.Round(float64(d) / float64(time.Millisecond))
	if v == 0 {
		v = 0 // drops the sign of -0
	}
	return fmt.Sprintf("%.0f", v)
}

// rttSavingsLines are the report's plain statements of what resumption
// saves, computed from the measured medians.
func rttSavingsLines(results []RTTResult) []string {
	var out []string
	for _, k := range rttKeys(results) {
		full, res := pooled(results, k)
		if full.N == 0 || res.N == 0 {
			out = append(out, fmt.Sprintf("TLS %s at %s: not enough of both handshake kinds to compare (full %d, resumed %d).", k.TLS, k.RTT, full.N, res.N))
			continue
		}
		saved := full.P50 - res.P50
		rtts := float64(saved) / float64(k.RTT)
		if math.Abs(rtts) < 0.005 {
			rtts = 0 // no "-0.00"
		}
		verdict := "resumption saves a round trip"
		if rtts < 0.5 {
			verdict = "resumption saves no round trip, only CPU"
		}
		out = append(out, fmt.Sprintf("TLS %s at %s RTT: full handshake p50 %s, resumed p50 %s: full − resumed = %s ms (%.2f RTT) per new connection; %s.",
			k.TLS, k.RTT, msRTT(full.P50, k.RTT), msRTT(res.P50, k.RTT), ms0(saved), rtts, verdict))
	}
	return out
}

func (r *Report) writeRTT(b *strings.Builder) {
	s := r.RTTSettings
	fmt.Fprintf(b, "## Time to first byte over a round trip\n\n")
	if len(r.RTT) == 0 {
		fmt.Fprintf(b, "Not measured (see Notes).\n\n")
		return
	}
	var rtts []string
	for _, d := range s.RTTs {
		rtts = append(rtts, d.String())
	}
	fmt.Fprintf(b, "Each of the 3 nodes sits behind a latency-injecting proxy on 127.0.0.1 (bench/latencyproxy.go) that delays each "+
		"direction by RTT/2 and holds the client's first bytes one extra RTT for the TCP handshake, at RTT %s. "+
		"%d users (each with its own session cache), %d connections in flight, a new TLS connection per request, %s certificate; "+
		"per RTT at least %s of warm-up (not counted; long enough for every user to connect once, so the users hold tickets), then %s measured. Time to first byte (TTFB) runs from the start of the TCP dial "+
		"to the first byte of the HTTP response. Full = handshakes that did not resume (no ticket offered, or the ticket was refused).\n\n",
		strings.Join(rtts, " and "), s.Users, s.Concurrency, s.Cert, s.Warmup, s.Duration)
	fmt.Fprintf(b, "| RTT | TLS | scenario | conns | resumed | errors | TTFB p50 (ms) | p99 (ms) | full: n | p50 | p99 | resumed: n | p50 | p99 |\n")
	fmt.Fprintf(b, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.RTT {
		if x.Err != "" {
			fmt.Fprintf(b, "| %s | %s | %s | failed: %s | | | | | | | | | | |\n", x.RTT, x.TLS, x.Label, mdEscape(x.Err))
			continue
		}
		share := "n/a"
		if x.Connections > 0 {
			share = pct(float64(x.Resumed) / float64(x.Connections))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %d | %s | %d | %s | %s | %d | %s | %s | %d | %s | %s |\n",
			x.RTT, x.TLS, x.Label, x.Connections, share, x.Errors, ms0(x.All.P50), ms0(x.All.P99),
			x.Full.N, statMS(x.Full, x.Full.P50), statMS(x.Full, x.Full.P99),
			x.Resumption.N, statMS(x.Resumption, x.Resumption.P50), statMS(x.Resumption, x.Resumption.P99))
	}
	b.WriteString("\n**Where resumption saves a round trip, and where only CPU** (medians of both scenarios' connections, by handshake kind):\n\n")
	for _, l := range rttSavingsLines(r.RTT) {
		fmt.Fprintf(b, "- %s\n", l)
	}
	b.WriteString("- Why: with TLS 1.2 a full handshake takes 2 round trips before the client may send its request (Go's client does not " +
		"use False Start) and a resumed one 1, so resumption saves one RTT of TTFB: 4 RTT (TCP, 2 × TLS, request) against 3. " +
		"With TLS 1.3 full and resumed handshakes both take 1 round trip (0-RTT early data is not used: Go supports none, and it would " +
		"be replayable), so both are at 3 RTT and resumption saves only the certificate signature and its verification, that is CPU " +
		"(see the cluster table: server CPU per connection of own keys against ticketkeys).\n")
	for _, l := range rttScenarioLines(r.RTT) {
		fmt.Fprintf(b, "- %s\n", l)
	}
	var late time.Duration
	for _, x := range r.RTT {
		late = max(late, x.ProxyLatenessP99)
	}
	fmt.Fprintf(b, "- The proxies delivered 99%% of their chunks within %s ms of the due time (scheduling on the shared CPUs); "+
		"that much is in the TTFB figures on top of the round trips.\n", ms(late))
	if r.TTFBPlotFile != "" {
		fmt.Fprintf(b, "\n![time to first byte, cumulative share of connections, own keys against ticketkeys, per RTT and TLS version](%s)\n", r.TTFBPlotFile)
	}
	b.WriteString("\n")
}

// statMS prints a percentile of s, or "—" when s has no connection.
func statMS(s TTFBStats, d time.Duration) string {
	if s.N == 0 {
		return "—"
	}
	return ms0(d)
}

// rttScenarioLines compare own keys with ticketkeys as a user sees them:
// the TTFB of all connections.
func rttScenarioLines(results []RTTResult) []string {
	var out []string
	for _, k := range rttKeys(results) {
		var own, tk *RTTResult
		for i := range results {
			x := &results[i]
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
		if own == nil || tk == nil || own.Connections == 0 || tk.Connections == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("TLS %s at %s RTT, all connections: own keys p50 %s ms / p99 %s ms (%s resumed), ticketkeys p50 %s ms / p99 %s ms (%s resumed): median own − ticketkeys = %s ms.",
			k.TLS, k.RTT, ms0(own.All.P50), ms0(own.All.P99), pct(float64(own.Resumed)/float64(own.Connections)),
			ms0(tk.All.P50), ms0(tk.All.P99), pct(float64(tk.Resumed)/float64(tk.Connections)), ms0(own.All.P50-tk.All.P50)))
	}
	return out
}
