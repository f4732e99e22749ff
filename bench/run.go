package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/resumption"
)

// Scenario is one way of giving a cluster its ticket keys.
type Scenario struct {
	// ID is a short stable name ("own", "static", ...), used in file names
	// and keyring names.
	ID string
	// Label is the name shown in the report and the plot legend.
	Label string
	// Nodes is the number of server nodes.
	Nodes int
	// Mode is how the nodes get their keys.
	Mode Mode
	// Rotates is true when keys change during the run (failed resumptions
	// per rotation is meaningful).
	Rotates bool
}

// Scenarios are the runs of the cluster comparison, in report order. The
// single-node reference serves the same users as the clusters; every
// cluster's CPU per connection is divided by its CPU per connection.
var Scenarios = []Scenario{
	{ID: "single", Label: "single node (reference)", Nodes: 1, Mode: ModeOwnKeys},
	{ID: "own", Label: "1: own default keys", Nodes: 3, Mode: ModeOwnKeys},
	{ID: "static", Label: "2: one static shared key", Nodes: 3, Mode: ModeStatic},
	{ID: "switch", Label: "3: rotation without a window", Nodes: 3, Mode: ModeSwitch, Rotates: true},
	{ID: "ticketkeys", Label: "4: ticketkeys (Vault)", Nodes: 3, Mode: ModeTicketkeys, Rotates: true},
}

// ScenarioByID returns the scenario with the given ID.
func ScenarioByID(id string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.ID == id {
			return s, true
		}
	}
	return Scenario{}, false
}

// Load is the client side of a run: simulated users, each with its own
// session cache, connecting to a node picked at random per connection (see
// internal/resumption).
type Load struct {
	// Users is the number of simulated users.
	Users int
	// Concurrency is the number of connections in flight at once.
	Concurrency int
	// Interval is each worker's pause between two connections; it sets the
	// offered connection rate (about Concurrency / (Interval + connection
	// time)).
	Interval time.Duration
	// MaxConnections bounds the number of connections of one run.
	MaxConnections int
}

// CertSet is one server certificate kind, written to PEM files for the
// children, with the pool that verifies it.
type CertSet struct {
	// Kind is "RSA-2048" or "ECDSA-P256".
	Kind string
	// CertFile and KeyFile are the PEM files the children load.
	CertFile, KeyFile string
	// Pool verifies the certificate.
	Pool *x509.CertPool
	// ServerName is the name the certificate is valid for.
	ServerName string
}

// RunSpec is one run: a scenario with a TLS version and a certificate.
type RunSpec struct {
	Scenario Scenario
	// TLS is tls.VersionTLS12 or tls.VersionTLS13 (the client pins it).
	TLS  uint16
	Cert CertSet
	// Warmup is load before the measurement: it gives most users a ticket,
	// so that the measured window is steady state. Nothing in it is
	// counted (connections, CPU, rotations).
	Warmup time.Duration
	// Duration is the measured load after Warmup.
	Duration time.Duration
	// RotateEvery is the rotation period of ModeSwitch.
	RotateEvery time.Duration
	// Keyring is the keyring of ModeTicketkeys (created by the caller).
	Keyring string
	Load    Load
	Seed    int64
}

// SecondPoint is the resumption share of the connections that started in
// one second of a run.
type SecondPoint struct {
	// T is the middle of the second, in seconds since the run started.
	T float64 `json:"t"`
	// Offered and Resumed count those connections.
	Offered int `json:"offered"`
	Resumed int `json:"resumed"`
}

// Rate is Resumed/Offered, NaN when nothing was offered.
func (p SecondPoint) Rate() float64 {
	if p.Offered == 0 {
		return math.NaN()
	}
	return float64(p.Resumed) / float64(p.Offered)
}

