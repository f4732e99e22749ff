package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// RTTSpec is the time-to-first-byte measurement of one scenario and TLS
// version at several round-trip times: one server child, and for each RTT a
// latency proxy in front of every node and a TTFB load through them.
type RTTSpec struct {
	// Scenario is a 3-node scenario (own keys or ticketkeys).
	Scenario Scenario
	TLS      uint16
	Cert     CertSet
	// RTTs are the round-trip times to measure, in order.
	RTTs []time.Duration
	// Keyring is the keyring of a ticketkeys scenario (created by the caller).
	Keyring string
	// Users and Concurrency shape the load (see TTFBConfig).
	Users, Concurrency int
	// Warmup and Duration are per RTT.
	Warmup, Duration time.Duration
	MaxConnections   int
	Seed             int64
}

// TTFBStats summarises time to first byte over a set of connections.
type TTFBStats struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
}

func ttfbStats(d []time.Duration) TTFBStats {
	return TTFBStats{N: len(d), P50: percentile(d, 50), P99: percentile(d, 99)}
}

// RTTResult is what one scenario, TLS version and RTT measured.
type RTTResult struct {
	Scenario string        `json:"scenario"`
	Label    string        `json:"label"`
	TLS      string        `json:"tls"`
	Cert     string        `json:"cert"`
	RTT      time.Duration `json:"rtt_ns"`
	// Connections counts the measured connections (warm-up and connections
	// cut by the end of the run excluded); Errors the failed ones.
	Connections int `json:"connections"`
	Offered     int `json:"offered"`
	Resumed     int `json:"resumed"`
	Errors      int `json:"errors"`
	// All, Full and Resumption summarise the time to first byte of all
	// successful connections, of those with a full handshake and of the
	// resumed ones.
	All        TTFBStats `json:"all"`
	Full       TTFBStats `json:"full"`
	Resumption TTFBStats `json:"resumed_handshakes"`
	// FullMS and ResumedMS are every successful connection's time to first
	// byte in milliseconds (for the plot).
	FullMS    []float64 `json:"full_ms"`
	ResumedMS []float64 `json:"resumed_ms"`
	// ProxyLatenessP99 and ProxyLatenessMax say how late the proxies
	// delivered chunks after their due time (scheduling on a busy machine).
	ProxyLatenessP99 time.Duration `json:"proxy_lateness_p99_ns"`
	ProxyLatenessMax time.Duration `json:"proxy_lateness_max_ns"`
	// FirstError is one error message (no key material), if any.
	FirstError string `json:"first_error,omitempty"`
	Err        string `json:"error,omitempty"`
}

// InRTTs expresses d in round trips.
func (r RTTResult) InRTTs(d time.Duration) float64 {
	if r.RTT <= 0 {
		return 0
	}
	return float64(d) / float64(r.RTT)
}

// RunRTT starts the scenario's nodes in a child and measures each RTT in
// turn. A failure of one RTT is recorded in its result; a failure to start
// the child is returned.
func (rn *Runner) RunRTT(ctx context.Context, spec RTTSpec) ([]RTTResult, error) {
	sc := spec.Scenario
	perRTT := spec.Warmup + spec.Duration
	args := append(append([]string(nil), rn.ServeArgs...),
		"-nodes", strconv.Itoa(sc.Nodes),
		"-mode", string(sc.Mode),
		"-cert", spec.Cert.CertFile,
		"-key", spec.Cert.KeyFile,
		"-max-life", (time.Duration(len(spec.RTTs))*(perRTT+10*time.Second) + 2*time.Minute).String(),
	)
	var env []string
	if sc.Mode == ModeTicketkeys {
		args = append(args, "-keyring", spec.Keyring)
		env = append(env, EnvVaultAddr+"="+rn.VaultAddr, EnvVaultToken+"="+rn.VaultToken)
	}
	logPath := filepath.Join(rn.LogDir, fmt.Sprintf("serve-rtt-%s-tls%s-%s.log", sc.ID, TLSName(spec.TLS), spec.Cert.Kind))
	child, err := StartChild(ctx, rn.Exe, args, env, logPath)
	if err != nil {
		return nil, err
	}
	defer child.Stop()

	var out []RTTResult
	for i, rtt := range spec.RTTs {
		if ctx.Err() != nil {
			break
		}
		res := RTTResult{Scenario: sc.ID, Label: sc.Label, TLS: TLSName(spec.TLS), Cert: spec.Cert.Kind, RTT: rtt}
		if err := measureRTT(ctx, child.Addrs, spec, rtt, spec.Seed+int64(i)*1000, &res); err != nil {
			res.Err = err.Error()
		}
		out = append(out, res)
	}
	return out, nil
}

