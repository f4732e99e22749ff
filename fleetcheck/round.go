package fleetcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/ctxend"
)

// offerResult is what one offered ticket did.
type offerResult struct {
	resumed bool
	err     error
}

// round is the state of one Check: the window, each node's fresh tickets
// (node x version), the sessions opened from them, and the offers' results.
type round struct {
	c      *Checker
	cfg    Config
	rep    *Report
	w      *Window // nil when the read failed
	nxt    *Key    // the next key, or nil
	fr     [][]*freshTicket
	frErr  [][]error
	sess   [][]*session
	reps   []NodeReport
	mu     sync.Mutex
	matrix map[[3]int]offerResult // source, target, version
	// matrixPending marks refused offers within an emergency propagation.
	matrixPending map[[3]int]bool
	next          map[[2]int]offerResult // node, version
	retired       map[[3]int]offerResult // node, version, index in offered
	// offered are the retired keys this round offers (retiredToOffer).
	offered []*retiredKey
	// prev are the previous keys this round offers (previousToOffer), and
	// previous their results.
	prev     []*Key
	previous map[[3]int]offerResult // node, version, index in prev
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
	r := &round{c: c, cfg: c.cfg, rep: &Report{Keyring: c.cfg.Keyring, Format: c.cfg.Format, Round: c.round, Started: time.Now()},
		matrix: map[[3]int]offerResult{}, matrixPending: map[[3]int]bool{}, next: map[[2]int]offerResult{}, retired: map[[3]int]offerResult{}, previous: map[[3]int]offerResult{}}
	for _, v := range c.cfg.Versions {
		r.rep.Settings.Versions = append(r.rep.Settings.Versions, versionName(v))
	}
	r.rep.Settings.Grace, r.rep.Settings.MatrixFull, r.rep.Settings.MatrixSample = c.cfg.Grace.Seconds(), c.cfg.MatrixFull, c.cfg.MatrixSample
	r.rep.Settings.MaxRetired, r.rep.Settings.ReloadAllowance = c.cfg.MaxRetired, c.cfg.ReloadAllowance.Seconds()
	if err := r.readWindow(ctx); err != nil {
		return nil, err
	}
	r.offered = c.retiredToOffer()
	r.takeFresh(ctx)
	defer r.forget()
	if err := ctxend.Err(ctx, time.Now()); err != nil {
		return nil, err
	}
	if c.cfg.UnnamedTickets {
		r.nameUnnamed()
	}
	r.openSessions()
	r.offerAll(ctx)
	if err := ctxend.Err(ctx, time.Now()); err != nil {
		return nil, err
	}
	r.evaluate()
	r.countMatrix()
	r.aggregate()
	r.judgeLifetimes()
	r.followRetired()

	rep := r.rep
	if rep.VaultError != "" {
		rep.Failures = append([]string{"vault: " + rep.VaultError}, rep.Failures...)
	}
	rep.OK = len(rep.Failures) == 0
	rep.Finished = time.Now()
	c.lastReport.Store(rep)
	r.cfg.Logger.Info("fleet check round", "keyring", rep.Keyring, "round", rep.Round, "ok", rep.OK,
		"nodes", len(rep.Nodes), "ready_next", rep.NodesReadyNext, "matrix_pairs", rep.Matrix.Pairs,
		"matrix_failures", rep.Matrix.Failures, "failures", len(rep.Failures), "duration", rep.Finished.Sub(rep.Started).Round(time.Millisecond))
	return rep, nil
}

// readWindow reads the window; a failed read is recorded in the report and
// the round judges against the last window read (marked stale; none if no
// read ever succeeded); a window of another format is an error.
func (r *round) readWindow(ctx context.Context) error {
	w, err := r.cfg.Read(ctx)
	if err != nil {
		r.rep.VaultError = err.Error()
		if w = r.c.lastWindow; w == nil {
			return nil
		}
		r.rep.WindowStale = true
	} else {
		if w.Format != r.cfg.Format {
			return fmt.Errorf("fleetcheck: the window reader returned format %q, the check is for %q", w.Format, r.cfg.Format)
		}
		r.c.absorb(w)
	}
	r.w = w
	r.nxt = w.NextAfter(r.rep.Started)
	r.prev = r.c.previousToOffer(w, r.rep.Started, r.rep.Round)
	r.rep.Window = summarize(w, r.rep.Started)
	r.rep.Settings.NextGrace = nextGrace(r.cfg, w.PublishAhead, r.c.maxReadyLag(w.RotationPeriod, w.PublishAhead)).Seconds()
	if r.rep.Keyring == "" {
		r.rep.Keyring = w.Keyring
	}
	return nil
}

