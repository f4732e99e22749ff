package fleetcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults of Config's zero values.
const (
	DefaultGrace        = 5 * time.Second
	DefaultMatrixFull   = 16
	DefaultMatrixSample = 8
	DefaultConcurrency  = 16
	DefaultTimeout      = 5 * time.Second
	DefaultMaxRetired   = 4
)

// Config says what to check and how hard.
type Config struct {
	// Keyring and Format name the keyring in reports; Format also selects
	// the ticket layout (nginx, haproxy, envoy: OpenSSL; go: package client).
	Keyring string
	Format  string
	// Read returns the keyring's window (VaultReader, or a fixed window in
	// tests).
	Read WindowReader
	// Nodes are the servers, each addressed directly (not through a load
	// balancer).
	Nodes []Node
	// Versions are the TLS versions every check runs in. If empty, TLS 1.2
	// and TLS 1.3.
	Versions []uint16
	// Grace is the tolerance around a boundary: a fresh ticket under the
	// adjacent key within Grace of an activation is on schedule, and a key
	// retired less than Grace ago may still resume (pending). If zero,
	// DefaultGrace (5s): clock skew plus a Vault Agent's re-read just after
	// the change (ttl + 1 s + jitter).
	Grace time.Duration
	// NextGrace is how long after the next key is published a node may still
	// miss it before that is a failure (until then: pending). If zero,
	// publish_ahead/4, at least Grace, at most 2m and publish_ahead/2.
	NextGrace time.Duration
	// MatrixFull is the largest fleet that gets the full cross-node matrix
	// (every node's ticket offered to every node). Above it, each node's
	// ticket goes to itself and MatrixSample others, rotating each round so
	// that every pair is covered within ceil((n-1)/MatrixSample) rounds.
	// If zero, 16 and 8.
	MatrixFull   int
	MatrixSample int
	// Concurrency bounds the handshakes in flight. If zero, 16.
	Concurrency int
	// Timeout bounds each connection (dial, handshake, first ticket). If
	// zero, 5s.
	Timeout time.Duration
	// RetiredFor is how long after it retires a key is still offered to the
	// nodes (its material held in memory only). If zero, one rotation
	// period, at least 1m. MaxRetired bounds how many (newest first); if
	// zero, 4.
	RetiredFor time.Duration
	MaxRetired int
	// Logger receives one line per round (never material). If nil, nothing
	// is logged.
	Logger *slog.Logger
}

// Checker runs rounds of checks against one keyring's fleet and remembers,
// between rounds, the keys it has seen so that it can offer tickets under
// keys once they retire. Its methods are safe for concurrent use; rounds
// run one at a time.
type Checker struct {
	cfg Config

	mu      sync.Mutex
	round   int
	known   map[string]*Key // keys of the last window read
	retired []*retiredKey
	last    *Report
}

// retiredKey is a key gone from the window, still offered to the nodes for
// RetiredFor.
type retiredKey struct {
	key              *Key
	reason           string
	at               time.Time
	lastAcceptedAt   time.Time
	lastAcceptedBy   []string
	refusedSince     time.Time
	everChecked      bool
	acceptedThisTime []string
}

