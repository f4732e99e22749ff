package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// Fleet kinds: how each simulated node reads its keyring.
const (
	// FleetSources: one client.Source per node (the Go client), each with
	// its own token and API client, refreshing at the window's ttl plus the
	// client's jitter.
	FleetSources = "sources"
	// FleetAgents: Agent-style readers, each with its own token and API
	// client, reading the nginx format and re-reading ttl + 1 s after each
	// read, as consul-template does for a non-leased secret that carries
	// rotation_period and ttl.
	FleetAgents = "agents"
)

// FleetSpec is one fleet run against one Vault.
type FleetSpec struct {
	// Kind is FleetSources or FleetAgents.
	Kind string
	// Addr is Vault's address; Tokens one token per node (len = nodes).
	Addr   string
	Tokens []string
	// Mount and Keyring locate the keyring (created by the caller).
	Mount, Keyring string
	// AgentFormat is the format Agent-style readers read (nginx).
	AgentFormat string
	// StartConcurrency bounds the first reads in flight while the fleet
	// starts.
	StartConcurrency int
	// Duration is the measured time after every node holds a window.
	Duration time.Duration
	// MaxReadsPerNode bounds each Agent-style reader's reads.
	MaxReadsPerNode int
	// VaultPID is the Vault server's pid (its CPU and its plugins' are
	// read from /proc); AuditLog the file audit device's file ("" = none).
	VaultPID int
	AuditLog string
	// LogWriter receives the Sources' warnings and errors (never key
	// material). Nil discards them.
	LogWriter io.Writer
}

// FleetKey is what the fleet did with one key: when it was published and
// activated (engine times), when the last node held it, and how many held
// it at activation. Key ids are left out of the report.
type FleetKey struct {
	// Published is not_before - publish_ahead; Activates is not_before.
	Published time.Time `json:"published"`
	Activates time.Time `json:"activates"`
	// HeldBy is how many nodes held the key by the end of the run.
	HeldBy int `json:"held_by"`
	// LastHeld is when the last of them first held it; LastAfterPublish is
	// LastHeld - Published (only when all nodes held it).
	LastHeld         time.Time     `json:"last_held"`
	LastAfterPublish time.Duration `json:"last_after_publish_ns"`
	// AtActivation is how many nodes held the key at its activation
	// instant; ActivationMeasured says the activation fell in the measured
	// window (otherwise AtActivation means nothing).
	AtActivation       int  `json:"at_activation"`
	ActivationMeasured bool `json:"activation_measured"`
	// PublishMeasured says the key was published after every node was
	// running and activated before the end, so LastAfterPublish is a
	// propagation time (a key that activates later may still be on its
	// way when the run ends, which is no failure).
	PublishMeasured bool `json:"publish_measured"`
}

// FleetResult is what one fleet run measured.
type FleetResult struct {
	Kind   string `json:"kind"`
	Nodes  int    `json:"nodes"`
	Format string `json:"format"`
	// RotationPeriod and PublishAhead are the keyring's.
	RotationPeriod time.Duration `json:"rotation_period_ns"`
	PublishAhead   time.Duration `json:"publish_ahead_ns"`
	// Startup is the time until every node held a first window, and
	// StartupReads the reads it took.
	Startup      time.Duration `json:"startup_ns"`
	StartupReads int           `json:"startup_reads"`
	// Start and End bound the measured window.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Reads and ReadErrors count reads in the measured window.
	Reads      int    `json:"reads"`
	ReadErrors int    `json:"read_errors"`
	FirstError string `json:"first_error,omitempty"`
	// PerSecond counts the reads that finished in each second of the
	// measured window.
	PerSecond []int         `json:"per_second"`
	ReadP50   time.Duration `json:"read_p50_ns"`
	ReadP99   time.Duration `json:"read_p99_ns"`
	// VaultCPU is the Vault server process's CPU in the measured window,
	// PluginCPU its plugin processes' (by executable name).
	VaultCPU  time.Duration            `json:"vault_cpu_ns"`
	PluginCPU map[string]time.Duration `json:"plugin_cpu_ns"`
	// CoresPerSecond is Vault's and its plugins' CPU in each second, in
	// cores.
	CoresPerSecond []float64 `json:"cores_per_second"`
	// AuditBytes is what the file audit device wrote in the window.
	AuditBytes int64      `json:"audit_bytes"`
	Keys       []FleetKey `json:"keys"`
	Err        string     `json:"error,omitempty"`
}