// RTTWarmup is the warm-up at rtt: at least min, and long enough for every
// user to have made one connection (each worker's users connect in turn
// first, a connection takes about 4 round trips; half a second of slack).
func RTTWarmup(min, rtt time.Duration, users, concurrency int) time.Duration {
	perWorker := (users + concurrency - 1) / max(concurrency, 1)
	return max(min, time.Duration(perWorker)*5*rtt+500*time.Millisecond)
}

// measureRTT puts a proxy in front of every node and runs the TTFB load
// through them.
func measureRTT(ctx context.Context, nodes []string, spec RTTSpec, rtt time.Duration, seed int64, res *RTTResult) error {
	var proxies []*LatencyProxy
	defer func() {
		for _, p := range proxies {
			p.Close()
		}
	}()
	var addrs []string
	for _, n := range nodes {
		p, err := StartLatencyProxy(n, rtt, ProxyOptions{})
		if err != nil {
			return err
		}
		proxies = append(proxies, p)
		addrs = append(addrs, p.Addr())
	}
	conns, err := RunTTFB(ctx, TTFBConfig{
		Addrs: addrs, ServerName: spec.Cert.ServerName, RootCAs: spec.Cert.Pool, TLS: spec.TLS,
		Users: spec.Users, Concurrency: spec.Concurrency, Warmup: RTTWarmup(spec.Warmup, rtt, spec.Users, spec.Concurrency), Duration: spec.Duration,
		MaxConnections: spec.MaxConnections, Seed: seed,
	})
	if err != nil {
		return err
	}
	res.fill(conns)
	var late []time.Duration
	for _, p := range proxies {
		_, p99, mx := p.Lateness()
		late = append(late, p99)
		res.ProxyLatenessMax = max(res.ProxyLatenessMax, mx)
	}
	res.ProxyLatenessP99 = percentile(late, 100)
	if res.Connections == 0 {
		return fmt.Errorf("no measured connection at rtt %s", rtt)
	}
	return nil
}

// fill counts the measured connections and their time to first byte.
func (r *RTTResult) fill(conns []TTFBConn) {
	var all, full, resumed []time.Duration
	r.Connections, r.Offered, r.Resumed, r.Errors, r.FirstError = 0, 0, 0, 0, ""
	r.FullMS, r.ResumedMS = []float64{}, []float64{}
	for _, c := range conns {
		if c.Warmup || c.Aborted {
			continue
		}
		r.Connections++
		if c.Err != "" {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = c.Err
			}
			continue
		}
		if c.Offered {
			r.Offered++
		}
		all = append(all, c.TTFB)
		ms := float64(c.TTFB) / float64(time.Millisecond)
		if c.Resumed {
			r.Resumed++
			resumed = append(resumed, c.TTFB)
			r.ResumedMS = append(r.ResumedMS, ms)
		} else {
			full = append(full, c.TTFB)
			r.FullMS = append(r.FullMS, ms)
		}
	}
	r.All, r.Full, r.Resumption = ttfbStats(all), ttfbStats(full), ttfbStats(resumed)
}