// New checks cfg and returns a Checker.
func New(cfg Config) (*Checker, error) {
	if !slices.Contains(Formats, cfg.Format) {
		return nil, fmt.Errorf("fleetcheck: format: must be one of %v, got %q", Formats, cfg.Format)
	}
	if cfg.Read == nil {
		return nil, errors.New("fleetcheck: Read: required, got nil")
	}
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("fleetcheck: nodes: at least one node is required, got 0")
	}
	seen := map[string]bool{}
	for i, n := range cfg.Nodes {
		if n.Addr == "" {
			return nil, fmt.Errorf("fleetcheck: nodes[%d].addr: required (host:port), got \"\"", i)
		}
		if seen[n.Addr] {
			return nil, fmt.Errorf("fleetcheck: nodes[%d].addr: must be unique, %q appears twice", i, n.Addr)
		}
		seen[n.Addr] = true
	}
	if len(cfg.Versions) == 0 {
		cfg.Versions = []uint16{tls.VersionTLS12, tls.VersionTLS13}
	}
	for _, v := range cfg.Versions {
		if v != tls.VersionTLS12 && v != tls.VersionTLS13 {
			return nil, fmt.Errorf("fleetcheck: versions: each must be TLS 1.2 or TLS 1.3, got %#x", v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"grace", cfg.Grace}, {"next_grace", cfg.NextGrace}, {"timeout", cfg.Timeout}, {"retired_for", cfg.RetiredFor}} {
		if d.v < 0 {
			return nil, fmt.Errorf("fleetcheck: %s: must not be negative, got %s", d.name, d.v)
		}
	}
	for _, d := range []struct {
		name string
		v    int
	}{{"matrix_full", cfg.MatrixFull}, {"matrix_sample", cfg.MatrixSample}, {"concurrency", cfg.Concurrency}, {"max_retired", cfg.MaxRetired}} {
		if d.v < 0 {
			return nil, fmt.Errorf("fleetcheck: %s: must not be negative, got %d", d.name, d.v)
		}
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.MatrixFull == 0 {
		cfg.MatrixFull = DefaultMatrixFull
	}
	if cfg.MatrixSample == 0 {
		cfg.MatrixSample = DefaultMatrixSample
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxRetired == 0 {
		cfg.MaxRetired = DefaultMaxRetired
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Checker{cfg: cfg, known: map[string]*Key{}}, nil
}

// Last returns the report of the last round, or nil.
func (c *Checker) Last() *Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Close wipes every key the checker holds.
func (c *Checker) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.known {
		k.wipe()
	}
	for _, r := range c.retired {
		r.key.wipe()
	}
	c.known, c.retired = map[string]*Key{}, nil
}

func (c *Checker) nextGrace(w *Window) time.Duration {
	return nextGrace(c.cfg, w.PublishAhead)
}

// nextGrace is Config.NextGrace or its default: a quarter of publish_ahead,
// but at least Grace (a node fed by Vault Agent fetches a published key as
// late as it switches at an activation) and at most 2 minutes and half of
// publish_ahead, so that a missing key is still reported before it
// activates.
func nextGrace(cfg Config, publishAhead time.Duration) time.Duration {
	if cfg.NextGrace > 0 {
		return cfg.NextGrace
	}
	return min(max(publishAhead/4, cfg.Grace), 2*time.Minute, publishAhead/2)
}

func (c *Checker) retiredFor(w *Window) time.Duration {
	if c.cfg.RetiredFor > 0 {
		return c.cfg.RetiredFor
	}
	return max(w.RotationPeriod, time.Minute)
}

// absorb takes a new window: keys of the last window that are gone from it
// become retired keys; retired keys older than RetiredFor are wiped.
func (c *Checker) absorb(w *Window) {
	for id, k := range c.known {
		if nk := w.ByID(id); nk != nil {
			if nk != k {
				k.wipe() // the new window holds its own copy
			}
			continue
		}
		r := &retiredKey{key: k, reason: "expired", at: k.NotAfter}
		if w.ReadAt.Before(k.NotAfter) {
			r.reason, r.at = "removed", w.ReadAt
		}
		c.retired = append(c.retired, r)
	}
	c.known = make(map[string]*Key, len(w.Keys))
	for _, k := range w.Keys {
		c.known[k.ID] = k
	}
	slices.SortFunc(c.retired, func(a, b *retiredKey) int { return b.at.Compare(a.at) }) // newest first
	keep := c.retired[:0]
	for i, r := range c.retired {
		if i >= c.cfg.MaxRetired || w.ReadAt.Sub(r.at) > c.retiredFor(w) {
			r.key.wipe()
			continue
		}
		keep = append(keep, r)
	}
	clear(c.retired[len(keep):])
	c.retired = keep
}

func (c *Checker) retiredByID(id string) *retiredKey {
	for _, r := range c.retired {
		if r.key.ID == id {
			return r
		}
	}
	return nil
}

// targets lists the nodes that node i's ticket is offered to this round.
func (c *Checker) targets(i, n, round int) []int {
	if n <= c.cfg.MatrixFull {
		out := make([]int, n)
		for j := range out {
			out[j] = j
		}
		return out
	}
	s := min(c.cfg.MatrixSample, n-1)
	out := []int{i}
	for m := 0; m < s; m++ {
		off := 1 + (round*s+m)%(n-1)
		out = append(out, (i+off)%n)
	}
	return out
}

// parallel runs tasks with at most limit at once.
func parallel(limit int, tasks []func()) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for _, t := range tasks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t()
		}()
	}
	wg.Wait()
}