// Seconds is the measured window's length in seconds.
func (r FleetResult) Seconds() float64 { return r.End.Sub(r.Start).Seconds() }

// AvgReadsPerSecond is the mean over the measured window.
func (r FleetResult) AvgReadsPerSecond() float64 {
	if s := r.Seconds(); s > 0 {
		return float64(r.Reads) / s
	}
	return 0
}

// PeakReadsPerSecond is the busiest second.
func (r FleetResult) PeakReadsPerSecond() int {
	peak := 0
	for _, n := range r.PerSecond {
		peak = max(peak, n)
	}
	return peak
}

// TotalCPU is Vault's and its plugins' CPU in the window.
func (r FleetResult) TotalCPU() time.Duration {
	t := r.VaultCPU
	for _, d := range r.PluginCPU {
		t += d
	}
	return t
}

// CPUPerRead is TotalCPU over the reads (0 without reads).
func (r FleetResult) CPUPerRead() time.Duration {
	if r.Reads == 0 {
		return 0
	}
	return r.TotalCPU() / time.Duration(r.Reads)
}

// PeakCores is the busiest second's CPU, in cores.
func (r FleetResult) PeakCores() float64 {
	peak := 0.0
	for _, c := range r.CoresPerSecond {
		peak = max(peak, c)
	}
	return peak
}

// ReadsPerNodePerPeriod is how often a node read per rotation period.
func (r FleetResult) ReadsPerNodePerPeriod() float64 {
	s := r.Seconds()
	if s <= 0 || r.Nodes == 0 || r.RotationPeriod <= 0 {
		return 0
	}
	return float64(r.Reads) / float64(r.Nodes) / (s / r.RotationPeriod.Seconds())
}

// ActivationShare is the share of nodes that held each key at its
// activation, over every activation in the measured window (NaN-free: ok
// is false when no key activated in it).
func (r FleetResult) ActivationShare() (share float64, keys int, ok bool) {
	held, total := 0, 0
	for _, k := range r.Keys {
		if k.ActivationMeasured {
			held += k.AtActivation
			total += r.Nodes
			keys++
		}
	}
	if total == 0 {
		return 0, 0, false
	}
	return float64(held) / float64(total), keys, true
}

// Propagation returns the largest and the median time from a key's publish
// until the last node held it, over the keys published in the window, and
// how many such keys were not held by every node by the end.
func (r FleetResult) Propagation() (median, worst time.Duration, keys, incomplete int) {
	var d []time.Duration
	for _, k := range r.Keys {
		if !k.PublishMeasured {
			continue
		}
		keys++
		if k.HeldBy < r.Nodes {
			incomplete++
			continue
		}
		d = append(d, k.LastAfterPublish)
	}
	if len(d) == 0 {
		return 0, 0, keys, incomplete
	}
	return percentile(d, 50), percentile(d, 100), keys, incomplete
}

// keyTimes are a key's engine times as a node saw them.
type keyTimes struct{ notBefore, publishAt time.Time }

// holdTracker records when each node first held each key.
type holdTracker struct {
	mu    sync.Mutex
	first []map[string]time.Time // per node: key id -> first held
	keys  map[string]keyTimes
}

func newHoldTracker(nodes int) *holdTracker {
	h := &holdTracker{first: make([]map[string]time.Time, nodes), keys: map[string]keyTimes{}}
	for i := range h.first {
		h.first[i] = map[string]time.Time{}
	}
	return h
}

// saw records that node held the keys (id -> times) at t.
func (h *holdTracker) saw(node int, t time.Time, keys map[string]keyTimes) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, kt := range keys {
		if _, ok := h.first[node][id]; !ok {
			h.first[node][id] = t
		}
		if _, ok := h.keys[id]; !ok {
			h.keys[id] = kt
		}
	}
}