// takeFresh makes a full handshake with every node in every version and
// keeps the first ticket each issues.
func (r *round) takeFresh(ctx context.Context) {
	nodes, nv := r.cfg.Nodes, len(r.cfg.Versions)
	r.fr, r.frErr = make([][]*freshTicket, len(nodes)), make([][]error, len(nodes))
	r.reps = make([]NodeReport, len(nodes))
	var tasks []func()
	for j := range nodes {
		r.fr[j], r.frErr[j] = make([]*freshTicket, nv), make([]error, nv)
		for vi, v := range r.cfg.Versions {
			tasks = append(tasks, func() { r.fr[j][vi], r.frErr[j][vi] = fresh(ctx, nodes[j], v, r.cfg.Timeout) })
		}
	}
	parallel(r.cfg.Concurrency, tasks)
	for j, n := range nodes {
		r.reps[j] = NodeReport{Addr: n.Addr, ServerName: n.serverName(), Domain: n.Domain, Reachable: true, Versions: make([]VersionReport, nv)}
		for vi, v := range r.cfg.Versions {
			vr := &r.reps[j].Versions[vi]
			vr.Version = versionName(v)
			if err := r.frErr[j][vi]; err != nil {
				vr.HandshakeError = err.Error()
				r.reps[j].Reachable = false
				continue
			}
			vr.HandshakeAt = r.fr[j][vi].at
		}
	}
}

// forget drops the round's client sessions and wipes its server sessions.
func (r *round) forget() {
	for _, row := range r.fr {
		for _, f := range row {
			f.forget()
		}
	}
	for _, row := range r.sess {
		for _, s := range row {
			s.wipe()
		}
	}
}

// nameUnnamed names every fresh unnamed ticket (UnnamedTickets) after the key, in the window or retired,
// whose material opens it (freshTicket.named: the ticket with that name in front, which the round opens);
// a ticket no key opens gets ErrTicketUnknownKey.
func (r *round) nameUnnamed() {
	var keys []*Key
	if r.w != nil {
		keys = append(keys, r.w.Keys...)
	}
	for _, rk := range r.c.retired {
		keys = append(keys, rk.key)
	}
	for _, row := range r.fr {
		for _, f := range row {
			if f == nil {
				continue
			}
			f.keyID, f.keyIDErr = "", fmt.Errorf("%w: the unnamed ticket opens under no key of the window or the retired keys", ErrTicketUnknownKey)
			for _, k := range keys {
				named := append(append([]byte(nil), k.name[:]...), f.ticket...)
				if s, err := openTicket(r.cfg.Format, named, k); err == nil {
					s.wipe()
					f.named, f.keyID, f.keyIDErr = named, k.ID, nil
					break
				}
			}
		}
	}
}

// openSessions decrypts every fresh ticket made under a key the checker
// holds: those sessions are what the round re-encrypts.
func (r *round) openSessions() {
	r.sess = make([][]*session, len(r.cfg.Nodes))
	for j := range r.cfg.Nodes {
		r.sess[j] = make([]*session, len(r.cfg.Versions))
		for vi := range r.cfg.Versions {
			f := r.fr[j][vi]
			if f == nil || f.keyIDErr != nil {
				continue
			}
			if k := r.c.keyByID(r.w, f.keyID); k != nil {
				if s, err := openTicket(r.cfg.Format, f.named, k); err == nil {
					r.sess[j][vi] = s
				}
			}
		}
	}
}