// offerResult is what one offered ticket did.
type offerResult struct {
	resumed bool
	err     error
}

// source is a decrypted session of this round that can be sealed under
// another key and offered with the client state of the node it came from.
type source struct {
	node int
	sess *session
}

// Check runs one round: it reads the window, takes a fresh ticket from every
// node in every TLS version, and offers tickets across the matrix, under the
// next key and under retired keys. It returns the round's report; the
// report's OK is false when any check failed. An error is returned only
// when ctx ends.
func (c *Checker) Check(ctx context.Context) (*Report, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.round++
	cfg := c.cfg
	nodes := cfg.Nodes
	rep := &Report{Keyring: cfg.Keyring, Format: cfg.Format, Round: c.round, Started: time.Now()}

	w, err := cfg.Read(ctx)
	if err != nil {
		rep.VaultError = err.Error()
		w = nil
	} else {
		if w.Format != cfg.Format {
			return nil, fmt.Errorf("fleetcheck: the window reader returned format %q, the check is for %q", w.Format, cfg.Format)
		}
		c.absorb(w)
		rep.Window = summarize(w, rep.Started)
		if rep.Keyring == "" {
			rep.Keyring = w.Keyring
		}
	}

	// 1. A fresh ticket from every node in every version.
	nv := len(cfg.Versions)
	fr := make([][]*freshTicket, len(nodes))
	frErr := make([][]error, len(nodes))
	var tasks []func()
	for j := range nodes {
		fr[j], frErr[j] = make([]*freshTicket, nv), make([]error, nv)
		for vi, v := range cfg.Versions {
			tasks = append(tasks, func() { fr[j][vi], frErr[j][vi] = fresh(ctx, nodes[j], v, cfg.Timeout) })
		}
	}
	parallel(cfg.Concurrency, tasks)
	defer func() {
		for _, row := range fr {
			for _, f := range row {
				f.forget()
			}
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Sessions this round can re-encrypt: each fresh ticket under a key the
	// checker holds, opened with it.
	sess := make([][]*session, len(nodes))
	for j := range nodes {
		sess[j] = make([]*session, nv)
		for vi := range cfg.Versions {
			f := fr[j][vi]
			if f == nil || f.keyIDErr != nil {
				continue
			}
			if k := c.keyByID(w, f.keyID); k != nil {
				if s, err := openTicket(cfg.Format, f.ticket, k); err == nil {
					sess[j][vi] = s
				}
			}
		}
	}
	defer func() {
		for _, row := range sess {
			for _, s := range row {
				s.wipe()
			}
		}
	}()
	sourceFor := func(j, vi int) *source {
		if sess[j][vi] != nil {
			return &source{node: j, sess: sess[j][vi]}
		}
		for i := range nodes {
			if sess[i][vi] != nil {
				return &source{node: i, sess: sess[i][vi]}
			}
		}
		return nil
	}

	// 2-4. Matrix, next key, retired keys: one batch of offers.
	reps := make([]NodeReport, len(nodes))
	for j, n := range nodes {
		reps[j] = NodeReport{Addr: n.Addr, ServerName: n.serverName(), Reachable: true, Versions: make([]VersionReport, nv)}
		for vi, v := range cfg.Versions {
			vr := &reps[j].Versions[vi]
			vr.Version = versionName(v)
			if frErr[j][vi] != nil {
				vr.HandshakeError = frErr[j][vi].Error()
				reps[j].Reachable = false
				continue
			}
			vr.HandshakeAt = fr[j][vi].at
		}
	}
	var mu sync.Mutex
	matrix := map[[3]int]offerResult{} // source, target, version
	next := map[[2]int]offerResult{}   // node, version
	retired := map[[3]int]offerResult{}
	var nxt *Key
	if w != nil {
		nxt = w.NextAfter(rep.Started)
	}
	tasks = tasks[:0]
	for i := range nodes {
		for vi, v := range cfg.Versions {
			if fr[i][vi] == nil {
				continue
			}
			for _, j := range c.targets(i, len(nodes), c.round) {
				if fr[j][vi] == nil {
					continue // unreachable in this version: reported once, as its handshake error
				}
				tasks = append(tasks, func() {
					res := offerResult{}
					cs, err := fr[i][vi].resumption(fr[i][vi].ticket)
					if err == nil {
						res.resumed, res.err = offer(ctx, nodes[j], v, cs, cfg.Timeout)
					} else {
						res.err = err
					}
					mu.Lock()
					matrix[[3]int{i, j, vi}] = res
					mu.Unlock()
				})
			}
		}
	}
	craft := func(j, vi int, k *Key) (*tls.ClientSessionState, error) {
		src := sourceFor(j, vi)
		if src == nil {
			return nil, errors.New("no ticket of this round decrypts under a key the check holds, so none can be re-encrypted")
		}
		t, err := sealTicket(cfg.Format, src.sess, k)
		if err != nil {
			return nil, err
		}
		return fr[src.node][vi].resumption(t)
	}
	for j := range nodes {
		for vi, v := range cfg.Versions {
			if fr[j][vi] == nil {
				continue
			}
			if nxt != nil {
				tasks = append(tasks, func() {
					res := offerResult{}
					cs, err := craft(j, vi, nxt)
					if err == nil {
						res.resumed, res.err = offer(ctx, nodes[j], v, cs, cfg.Timeout)
					} else {
						res.err = err
					}
					mu.Lock()
					next[[2]int{j, vi}] = res
					mu.Unlock()
				})
			}
			for ri, r := range c.retired {
				tasks = append(tasks, func() {
					res := offerResult{}
					cs, err := craft(j, vi, r.key)
					if err == nil {
						res.resumed, res.err = offer(ctx, nodes[j], v, cs, cfg.Timeout)
					} else {
						res.err = err
					}
					mu.Lock()
					retired[[3]int{j, vi, ri}] = res
					mu.Unlock()
				})
			}
		}
	}
	parallel(cfg.Concurrency, tasks)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Evaluate. Graces count from now: the offers have just been made.
	evalAt := time.Now()
	for _, r := range c.retired {
		r.acceptedThisTime = nil
	}
	for j := range nodes {
		nr := &reps[j]
		for vi := range cfg.Versions {
			vr := &nr.Versions[vi]
			f := fr[j][vi]
			if f == nil {
				fail := Check{Status: StatusFail, Detail: "unreachable: " + vr.HandshakeError}
				vr.Current, vr.Next = fail, fail
				nr.Errors = append(nr.Errors, vr.Version+": "+vr.HandshakeError)
				continue
			}
			vr.Current = c.checkCurrent(w, f, vr)
			if nxt == nil {
				vr.Next = Check{Status: StatusNone, Detail: "no next key is published"}
				if w == nil {
					vr.Next.Detail = "window unknown (Vault read failed)"
				}
			} else {
				vr.NextKeyID = nxt.ID
				vr.Next = c.checkNext(w, nxt, next[[2]int{j, vi}], rep.Started)
			}
			for ri, r := range c.retired {
				res := retired[[3]int{j, vi, ri}]
				rc := RetiredCheck{KeyID: r.key.ID, Resumed: res.resumed}
				switch {
				case res.err != nil:
					rc.Check = Check{Status: StatusFail, Detail: "could not offer a ticket under it: " + res.err.Error()}
				case res.resumed && evalAt.Sub(r.at) < cfg.Grace:
					rc.Check = Check{Status: StatusPending, Detail: fmt.Sprintf("still resumes a ticket under key %s, %s after it was %s (grace %s)", r.key.ID, evalAt.Sub(r.at).Round(time.Millisecond), r.reason, cfg.Grace)}
				case res.resumed:
					rc.Check = Check{Status: StatusFail, Detail: fmt.Sprintf("resumes a ticket under retired key %s (%s at %s)", r.key.ID, r.reason, r.at.UTC().Format(time.RFC3339))}
				default:
					rc.Check = Check{Status: StatusOK}
				}
				if res.resumed && !slices.Contains(r.acceptedThisTime, nodes[j].Addr) {
					r.acceptedThisTime = append(r.acceptedThisTime, nodes[j].Addr)
				}
				vr.Retired = append(vr.Retired, rc)
			}
			for _, t := range c.targets(j, len(nodes), c.round) {
				res, ok := matrix[[3]int{j, t, vi}]
				if !ok {
					continue
				}
				cell := Cell{To: nodes[t].Addr, Resumed: res.resumed}
				if res.err != nil {
					cell.Error = res.err.Error()
				}
				vr.Matrix = append(vr.Matrix, cell)
			}
		}
	}
	for key, res := range matrix {
		i, j := key[0], key[1]
		rep.Matrix.Pairs++
		reps[i].MatrixRowTotal++
		reps[j].MatrixColTotal++
		if res.resumed {
			reps[i].MatrixRowOK++
			reps[j].MatrixColOK++
			continue
		}
		rep.Matrix.Failures++
		reps[i].matrixRowFails++
		reps[j].matrixColFails++
	}
	rep.Matrix.Sampled = len(nodes) > cfg.MatrixFull

	// Aggregate per node, collect failures.
	for j := range reps {
		nr := &reps[j]
		nr.Current, nr.Next, nr.Retired = StatusNone, StatusNone, StatusNone
		if len(c.retired) > 0 {
			nr.Retired = StatusOK
		}
		for _, vr := range nr.Versions {
			nr.Current = worst(nr.Current, vr.Current.Status)
			nr.Next = worst(nr.Next, vr.Next.Status)
			if vr.Current.Status == StatusFail && vr.HandshakeError == "" {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s current key: %s", nr.Addr, vr.Version, vr.Current.Detail))
				nr.Errors = append(nr.Errors, vr.Version+" current key: "+vr.Current.Detail)
			}
			if vr.HandshakeError != "" {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s unreachable: %s", nr.Addr, vr.Version, vr.HandshakeError))
			}
			if vr.Next.Status == StatusFail && vr.HandshakeError == "" {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s next key: %s", nr.Addr, vr.Version, vr.Next.Detail))
				nr.Errors = append(nr.Errors, vr.Version+" next key: "+vr.Next.Detail)
			}
			for _, rc := range vr.Retired {
				nr.Retired = worst(nr.Retired, rc.Status)
				if rc.Resumed {
					nr.retiredAccepted++
				}
				if rc.Status == StatusFail {
					rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s retired key: %s", nr.Addr, vr.Version, rc.Detail))
					nr.Errors = append(nr.Errors, vr.Version+" retired key: "+rc.Detail)
				}
			}
			for _, cell := range vr.Matrix {
				if !cell.Resumed {
					why := "not resumed"
					if cell.Error != "" {
						why = cell.Error
					}
					rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s matrix: its ticket offered to %s: %s", nr.Addr, vr.Version, cell.To, why))
				}
			}
		}
		if nr.matrixRowFails > 0 || nr.matrixColFails > 0 {
			nr.Errors = append(nr.Errors, fmt.Sprintf("matrix: %d of its tickets not resumed elsewhere, %d tickets of others not resumed here", nr.matrixRowFails, nr.matrixColFails))
		}
		if nr.Next == StatusOK {
			rep.NodesReadyNext++
		}
	}
	rep.Nodes = reps

	// Retired keys across rounds.
	for _, r := range c.retired {
		s := RetiredSummary{ID: r.key.ID, Reason: r.reason, RetiredAt: r.at, AcceptedBy: r.acceptedThisTime}
		if len(r.acceptedThisTime) > 0 {
			r.lastAcceptedAt, r.lastAcceptedBy, r.refusedSince = rep.Started, r.acceptedThisTime, time.Time{}
		} else if r.refusedSince.IsZero() {
			r.refusedSince = rep.Started
		}
		r.everChecked = true
		s.LastAcceptedAt, s.LastAcceptedBy, s.RefusedEverywhereSince = r.lastAcceptedAt, r.lastAcceptedBy, r.refusedSince
		rep.Retired = append(rep.Retired, s)
	}

	if rep.VaultError != "" {
		rep.Failures = append([]string{"vault: " + rep.VaultError}, rep.Failures...)
	}
	rep.OK = len(rep.Failures) == 0
	rep.Finished = time.Now()
	c.last = rep
	cfg.Logger.Info("fleet check round", "keyring", rep.Keyring, "round", rep.Round, "ok", rep.OK,
		"nodes", len(nodes), "ready_next", rep.NodesReadyNext, "matrix_pairs", rep.Matrix.Pairs,
		"matrix_failures", rep.Matrix.Failures, "failures", len(rep.Failures), "duration", rep.Finished.Sub(rep.Started).Round(time.Millisecond))
	return rep, nil
}

// keyByID finds a key the checker holds: in the window, or retired.
func (c *Checker) keyByID(w *Window, id string) *Key {
	if w != nil {
		if k := w.ByID(id); k != nil {
			return k
		}
	}
	if r := c.retiredByID(id); r != nil {
		return r.key
	}
	return nil
}

// checkCurrent compares the key of a fresh ticket with the schedule.
func (c *Checker) checkCurrent(w *Window, f *freshTicket, vr *VersionReport) Check {
	if f.keyIDErr != nil {
		return Check{Status: StatusFail, Detail: "malformed ticket: " + f.keyIDErr.Error()}
	}
	vr.TicketKeyID = f.keyID
	if w == nil {
		vr.TicketKeyState = "unknown"
		return Check{Status: StatusNone, Detail: "window unknown (Vault read failed)"}
	}
	expected := w.KeyAt(f.at)
	k := w.ByID(f.keyID)
	switch {
	case k == nil && c.retiredByID(f.keyID) != nil:
		r := c.retiredByID(f.keyID)
		vr.TicketKeyState = "retired"
		k = r.key
	case k == nil:
		vr.TicketKeyState = "unknown"
	case k == expected:
		vr.TicketKeyState = "current"
	case k.NotBefore.After(f.at):
		vr.TicketKeyState = "next"
	default:
		vr.TicketKeyState = "previous"
	}
	if k != nil {
		s, err := openTicket(c.cfg.Format, f.ticket, k)
		if err != nil {
			return Check{Status: StatusFail, Detail: fmt.Sprintf("its ticket names key %s but does not decrypt with that key's material: %v", f.keyID, err)}
		}
		s.wipe()
	}
	if expected == nil {
		return Check{Status: StatusFail, Detail: fmt.Sprintf("the window has no key for %s; the node encrypts with %s (%s)", f.at.UTC().Format(time.RFC3339), f.keyID, vr.TicketKeyState)}
	}
	if f.keyID == expected.ID {
		return Check{Status: StatusOK}
	}
	g := c.cfg.Grace
	if i := slices.Index(w.Keys, expected); i > 0 && w.Keys[i-1].ID == f.keyID && f.at.Sub(expected.NotBefore) < g {
		return Check{Status: StatusOK, Detail: fmt.Sprintf("still on the previous key %s, %s after the activation of %s (grace %s)", f.keyID, f.at.Sub(expected.NotBefore).Round(time.Millisecond), expected.ID, g)}
	}
	if n := w.NextAfter(f.at); n != nil && n.ID == f.keyID && n.NotBefore.Sub(f.at) < g {
		return Check{Status: StatusOK, Detail: fmt.Sprintf("already on the next key %s, %s before its activation (grace %s)", f.keyID, n.NotBefore.Sub(f.at).Round(time.Millisecond), g)}
	}
	return Check{Status: StatusFail, Detail: fmt.Sprintf("encrypts with key %s (%s); the schedule says %s", f.keyID, vr.TicketKeyState, expected.ID)}
}

// checkNext judges whether a node resumed a ticket under the next key.
func (c *Checker) checkNext(w *Window, nxt *Key, res offerResult, now time.Time) Check {
	if res.resumed {
		return Check{Status: StatusOK}
	}
	published := nxt.NotBefore.Add(-w.PublishAhead)
	why := "does not resume a ticket under the next key " + nxt.ID
	if res.err != nil {
		why = "could not be offered a ticket under the next key " + nxt.ID + ": " + res.err.Error()
	}
	if g := c.nextGrace(w); now.Before(published.Add(g)) {
		return Check{Status: StatusPending, Detail: fmt.Sprintf("%s yet (published %s ago, grace %s)", why, now.Sub(published).Round(time.Millisecond), g)}
	}
	return Check{Status: StatusFail, Detail: fmt.Sprintf("%s, published at %s, activating at %s (in %s)", why,
		published.UTC().Format(time.RFC3339), nxt.NotBefore.UTC().Format(time.RFC3339), nxt.NotBefore.Sub(now).Round(time.Millisecond))}
}

func summarize(w *Window, now time.Time) *WindowSummary {
	s := &WindowSummary{ReadAt: w.ReadAt, RotationPeriod: int64(w.RotationPeriod / time.Second), PublishAhead: int64(w.PublishAhead / time.Second)}
	if k := w.KeyAt(now); k != nil {
		s.Current = k.ID
	}
	if k := w.NextAfter(now); k != nil {
		s.Next, s.NextActivation = k.ID, k.NotBefore
	}
	for _, k := range w.Keys {
		s.Keys = append(s.Keys, KeySummary{ID: k.ID, State: k.State, NotBefore: k.NotBefore, NotAfter: k.NotAfter})
	}
	return s
}