// result computes every key's FleetKey, for a fleet that was fully running
// from ready until end.
func (h *holdTracker) result(ready, end time.Time) []FleetKey {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []FleetKey
	for id, kt := range h.keys {
		k := FleetKey{Published: kt.publishAt, Activates: kt.notBefore}
		k.ActivationMeasured = !kt.notBefore.Before(ready) && !kt.notBefore.After(end)
		k.PublishMeasured = !kt.publishAt.Before(ready) && !kt.notBefore.After(end)
		for _, m := range h.first {
			t, ok := m[id]
			if !ok {
				continue
			}
			k.HeldBy++
			if t.After(k.LastHeld) {
				k.LastHeld = t
			}
			if !t.After(kt.notBefore) {
				k.AtActivation++
			}
		}
		if k.HeldBy == len(h.first) {
			k.LastAfterPublish = k.LastHeld.Sub(kt.publishAt)
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Activates.Before(out[j].Activates) })
	return out
}

// readRecorder counts reads by the second they finished in and keeps
// their latencies (bounded).
type readRecorder struct {
	mu         sync.Mutex
	from, to   time.Time // the measured window; zero from = not yet
	startup    int
	reads      int
	errors     int
	firstError string
	perSecond  []int
	latencies  []time.Duration
}

const maxRecordedLatencies = 500000

func (r *readRecorder) record(finished time.Time, took time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.from.IsZero() || finished.Before(r.from) {
		r.startup++
		return
	}
	if !r.to.IsZero() && finished.After(r.to) {
		return
	}
	if err != nil {
		r.errors++
		if r.firstError == "" {
			r.firstError = err.Error()
		}
		return
	}
	r.reads++
	sec := int(finished.Sub(r.from) / time.Second)
	for len(r.perSecond) <= sec {
		r.perSecond = append(r.perSecond, 0)
	}
	r.perSecond[sec]++
	if len(r.latencies) < maxRecordedLatencies {
		r.latencies = append(r.latencies, took)
	}
}

func (r *readRecorder) open(from time.Time) {
	r.mu.Lock()
	r.from = from
	r.mu.Unlock()
}

func (r *readRecorder) close(to time.Time) {
	r.mu.Lock()
	r.to = to
	r.mu.Unlock()
}

// newFleetClient is one node's own API client (own connection pool), as
// every node of a real fleet has.
func newFleetClient(addr, token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault api config: %w", cfg.Error)
	}
	cfg.Address = addr
	cfg.Timeout = 30 * time.Second
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault api client for %s: %w", addr, err)
	}
	c.SetToken(token)
	c.ClearNamespace()
	return c, nil
}

// fleetStartTimeout bounds the fleet's start (every node's first window).
const fleetStartTimeout = 90 * time.Second