// RunResult is what one run measured.
type RunResult struct {
	Scenario string `json:"scenario"`
	Label    string `json:"label"`
	TLS      string `json:"tls"`
	Cert     string `json:"cert"`
	Nodes    int    `json:"nodes"`

	Start time.Time `json:"start"`
	End   time.Time `json:"end"`

	Connections       int `json:"connections"`
	Offered           int `json:"offered"`
	Resumed           int `json:"resumed"`
	HandshakeFailures int `json:"handshake_failures"`
	RequestFailures   int `json:"request_failures"`
	// CutAtEnd counts connections cut by the end of the load; they are in
	// no other count.
	CutAtEnd int `json:"cut_at_end"`

	// ServerCPU is the child's CPU time (user+system) between the start and
	// the end of the load.
	ServerCPU time.Duration `json:"server_cpu_ns"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	// Rotations are the rotation instants, seconds since Start.
	Rotations []float64 `json:"rotations"`
	// Rotates says whether the scenario rotates at all.
	Rotates bool          `json:"rotates"`
	Series  []SecondPoint `json:"series"`
	// Sources summarises each node's client.Source over the measured window
	// (ticketkeys only).
	Sources []SourceSummary `json:"sources,omitempty"`
	// RelSingle is CPU per connection divided by the single node's, for the
	// same TLS version and certificate (0 when unknown).
	RelSingle float64 `json:"rel_single"`
	// ErrorSamples counts the distinct handshake and request error messages
	// (at most 5 kinds; messages carry no key material).
	ErrorSamples map[string]int `json:"error_samples,omitempty"`
	// Err is set when the run could not be completed.
	Err string `json:"error,omitempty"`
}

// ResumeShare is Resumed/Offered (NaN when nothing was offered).
func (r RunResult) ResumeShare() float64 {
	if r.Offered == 0 {
		return math.NaN()
	}
	return float64(r.Resumed) / float64(r.Offered)
}

// FailedResumptions is the number of offered tickets that did not resume.
func (r RunResult) FailedResumptions() int { return r.Offered - r.Resumed }

// FailedPerRotation is FailedResumptions divided by the number of
// rotations; ok is false when the run had no rotation.
func (r RunResult) FailedPerRotation() (v float64, ok bool) {
	if len(r.Rotations) == 0 {
		return 0, false
	}
	return float64(r.FailedResumptions()) / float64(len(r.Rotations)), true
}

// CPUPerConn is ServerCPU divided by the connections made (0 if none).
func (r RunResult) CPUPerConn() time.Duration {
	if r.Connections == 0 {
		return 0
	}
	return r.ServerCPU / time.Duration(r.Connections)
}

// ConnRate is connections per second of load.
func (r RunResult) ConnRate() float64 {
	d := r.End.Sub(r.Start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(r.Connections) / d
}

// TLSName names a TLS version as the report does.
func TLSName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	default:
		return "0x" + strconv.FormatUint(uint64(v), 16)
	}
}

// Runner runs server children and load against them.
type Runner struct {
	// Exe is the binary that has the "serve" subcommand (os.Executable).
	Exe string
	// ServeArgs are put before the serve flags; normally ["serve"].
	ServeArgs []string
	// LogDir receives the children's logs.
	LogDir string
	// VaultAddr and VaultToken are given to ModeTicketkeys children.
	VaultAddr, VaultToken string
	// Rotations returns the rotation instants of keyring in [from, to], for
	// ModeTicketkeys (from the engine's history). Nil means none.
	Rotations func(ctx context.Context, keyring string, from, to time.Time) ([]time.Time, error)
}

// Run starts a child with the spec's nodes, drives the load and returns the
// measurements. A failure is returned as an error and the child is always
// stopped.
func (rn *Runner) Run(ctx context.Context, spec RunSpec) (RunResult, error) {
	sc := spec.Scenario
	res := RunResult{
		Scenario: sc.ID, Label: sc.Label, TLS: TLSName(spec.TLS), Cert: spec.Cert.Kind, Nodes: sc.Nodes, Rotates: sc.Rotates,
	}
	args := append(append([]string(nil), rn.ServeArgs...),
		"-nodes", strconv.Itoa(sc.Nodes),
		"-mode", string(sc.Mode),
		"-cert", spec.Cert.CertFile,
		"-key", spec.Cert.KeyFile,
		"-max-life", (spec.Warmup + spec.Duration + 2*time.Minute).String(),
	)
	var env []string
	switch sc.Mode {
	case ModeSwitch:
		args = append(args, "-rotate-every", spec.RotateEvery.String())
	case ModeTicketkeys:
		args = append(args, "-keyring", spec.Keyring)
		env = append(env, EnvVaultAddr+"="+rn.VaultAddr, EnvVaultToken+"="+rn.VaultToken)
	}
	logPath := filepath.Join(rn.LogDir, fmt.Sprintf("serve-%s-tls%s-%s.log", sc.ID, res.TLS, spec.Cert.Kind))
	child, err := StartChild(ctx, rn.Exe, args, env, logPath)
	if err != nil {
		return res, err
	}
	defer child.Stop()

	type loadOut struct {
		res resumption.Result
		err error
	}
	loaded := make(chan loadOut, 1)
	go func() {
		out, err := resumption.Run(ctx, resumption.Config{
			Addrs:          child.Addrs,
			ServerName:     spec.Cert.ServerName,
			RootCAs:        spec.Cert.Pool,
			MinVersion:     spec.TLS,
			MaxVersion:     spec.TLS,
			Users:          spec.Load.Users,
			Concurrency:    spec.Load.Concurrency,
			MaxConnections: spec.Load.MaxConnections,
			MaxDuration:    spec.Warmup + spec.Duration,
			Interval:       spec.Load.Interval,
			Seed:           spec.Seed,
		})
		loaded <- loadOut{out, err}
	}()
	// The measurement starts when the warm-up ends: the child samples its
	// CPU (and scenario 3 starts rotating) at "start".
	warm := time.NewTimer(spec.Warmup)
	select {
	case <-warm.C:
	case <-ctx.Done():
		warm.Stop()
	}
	started, startErr := child.Command(ctx, "start")
	lo := <-loaded
	if startErr != nil {
		return res, startErr
	}
	if lo.err != nil {
		return res, lo.err
	}
	out := lo.res
	finished, err := child.Command(ctx, "finish")
	if err != nil {
		return res, err
	}
	res.fill(out, started, finished)
	if sc.Mode == ModeTicketkeys && rn.Rotations != nil {
		rot, err := rn.Rotations(ctx, spec.Keyring, res.Start, res.End)
		if err != nil {
			return res, fmt.Errorf("rotation instants of keyring %s: %w", spec.Keyring, err)
		}
		res.Rotations = relative(res.Start, rot)
	}
	return res, nil
}

// fill copies the load's and the child's measurements into r. Connections
// cut by the end of the load (resumption.Conn.Aborted: the deadline
// cancels the connections in flight) say nothing about the servers: they
// are left out of every count and counted in CutAtEnd.
//
// Only connections that started at or after the child's "start" sample (the
// end of the warm-up) are counted; Start is that instant.
func (r *RunResult) fill(out resumption.Result, started, finished Sample) {
	r.Start, r.End = started.Time, out.End
	if r.Start.IsZero() || r.Start.Before(out.Start) {
		r.Start = out.Start
	}
	r.ServerCPU = time.Duration(finished.CPUus-started.CPUus) * time.Microsecond
	r.Rotations = relative(r.Start, finished.Rotations)
	r.Sources = sourceDelta(started.Sources, finished.Sources)
	r.Connections, r.Offered, r.Resumed, r.HandshakeFailures, r.RequestFailures, r.CutAtEnd = 0, 0, 0, 0, 0, 0
	r.Series = nil
	var lat []time.Duration
	for _, c := range out.Conns {
		if c.Start.Before(r.Start) {
			continue // warm-up
		}
		msg := c.HandshakeErr
		if msg == "" {
			msg = c.RequestErr
		}
		if c.Aborted {
			r.CutAtEnd++
			continue
		}
		r.Connections++
		switch {
		case c.HandshakeErr != "":
			r.HandshakeFailures++
		case c.RequestErr != "":
			r.RequestFailures++
		}
		if c.HandshakeErr == "" {
			lat = append(lat, c.Handshake)
		}
		sec := int(c.Start.Sub(r.Start) / time.Second)
		for len(r.Series) <= sec {
			r.Series = append(r.Series, SecondPoint{T: float64(len(r.Series)) + 0.5})
		}
		if c.Offered {
			r.Offered++
			r.Series[sec].Offered++
			if c.Resumed {
				r.Resumed++
				r.Series[sec].Resumed++
			}
		}
		if msg != "" {
			if r.ErrorSamples == nil {
				r.ErrorSamples = map[string]int{}
			}
			if _, ok := r.ErrorSamples[msg]; ok || len(r.ErrorSamples) < 5 {
				r.ErrorSamples[msg]++
			}
		}
	}
	r.P50 = percentile(lat, 50)
	r.P99 = percentile(lat, 99)
}

// sourceDelta returns each node's counters accumulated between two
// samples (the window size is the later one's).
func sourceDelta(from, to []SourceSummary) []SourceSummary {
	out := append([]SourceSummary(nil), to...)
	if len(from) != len(to) {
		return out
	}
	for i := range out {
		f := from[i]
		out[i].Refreshes -= f.Refreshes
		out[i].RefreshErrors -= f.RefreshErrors
		out[i].HitCurrent -= f.HitCurrent
		out[i].HitNext -= f.HitNext
		out[i].HitPrevious -= f.HitPrevious
		out[i].Miss -= f.Miss
		out[i].Issued -= f.Issued
	}
	return out
}

// relative turns instants into seconds since start, keeping those within
// the run (at or after start).
func relative(start time.Time, ts []time.Time) []float64 {
	out := []float64{}
	for _, t := range ts {
		if t.Before(start) {
			continue
		}
		out = append(out, t.Sub(start).Seconds())
	}
	return out
}

// SetRelSingle fills RelSingle of every result from the single-node
// reference with the same TLS version and certificate.
func SetRelSingle(results []RunResult) {
	ref := map[string]time.Duration{}
	for _, r := range results {
		if r.Scenario == "single" && r.Err == "" {
			ref[r.TLS+"/"+r.Cert] = r.CPUPerConn()
		}
	}
	for i := range results {
		base := ref[results[i].TLS+"/"+results[i].Cert]
		if base > 0 && results[i].Err == "" {
			results[i].RelSingle = float64(results[i].CPUPerConn()) / float64(base)
		}
	}
}