// craft re-encrypts a session of this round under k, preferably one node j
// issued, and returns the client state that offers it.
func (r *round) craft(j, vi int, k *Key) (*tls.ClientSessionState, error) {
	src := -1
	if r.sess[j][vi] != nil {
		src = j
	} else {
		for i := range r.cfg.Nodes {
			if r.sess[i][vi] != nil {
				src = i
				break
			}
		}
	}
	if src < 0 {
		return nil, errors.New("no ticket of this round decrypts under a key the check holds, so none can be re-encrypted")
	}
	t, err := sealTicket(r.cfg.Format, r.sess[src][vi], k)
	if err != nil {
		return nil, err
	}
	if r.cfg.UnnamedTickets {
		t = t[keyNameLen:]
	}
	return r.fr[src][vi].resumption(t)
}

// offerTask returns a task that offers what cs returns to node j and
// stores the result with store.
func (r *round) offerTask(ctx context.Context, j int, v uint16, cs func() (*tls.ClientSessionState, error), store func(offerResult)) func() {
	return func() {
		var res offerResult
		s, err := cs()
		if err == nil {
			res.resumed, res.err = offer(ctx, r.cfg.Nodes[j], v, s, r.cfg.Timeout)
		} else {
			res.err = err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		store(res)
	}
}

// offerAll makes the round's offers in one bounded batch: the matrix, the
// next key and every retired key, to every reachable node.
func (r *round) offerAll(ctx context.Context) {
	nodes := r.cfg.Nodes
	var tasks []func()
	for i := range nodes {
		for vi, v := range r.cfg.Versions {
			if r.fr[i][vi] == nil {
				continue
			}
			for _, j := range r.c.matrixTargets(i, r.rep.Round) {
				if r.fr[j][vi] == nil {
					continue // unreachable in this version: reported once, as its handshake error
				}
				tasks = append(tasks, r.offerTask(ctx, j, v,
					func() (*tls.ClientSessionState, error) { return r.fr[i][vi].resumption(r.fr[i][vi].ticket) },
					func(res offerResult) { r.matrix[[3]int{i, j, vi}] = res }))
			}
		}
	}
	for j := range nodes {
		for vi, v := range r.cfg.Versions {
			if r.fr[j][vi] == nil {
				continue
			}
			if r.nxt != nil {
				tasks = append(tasks, r.offerTask(ctx, j, v,
					func() (*tls.ClientSessionState, error) { return r.craft(j, vi, r.nxt) },
					func(res offerResult) { r.next[[2]int{j, vi}] = res }))
			}
			for pi, k := range r.prev {
				tasks = append(tasks, r.offerTask(ctx, j, v,
					func() (*tls.ClientSessionState, error) { return r.craft(j, vi, k) },
					func(res offerResult) { r.previous[[3]int{j, vi, pi}] = res }))
			}
			for ri, rk := range r.offered {
				tasks = append(tasks, r.offerTask(ctx, j, v,
					func() (*tls.ClientSessionState, error) { return r.craft(j, vi, rk.key) },
					func(res offerResult) { r.retired[[3]int{j, vi, ri}] = res }))
			}
		}
	}
	parallel(r.cfg.Concurrency, tasks)
}

// evaluate judges every check of every node and version.
func (r *round) evaluate() {
	nodes, cfg := r.cfg.Nodes, r.cfg
	// Graces count from now: the offers have just been made.
	now := time.Now()
	for _, rk := range r.offered {
		rk.acceptedThisTime = nil
		rk.lastOffered = r.rep.Round
	}
	for j := range nodes {
		nr := &r.reps[j]
		nr.Kind = r.c.kindOf(nodes[j])
		var lag time.Duration
		if r.w != nil {
			lag = r.c.switchLag(nodes[j], r.w.RotationPeriod, r.w.PublishAhead)
		}
		nr.Tolerance = lag.Seconds()
		for vi := range cfg.Versions {
			vr := &nr.Versions[vi]
			f := r.fr[j][vi]
			if f == nil {
				fail := Check{Status: StatusFail, Detail: "unreachable: " + vr.HandshakeError}
				vr.Current, vr.Next = fail, fail
				nr.Errors = append(nr.Errors, vr.Version+": "+vr.HandshakeError)
				continue
			}
			vr.Current = r.c.checkCurrent(r.w, nodes[j], f, vr)
			switch {
			case r.w == nil:
				vr.Next = Check{Status: StatusNone, Detail: "window unknown (Vault read failed)"}
			case r.nxt == nil:
				vr.Next = Check{Status: StatusNone, Detail: "no next key is published"}
			default:
				vr.NextKeyID = r.nxt.ID
				vr.Next = r.c.checkNext(r.w, nodes[j], r.nxt, r.next[[2]int{j, vi}], r.rep.Started)
			}
			for pi, k := range r.prev {
				res := r.previous[[3]int{j, vi, pi}]
				vr.Previous = append(vr.Previous, KeyCheck{KeyID: k.ID, Resumed: res.resumed, Check: checkPrevious(k, res)})
			}
			for ri, rk := range r.offered {
				res := r.retired[[3]int{j, vi, ri}]
				point := checkPoint(nodes[j].Addr, vr.Version)
				switch {
				case res.err != nil:
				case res.resumed:
					delete(rk.refusedAt, point)
				default:
					if _, ok := rk.refusedAt[point]; !ok {
						rk.refusedAt[point] = r.rep.Started
					}
				}
				rc := RetiredCheck{KeyID: rk.key.ID, Resumed: res.resumed}
				switch {
				case errors.Is(res.err, errNotOffered):
					rc.Check = Check{Status: StatusNone, Detail: res.err.Error()}
				case res.err != nil:
					rc.Check = Check{Status: StatusFail, Detail: "could not offer a ticket under it: " + res.err.Error()}
				case res.resumed && now.Sub(rk.at) < r.retiredLag(nodes[j], rk):
					rc.Check = Check{Status: StatusPending, Detail: fmt.Sprintf("still resumes a ticket under key %s, %s after it was %s (tolerance %s)", rk.key.ID, now.Sub(rk.at).Round(time.Millisecond), rk.reason, r.retiredLag(nodes[j], rk))}
				case res.resumed:
					rc.Check = Check{Status: StatusFail, Detail: fmt.Sprintf("resumes a ticket under retired key %s (%s at %s)", rk.key.ID, rk.reason, rk.at.UTC().Format(time.RFC3339))}
				default:
					rc.Check = Check{Status: StatusOK}
				}
				if res.resumed && !slices.Contains(rk.acceptedThisTime, nodes[j].Addr) {
					rk.acceptedThisTime = append(rk.acceptedThisTime, nodes[j].Addr)
				}
				vr.Retired = append(vr.Retired, rc)
			}
			for _, t := range r.c.matrixTargets(j, r.rep.Round) {
				res, ok := r.matrix[[3]int{j, t, vi}]
				if !ok {
					continue
				}
				cell := Cell{To: nodes[t].Addr, Resumed: res.resumed, NotOffered: errors.Is(res.err, errNotOffered)}
				if res.err != nil && !cell.NotOffered {
					cell.Error = res.err.Error()
				}
				if !res.resumed && res.err == nil && f.keyIDErr == nil && r.c.propagatingMatrix(r.w, nodes[j], nodes[t], f.keyID, now) {
					cell.Pending = true
					r.matrixPending[[3]int{j, t, vi}] = true
				}
				vr.Matrix = append(vr.Matrix, cell)
			}
		}
	}
}

// countMatrix fills the matrix totals of the report and of each node's row
// and column.
func (r *round) countMatrix() {
	for key, res := range r.matrix {
		i, j := key[0], key[1]
		if errors.Is(res.err, errNotOffered) {
			r.rep.Matrix.NotOffered++
			continue
		}
		if r.matrixPending[key] {
			r.rep.Matrix.Pending++
			continue
		}
		r.rep.Matrix.Pairs++
		r.reps[i].MatrixRowTotal++
		r.reps[j].MatrixColTotal++
		if res.resumed {
			r.reps[i].MatrixRowOK++
			r.reps[j].MatrixColOK++
			continue
		}
		r.rep.Matrix.Failures++
		r.reps[i].matrixRowFails++
		r.reps[j].matrixColFails++
	}
	r.rep.Matrix.Sampled = r.c.sampled()
	r.rep.Matrix.Domains = len(r.c.groups)
}

// aggregate sums each node's versions up (the worst status wins) and lists
// every failure, one line each, naming the node.
func (r *round) aggregate() {
	rep := r.rep
	for j := range r.reps {
		nr := &r.reps[j]
		nr.Current, nr.Next, nr.Retired, nr.Previous = StatusNone, StatusNone, StatusNone, StatusNone
		if len(r.offered) > 0 {
			nr.Retired = StatusOK
		}
		fail := func(version, what, detail string) {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s %s: %s", nr.Addr, version, what, detail))
		}
		for _, vr := range nr.Versions {
			nr.Current = worst(nr.Current, vr.Current.Status)
			nr.Next = worst(nr.Next, vr.Next.Status)
			if vr.HandshakeError != "" {
				fail(vr.Version, "unreachable", vr.HandshakeError)
				continue
			}
			if vr.Current.Status == StatusFail {
				fail(vr.Version, "current key", vr.Current.Detail)
				nr.Errors = append(nr.Errors, vr.Version+" current key: "+vr.Current.Detail)
			}
			if vr.Next.Status == StatusFail {
				fail(vr.Version, "next key", vr.Next.Detail)
				nr.Errors = append(nr.Errors, vr.Version+" next key: "+vr.Next.Detail)
			}
			for _, pc := range vr.Previous {
				nr.Previous = worst(nr.Previous, pc.Status)
				if pc.Status == StatusFail {
					nr.previousFailures++
					fail(vr.Version, "previous key", pc.Detail)
					nr.Errors = append(nr.Errors, vr.Version+" previous key: "+pc.Detail)
				}
			}
			for _, rc := range vr.Retired {
				nr.Retired = worst(nr.Retired, rc.Status)
				if rc.Resumed {
					nr.retiredAccepted++
				}
				if rc.Status == StatusFail {
					fail(vr.Version, "retired key", rc.Detail)
					nr.Errors = append(nr.Errors, vr.Version+" retired key: "+rc.Detail)
				}
			}
			for _, cell := range vr.Matrix {
				if !cell.Resumed && !cell.NotOffered && !cell.Pending {
					why := "not resumed"
					if cell.Error != "" {
						why = cell.Error
					}
					fail(vr.Version, "matrix", "its ticket offered to "+cell.To+": "+why)
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
	rep.Nodes = r.reps
}

// followRetired records, across rounds, which nodes still resumed each
// retired key, since when every node refuses it (only once every node was
// offered it and refused it), and groups the keys of each purge.
func (r *round) followRetired() {
	var points, versions []string
	for _, v := range r.cfg.Versions {
		versions = append(versions, versionName(v))
	}
	for _, n := range r.cfg.Nodes {
		for _, v := range versions {
			points = append(points, checkPoint(n.Addr, v))
		}
	}
	for _, rk := range r.c.retired {
		offered := slices.Contains(r.offered, rk)
		if offered && len(rk.acceptedThisTime) > 0 {
			rk.lastAcceptedAt, rk.lastAcceptedBy = r.rep.Started, rk.acceptedThisTime
		}
		rs := RetiredSummary{ID: rk.key.ID, Reason: rk.reason, RetiredAt: rk.at, OfferedThisRound: offered,
			LastAcceptedAt: rk.lastAcceptedAt, LastAcceptedBy: rk.lastAcceptedBy,
			RefusedEverywhereSince: rk.refusedEverywhereSince(points), NotYetRefusedBy: rk.notYetRefusedBy(r.cfg.Nodes, versions)}
		if offered {
			rs.AcceptedBy = rk.acceptedThisTime
		}
		r.rep.Retired = append(r.rep.Retired, rs)
	}
	r.rep.Purges = purges(r.rep.Retired)
}

// retiredLag is the node's tolerance for rk (Checker.retiredLag) under the
// round's window.
func (r *round) retiredLag(n Node, rk *retiredKey) time.Duration {
	if r.w == nil {
		return r.c.retiredLag(n, rk, 0, 0)
	}
	return r.c.retiredLag(n, rk, r.w.RotationPeriod, r.w.PublishAhead)
}