// RunFleet starts the fleet (bounded first reads), measures Duration once
// every node holds a window, stops every node and returns what it saw.
func RunFleet(ctx context.Context, spec FleetSpec) FleetResult {
	res := FleetResult{Kind: spec.Kind, Nodes: len(spec.Tokens)}
	if res.Nodes == 0 || spec.Duration <= 0 || spec.StartConcurrency < 1 {
		res.Err = fmt.Sprintf("fleet: want tokens, duration > 0 and start concurrency >= 1, got %d, %s, %d", res.Nodes, spec.Duration, spec.StartConcurrency)
		return res
	}
	if spec.Kind != FleetSources && spec.Kind != FleetAgents {
		res.Err = fmt.Sprintf("fleet: kind: must be %s or %s, got %q", FleetSources, FleetAgents, spec.Kind)
		return res
	}
	if spec.MaxReadsPerNode <= 0 {
		spec.MaxReadsPerNode = 1000
	}
	logw := spec.LogWriter
	if logw == nil {
		logw = io.Discard
	}
	logger := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	tracker := newHoldTracker(res.Nodes)
	rec := &readRecorder{}
	settings := make(chan [2]time.Duration, 1) // rotation period, publish ahead
	note := func(period, ahead time.Duration) {
		select {
		case settings <- [2]time.Duration{period, ahead}:
		default:
		}
	}

	t0 := time.Now()
	var (
		startErrs atomic.Int64
		firstErr  atomic.Value
		sem       = make(chan struct{}, spec.StartConcurrency)
		started   sync.WaitGroup // first window held (or failed)
		running   sync.WaitGroup // every node's goroutines
		sourcesMu sync.Mutex
		sources   []*client.Source
	)
	fail := func(err error) {
		startErrs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	for i, tok := range spec.Tokens {
		started.Add(1)
		running.Add(1)
		go func() {
			defer running.Done()
			c, err := newFleetClient(spec.Addr, tok)
			if err != nil {
				fail(err)
				started.Done()
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				started.Done()
				return
			}
			switch spec.Kind {
			case FleetSources:
				src, err := startFleetSource(ctx, c, spec, i, tracker, rec, logger, note)
				<-sem
				started.Done()
				if err != nil {
					fail(err)
					return
				}
				sourcesMu.Lock()
				sources = append(sources, src)
				sourcesMu.Unlock()
			case FleetAgents:
				runAgentReader(ctx, c, spec, i, tracker, rec, note, func() { <-sem; started.Done() })
			}
		}()
	}
	// Every node holds a window, or the start took too long (Vault down):
	// cancelling ends the first reads, so Wait returns either way.
	allStarted := make(chan struct{})
	go func() { started.Wait(); close(allStarted) }()
	startTimer := time.NewTimer(fleetStartTimeout)
	select {
	case <-allStarted:
	case <-startTimer.C:
		startErrs.Add(1)
		firstErr.CompareAndSwap(nil, fmt.Sprintf("not every node held a window within %s", fleetStartTimeout))
		cancel()
		<-allStarted
	}
	startTimer.Stop()
	res.Startup = time.Since(t0)
	defer func() {
		cancel()
		sourcesMu.Lock()
		for _, s := range sources {
			s.Close()
		}
		sourcesMu.Unlock()
		running.Wait()
	}()
	if n := startErrs.Load(); n > 0 {
		res.Err = fmt.Sprintf("fleet: %d of %d nodes could not start; first error: %v", n, res.Nodes, firstErr.Load())
		return res
	}
	select {
	case s := <-settings:
		res.RotationPeriod, res.PublishAhead = s[0], s[1]
	default:
	}

	// The measured window: CPU and audit size at both ends, CPU every second.
	cpu0, err := ReadTreeCPU(spec.VaultPID)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	audit0 := fileSize(spec.AuditLog)
	res.Start = time.Now()
	rec.open(res.Start)
	prev, prevAt := cpu0, res.Start
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.NewTimer(spec.Duration)
	defer deadline.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-deadline.C:
			break loop
		case now := <-tick.C:
			cur, err := ReadTreeCPU(spec.VaultPID)
			if err != nil {
				continue
			}
			self, kids := cur.Since(prev)
			total := self
			for _, d := range kids {
				total += d
			}
			if dt := now.Sub(prevAt).Seconds(); dt > 0 {
				res.CoresPerSecond = append(res.CoresPerSecond, total.Seconds()/dt)
			}
			prev, prevAt = cur, now
		}
	}
	res.End = time.Now()
	rec.close(res.End)
	cpu1, err := ReadTreeCPU(spec.VaultPID)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	res.VaultCPU, res.PluginCPU = cpu1.Since(cpu0)
	res.AuditBytes = fileSize(spec.AuditLog) - audit0

	rec.mu.Lock()
	res.Reads, res.ReadErrors, res.FirstError, res.StartupReads = rec.reads, rec.errors, rec.firstError, rec.startup
	res.PerSecond = append([]int(nil), rec.perSecond...)
	lat := append([]time.Duration(nil), rec.latencies...)
	rec.mu.Unlock()
	res.ReadP50, res.ReadP99 = percentile(lat, 50), percentile(lat, 99)
	res.Keys = tracker.result(res.Start, res.End)
	return res
}

func fileSize(path string) int64 {
	if path == "" {
		return 0
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// startFleetSource starts node i's client.Source; its refreshes feed rec and
// tracker.
func startFleetSource(ctx context.Context, c *api.Client, spec FleetSpec, i int, tracker *holdTracker, rec *readRecorder,
	logger *slog.Logger, note func(period, ahead time.Duration)) (*client.Source, error) {
	var self atomic.Pointer[client.Source]
	observe := func(t time.Time, s *client.Source) {
		w := s.Window()
		if w == nil {
			return
		}
		note(w.RotationPeriod, w.PublishAhead)
		keys := make(map[string]keyTimes, len(w.Keys))
		for _, k := range w.Keys {
			keys[k.ID] = keyTimes{notBefore: k.NotBefore, publishAt: k.NotBefore.Add(-w.PublishAhead)}
		}
		tracker.saw(i, t, keys)
	}
	obs := client.Observer{Refresh: func(ev client.RefreshEvent) {
		rec.record(ev.Time, ev.Duration, ev.Err)
		if s := self.Load(); s != nil && ev.Err == nil {
			observe(ev.Time, s)
		}
	}}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	src, err := client.NewSource(sctx, c, spec.Mount, spec.Keyring, client.WithObserver(obs), client.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("node %d: %w", i, err)
	}
	// NewSource reported its first read to the observer (counted as
	// startup, before the measured window opens).
	self.Store(src)
	observe(time.Now(), src)
	return src, nil
}

// runAgentReader is one Agent-style reader: read, note the keys, wait
// ttl + 1 s, read again, until ctx ends or MaxReadsPerNode. firstDone is
// called once after the first read.
func runAgentReader(ctx context.Context, c *api.Client, spec FleetSpec, i int, tracker *holdTracker, rec *readRecorder,
	note func(period, ahead time.Duration), firstDone func()) {
	var once sync.Once
	defer once.Do(firstDone)
	path := spec.Mount + "/keys/" + spec.Keyring
	q := url.Values{"format": {spec.AgentFormat}}
	failures := 0
	for n := 0; n < spec.MaxReadsPerNode && ctx.Err() == nil; n++ {
		s := time.Now()
		sec, err := c.Logical().ReadWithDataWithContext(ctx, path, q)
		now := time.Now()
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		if err == nil {
			var keys map[string]keyTimes
			var period, ahead time.Duration
			keys, wait, period, ahead, err = parseAgentRead(sec)
			if err == nil {
				note(period, ahead)
				tracker.saw(i, now, keys)
				wait += time.Second // consul-template: ttl + 1 s
				failures = 0
			}
		}
		rec.record(now, now.Sub(s), err)
		if err != nil {
			// consul-template retries with backoff; keep it simple and bounded.
			failures++
			wait = min(time.Duration(failures)*500*time.Millisecond, 5*time.Second)
		} else {
			once.Do(firstDone)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// parseAgentRead takes what an Agent template would use from a read: the
// key ids and times, the ttl and the settings. The read is decoded and
// validated by schedule.Decode, as every reader does.
func parseAgentRead(sec *api.Secret) (keys map[string]keyTimes, ttl, period, ahead time.Duration, err error) {
	if sec == nil || sec.Data == nil {
		return nil, 0, 0, 0, fmt.Errorf("read: no data")
	}
	raw, err := json.Marshal(sec.Data)
	if err != nil {
		return nil, 0, 0, 0, fmt.Errorf("read: %w", err)
	}
	defer clear(raw)
	w, err := schedule.Decode(raw, "")
	if err != nil {
		return nil, 0, 0, 0, fmt.Errorf("read: %w", err)
	}
	defer w.Wipe()
	keys = make(map[string]keyTimes, len(w.Keys))
	for _, k := range w.Keys {
		keys[k.ID] = keyTimes{notBefore: k.NotBefore, publishAt: k.NotBefore.Add(-w.PublishAhead)}
	}
	return keys, w.TTL, w.RotationPeriod, w.PublishAhead, nil
}
