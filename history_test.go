package ticketkeys

// The schedule invariants of issue 18, checked over generated histories: the
// real backend, driven through logical.Requests on a simulated clock over the
// SDK's in-memory storage wrapped to inject faults, through random sequences
// of operations at production scales, with simulated readers that follow
// ttl. Every served window goes to every reader's window decoder. A failing
// history prints its seed and a shrunk list of operations that reproduces it.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	_ "unsafe" // go:linkname, for the client's window decoder

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/fleetcheck"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

var (
	historyOps      = flag.Int("history.ops", 20000, "operations TestScheduleInvariantsOverHistories runs, over histories of -history.len operations")
	historyLen      = flag.Int("history.len", 200, "operations per generated history")
	historyLongWait = flag.Duration("history.longwait", 2*time.Hour, "longest of the occasional long waits between operations")
	historyWorkers  = flag.Int("history.workers", 2, "histories run at once")
	historyTimeout  = flag.Duration("history.timeout", 20*time.Minute, "bound on the whole run")
	historySeed     = flag.Uint64("history.seed", 0, "run only the history of this seed (as printed by a failure)")
)

// clientDecodeWindow is the Go client's own window decoder and validator
// (client/window.go), the one every Source runs on each read. It is not
// exported; the harness links to it so that it checks the real reader.
//
//go:linkname clientDecodeWindow github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client.decodeWindow
func clientDecodeWindow(data []byte) (*client.Window, error)

// windowDecoder is one reader's window decoder: it gets the window as JSON
// (data) and as the engine served it (served, what Agent's templates see),
// and returns an error when the reader would refuse the window (or disagrees with the schedule package on
// it). The nginx Lua module's reader runs in batches under LuaJIT at the end
// of each history (collectLua, checkLua in history_readers_test.go).
type windowDecoder struct {
	name   string
	format string
	decode func(data []byte, served map[string]any, readAt time.Time) error
}

// windowDecoders are the readers every served window is fed to, in the
// reader's own format.
var windowDecoders = []windowDecoder{
	{"go client", formatGo, func(data []byte, _ map[string]any, _ time.Time) error { _, err := clientDecodeWindow(data); return err }},
	{"schedule (go)", formatGo, func(data []byte, _ map[string]any, _ time.Time) error {
		_, err := schedule.Decode(data, formatGo)
		return err
	}},
	{"schedule (nginx)", formatNginx, func(data []byte, _ map[string]any, _ time.Time) error {
		_, err := schedule.Decode(data, formatNginx)
		return err
	}},
	{"fleet check (go)", formatGo, func(data []byte, _ map[string]any, at time.Time) error {
		_, err := fleetcheck.ParseWindow(data, formatGo, at)
		return err
	}},
	{"fleet check (nginx)", formatNginx, func(data []byte, _ map[string]any, at time.Time) error {
		_, err := fleetcheck.ParseWindow(data, formatNginx, at)
		return err
	}},
	{"fleet check (haproxy)", formatHAProxy, func(data []byte, _ map[string]any, at time.Time) error {
		_, err := fleetcheck.ParseWindow(data, formatHAProxy, at)
		return err
	}},
	{"haproxy push", formatHAProxy, checkHAProxyPush},
	{"fleet check (envoy)", formatEnvoy, func(data []byte, _ map[string]any, at time.Time) error {
		_, err := fleetcheck.ParseWindow(data, formatEnvoy, at)
		return err
	}},
}

// histOp is one generated operation. Its fields print as a line that says
// what it does, so a shrunk history reads as a reproduction recipe.
type histOp struct {
	Kind  string         // create, settings, config, rotate, delete, wait, to-activation, outage, leader
	Name  string         // keyring
	Data  map[string]any // request data
	Wait  time.Duration  // wait, outage length, offset after an activation
	Fault string         // "", "fail-before-commit", "fail-after-commit", "read-only", "yield"
}

func (o histOp) String() string {
	var b strings.Builder
	b.WriteString(o.Kind)
	if o.Name != "" {
		b.WriteString(" " + o.Name)
	}
	if len(o.Data) > 0 {
		keys := make([]string, 0, len(o.Data))
		for k := range o.Data {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%v", k, o.Data[k])
		}
	}
	if o.Wait != 0 {
		b.WriteString(" " + o.Wait.String())
	}
	if o.Fault != "" {
		b.WriteString(" [" + o.Fault + "]")
	}
	return b.String()
}

var (
	histNames   = []string{"a", "b"}
	histPeriods = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, time.Hour, 6 * time.Hour, 24 * time.Hour}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func secs(d time.Duration) string { return fmt.Sprintf("%ds", int64(d/time.Second)) }

// genSettings draws keyring settings at production scales; some are refused
// (key cap, lifetime, reader lag), which is part of the history.
func genSettings(r *rand.Rand) map[string]any {
	period := pick(r, histPeriods)
	d := map[string]any{"rotation_period": secs(period)}
	switch r.IntN(4) {
	case 0:
		d["retain"] = secs(period)
	case 1:
		d["retain"] = secs(pick(r, []time.Duration{0, 2 * time.Hour, 12 * time.Hour}))
	case 2:
		d["retain"] = secs(time.Duration(1+r.IntN(3)) * period)
	}
	switch r.IntN(4) {
	case 0:
		d["publish_ahead"] = secs(pick(r, []time.Duration{30 * time.Second, 2 * time.Minute, 10 * time.Minute}))
	case 1:
		d["publish_ahead"] = secs(max(period/time.Duration(1+r.IntN(4)), 30*time.Second))
	case 2:
		d["publish_ahead"] = "0s"
	}
	if r.IntN(3) == 0 {
		delete(d, "rotation_period")
	}
	return d
}

func genFault(r *rand.Rand) string {
	switch r.IntN(12) {
	case 0:
		return "fail-before-commit"
	case 1, 2:
		return "fail-after-commit"
	case 3:
		return "read-only"
	case 4:
		return "yield"
	}
	return ""
}

// genHistory draws n operations.
func genHistory(r *rand.Rand, n int) []histOp {
	ops := make([]histOp, 0, n)
	for len(ops) < n {
		name := pick(r, histNames)
		var op histOp
		switch k := r.IntN(100); {
		case k < 8:
			op = histOp{Kind: "create", Name: name, Data: genSettings(r)}
		case k < 14:
			op = histOp{Kind: "settings", Name: name, Data: genSettings(r)}
		case k < 19:
			d := map[string]any{}
			if r.IntN(2) == 0 {
				d["max_key_lifetime"] = secs(pick(r, []time.Duration{2 * time.Hour, 13 * time.Hour, 25 * time.Hour, 48 * time.Hour, 168 * time.Hour}))
			}
			if r.IntN(2) == 0 || len(d) == 0 {
				d["max_read_ttl"] = secs(pick(r, []time.Duration{30 * time.Second, 5 * time.Minute, 5 * time.Minute, time.Hour, 24 * time.Hour}))
			}
			op = histOp{Kind: "config", Data: d}
		case k < 34:
			op = histOp{Kind: "rotate", Name: name, Data: map[string]any{"mode": pick(r, []string{rotateNow, rotateScheduled}), "purge_previous": r.IntN(3) == 0}}
		case k < 37:
			op = histOp{Kind: "delete", Name: name}
		case k < 45:
			op = histOp{Kind: "to-activation", Name: name, Wait: pick(r, []time.Duration{0, 0, 400 * time.Millisecond, -300 * time.Millisecond})}
		case k < 47:
			op = histOp{Kind: "outage", Wait: time.Duration(1+r.IntN(6)) * time.Hour}
		case k < 50:
			op = histOp{Kind: "leader"}
		case k < 97:
			op = histOp{Kind: "wait", Wait: time.Duration(r.Int64N(int64(3 * time.Minute)))}
		default:
			op = histOp{Kind: "wait", Wait: time.Duration(r.Int64N(int64(*historyLongWait)))}
		}
		if op.Kind != "wait" && op.Kind != "to-activation" && op.Kind != "outage" && op.Kind != "leader" {
			op.Fault = genFault(r)
		}
		ops = append(ops, op)
	}
	return ops
}

// faultStorage is the SDK's in-memory storage with injected faults. While an
// operation is armed with a fault, its first write fails before storage
// applies it, or after (a timeout, a cancelled context), or every write is
// refused as on a standby; "yield" runs another node's read between the
// operation's reads and its write. Every applied change is reported to the
// standby, as replication does.
type faultStorage struct {
	inner      logical.Storage
	readOnly   bool // a standby's view
	fault      string
	yieldHook  func()
	onCommit   func(key string)
	writesSeen int
	// commits counts applied writes, so the harness re-examines storage
	// only after it changed.
	commits int
}

var errInjected = errors.New("injected storage failure")

func (s *faultStorage) List(ctx context.Context, p string) ([]string, error) {
	return s.inner.List(ctx, p)
}

func (s *faultStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	return s.inner.Get(ctx, k)
}

func (s *faultStorage) write(apply func() error, key string) error {
	if s.readOnly || s.fault == "read-only" {
		return errors.New(logical.ErrReadOnly.Error())
	}
	s.writesSeen++
	fault := ""
	if s.writesSeen == 1 {
		fault = s.fault
	}
	switch fault {
	case "fail-before-commit":
		return errInjected
	case "yield":
		if s.yieldHook != nil {
			s.yieldHook()
		}
	}
	if err := apply(); err != nil {
		return err
	}
	s.commits++
	if s.onCommit != nil {
		s.onCommit(key)
	}
	if fault == "fail-after-commit" {
		return fmt.Errorf("%w: context deadline exceeded after the write was applied", errInjected)
	}
	return nil
}

func (s *faultStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	return s.write(func() error { return s.inner.Put(ctx, e) }, e.Key)
}

func (s *faultStorage) Delete(ctx context.Context, k string) error {
	return s.write(func() error { return s.inner.Delete(ctx, k) }, k)
}

// histReader is a simulated reader following ttl: Vault Agent re-reads 1s
// after the ttl and backs off from 250ms to 1m on errors; the Go client
// re-reads up to min(max(ttl/20, 100ms), 5s) after it (here always the
// most) and backs off from 500ms to 30s, reading through a standby that
// forwards to the active node.
type histReader struct {
	name, keyring, format string
	agent                 bool
	next                  time.Time
	failures              int
	// held: key id -> when this reader first held it.
	held map[string]time.Time
	// since: keyring instance -> when this reader first read it.
	since map[int]time.Time
}

func (r *histReader) afterRead(now time.Time, ttl time.Duration) {
	r.failures = 0
	if r.agent {
		r.next = now.Add(ttl + agentReadDelay)
		return
	}
	r.next = now.Add(ttl + min(max(ttl/20, goClientMinDelay), goClientMaxDelay))
}

func (r *histReader) afterError(now time.Time) {
	r.failures++
	lo, hi := 500*time.Millisecond, 30*time.Second
	if r.agent {
		lo, hi = 250*time.Millisecond, time.Minute
	}
	d := lo
	for i := 1; i < r.failures && d < hi; i++ {
		d *= 2
	}
	r.next = now.Add(min(d, hi))
}

// keyOrigin is what the harness knows of a key from the step that first
// stored it.
type keyOrigin struct {
	instance int
	step     string
	// exempt: a key that by definition is not published ahead (the first
	// key of a keyring, a mode=now key).
	exempt bool
}

// history runs one generated history and checks the invariants.
type history struct {
	t      testing.TB
	seed   uint64
	ops    []histOp
	rng    *rand.Rand
	clock  *fakeClock
	inner  *logical.InmemStorage
	store  *faultStorage // the active node's view
	sby    *faultStorage // the standby's view
	active *backend
	stby   *backend

	readers     []*histReader
	nextTick    time.Time
	outageUntil time.Time

	instance  map[string]int // keyring -> current instance number (0: absent)
	instances int
	origin    map[string]keyOrigin // key id -> origin
	dead      map[string]string    // key id -> why it may never be served again
	lastIDs   map[string][]string  // keyring -> ids last seen in storage
	step      int
	stepName  string
	violation string

	reads, ticks, faults int
	// observed is the storage version observeStorage last examined.
	observed int
	decoded  map[any]bool // renderings already given to the decoders
	// luaWindows are the nginx windows served, for the Lua module's check at
	// the end of the history; luaSeen their files.
	luaWindows []luaWindow
	luaSeen    map[string]bool
	cfg        *mountConfig // storage's config at version cfgSeen
	cfgSeen    int
}

const histTickEvery = time.Minute

func newHistory(t testing.TB, seed uint64, ops []histOp) *history {
	h := &history{
		t: t, seed: seed, ops: ops,
		rng:      rand.New(rand.NewPCG(seed, 0x5eed)),
		clock:    &fakeClock{now: testStart.Add(time.Duration(seed%1000) * time.Millisecond)},
		inner:    &logical.InmemStorage{},
		instance: map[string]int{}, origin: map[string]keyOrigin{}, dead: map[string]string{}, lastIDs: map[string][]string{},
	}
	h.store = &faultStorage{inner: h.inner}
	h.sby = &faultStorage{inner: h.inner, readOnly: true}
	h.store.onCommit = func(key string) {
		if h.stby != nil {
			h.stby.Invalidate(context.Background(), key)
		}
	}
	h.store.yieldHook = func() {
		for _, n := range histNames {
			h.serveRead(nil, n, formatGo)
		}
	}
	h.active = h.newNode(h.store, logical.TestSystemView(), 1)
	sys := logical.TestSystemView()
	sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	h.stby = h.newNode(h.sby, sys, 2)
	h.nextTick = h.clock.Now().Add(time.Duration(h.rng.Int64N(int64(histTickEvery))))
	start := h.clock.Now()
	for _, n := range histNames {
		h.readers = append(h.readers,
			&histReader{name: "agent-" + n, keyring: n, format: formatNginx, agent: true, next: start.Add(time.Duration(h.rng.Int64N(int64(time.Minute))))},
			&histReader{name: "go-" + n, keyring: n, format: formatGo, next: start.Add(time.Duration(h.rng.Int64N(int64(time.Minute))))},
		)
	}
	return h
}

// newNode is a backend over view: deterministic key material, the real
// jitter's range drawn from the history's seed.
func (h *history) newNode(view logical.Storage, sys logical.SystemView, n byte) *backend {
	var key [32]byte
	key[0], key[1] = n, byte(h.instances)
	for i := range 8 {
		key[2+i] = byte(h.seed >> (8 * i))
	}
	b := newBackend(h.clock.Now, rand.NewChaCha8(key))
	b.jitter = func(n int64) int64 { return h.rng.Int64N(n) }
	if err := b.Setup(context.Background(), &logical.BackendConfig{StorageView: view, Logger: hclog.NewNullLogger(), System: sys}); err != nil {
		panic(err) // runs on the harness's worker goroutines, where t.Fatal may not
	}
	return b
}

func (h *history) violate(format string, args ...any) {
	if h.violation == "" {
		h.violation = fmt.Sprintf("after step %d (%s) at +%s: ", h.step, h.stepName, h.clock.Now().Sub(testStart).Round(time.Millisecond)) + fmt.Sprintf(format, args...)
	}
}

func (h *history) request(b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	return sendAsVault(context.Background(), b, s, op, path, data)
}

// advance moves the clock to `to`, running every reader read and periodic
// tick due on the way, in time order.
func (h *history) advance(to time.Time) {
	for h.violation == "" {
		at, who := h.nextTick, (*histReader)(nil)
		for _, r := range h.readers {
			if r.next.Before(at) {
				at, who = r.next, r
			}
		}
		if at.After(to) {
			break
		}
		h.clock.Set(at)
		if who == nil {
			h.nextTick = h.nextTick.Add(histTickEvery)
			if at.Before(h.outageUntil) {
				continue
			}
			h.ticks++
			_ = h.active.periodicFunc(context.Background(), &logical.Request{Operation: logical.RollbackOperation, Storage: h.store})
			h.observeStorage("tick")
			continue
		}
		h.serveRead(who, who.keyring, who.format)
		h.observeStorage("read")
	}
	if h.violation == "" {
		h.clock.Set(to)
	}
}

// serveRead reads a window as reader r (nil: a bare read of another node
// during a yield) and checks it.
func (h *history) serveRead(r *histReader, name, format string) {
	now := h.clock.Now()
	var resp *logical.Response
	var err error
	if r != nil && !r.agent || r == nil {
		// The Go client may reach a standby, which forwards a read it cannot serve.
		resp, err = h.request(h.stby, h.sby, logical.ReadOperation, "keys/"+name, map[string]any{"format": format})
		if err != nil && strings.Contains(err.Error(), logical.ErrReadOnly.Error()) && r != nil {
			resp, err = h.request(h.active, h.store, logical.ReadOperation, "keys/"+name, map[string]any{"format": format})
		}
	} else {
		resp, err = h.request(h.active, h.store, logical.ReadOperation, "keys/"+name, map[string]any{"format": format})
	}
	h.reads++
	if err != nil || resp == nil || resp.IsError() {
		if r != nil {
			r.afterError(now)
		}
		var coded logical.HTTPCodedError
		if err != nil && !errors.As(err, &coded) && !strings.Contains(err.Error(), logical.ErrReadOnly.Error()) {
			h.violate("read of %q failed: %v", name, err)
		}
		return
	}
	if fresh := h.checkWindow(name, format, resp, now); fresh && r != nil && r.agent {
		// HAProxy's Agent renders the same window in its own format: read it
		// at the same instant, for the push's readers (windowDecoders).
		h.serveRead(nil, name, formatHAProxy)
	}
	if r == nil {
		return
	}
	ttl := time.Duration(resp.Data["ttl"].(int64)) * time.Second
	r.afterRead(now, ttl)
	inst := h.instance[name]
	if r.since == nil {
		r.since, r.held = map[int]time.Time{}, map[string]time.Time{}
	}
	if _, ok := r.since[inst]; !ok {
		r.since[inst] = now
	}
	heldAt := now.Add(readAllowance)
	for _, k := range resp.Data["keys"].([]map[string]interface{}) {
		id := k["id"].(string)
		if _, ok := r.held[id]; ok {
			continue
		}
		r.held[id] = heldAt
		nb, _ := time.Parse(time.RFC3339, k["not_before"].(string))
		o := h.origin[id]
		if !heldAt.After(nb) || o.exempt {
			continue
		}
		since, ok := r.since[o.instance]
		published := h.publishedAt(name, id)
		if ok && !since.After(published) {
			h.violate("%s holds key %s (%s, from %s) %s after it started encrypting at +%s; it follows ttl and has read keyring %q since +%s, before the key was published at +%s",
				r.name, id[:8], k["state"], o.step, heldAt.Sub(nb), nb.Sub(testStart), name, since.Sub(testStart), published.Sub(testStart))
		}
	}
}

// publishedAt is when storage says key id of keyring name became readable.
func (h *history) publishedAt(name, id string) time.Time {
	kr, _ := loadKeyring(context.Background(), h.inner, name)
	if kr != nil {
		for _, k := range kr.Keys {
			if k.ID() == id {
				return k.PublishAt
			}
		}
	}
	return h.clock.Now()
}

// checkWindow checks one served window; fresh reports a window (rendering)
// the decoders had not seen.
func (h *history) checkWindow(name, format string, resp *logical.Response, now time.Time) (fresh bool) {
	keys := resp.Data["keys"].([]map[string]interface{})
	// The decoders see each distinct window once: the engine renders a
	// window once per change and format and shares its keys between reads
	// (render.go), and a window read again differs only in its ttl.
	type rendering struct {
		format string
		first  *map[string]interface{}
		n      int
	}
	var sig rendering
	if len(keys) > 0 {
		sig = rendering{format, &keys[0], len(keys)}
	}
	if h.decoded == nil {
		h.decoded = map[any]bool{}
	}
	if !h.decoded[sig] || len(keys) == 0 {
		h.decoded[sig] = true
		fresh = true
		data, err := json.Marshal(resp.Data)
		if err != nil {
			h.violate("window of %q does not encode: %v", name, err)
			return fresh
		}
		for _, d := range windowDecoders {
			if d.format != format {
				continue
			}
			if err := d.decode(data, resp.Data, now); err != nil {
				h.violate("%s refuses the window of %q read at +%s: %v", d.name, name, now.Sub(testStart), err)
			}
		}
		if format == formatNginx {
			h.collectLua(name, data, resp.Data, now)
		}
	}
	if ttl, ok := resp.Data["ttl"].(int64); !ok || ttl < 1 {
		h.violate("window of %q has ttl %v", name, resp.Data["ttl"])
	}
	if h.cfg == nil || h.cfgSeen != h.store.commits {
		h.cfg, _ = loadConfig(context.Background(), h.inner)
		h.cfgSeen = h.store.commits
	}
	cfg := h.cfg
	if len(keys) > maxKeysPerKeyring {
		h.violate("window of %q holds %d keys", name, len(keys))
	}
	type span struct {
		id                string
		nb, until, after  time.Time
		current, previous bool
	}
	spans := make([]span, 0, len(keys))
	seen := map[time.Time]string{}
	currents := 0
	for i, k := range keys {
		var s span
		s.id = k["id"].(string)
		s.nb, _ = time.Parse(time.RFC3339, k["not_before"].(string))
		s.until, _ = time.Parse(time.RFC3339, k["encrypt_until"].(string))
		s.after, _ = time.Parse(time.RFC3339, k["not_after"].(string))
		if why, ok := h.dead[s.id]; ok {
			h.violate("window of %q serves key %s, %s", name, s.id[:8], why)
		}
		if other, dup := seen[s.nb]; dup {
			h.violate("window of %q: keys %s and %s share not_before %s", name, other[:8], s.id[:8], s.nb.Format(time.RFC3339))
		}
		seen[s.nb] = s.id
		if !now.Before(s.after) {
			h.violate("window of %q (read at %s) serves key %s (%s, not_before %s, encrypt_until %s) at or after its not_after %s", name, now.Format(time.RFC3339Nano), s.id[:8], k["state"], s.nb.Format(time.RFC3339), s.until.Format(time.RFC3339), s.after.Format(time.RFC3339))
		}
		if life := s.after.Sub(s.nb); life > cfg.MaxKeyLifetime {
			h.violate("window of %q serves key %s decrypting %s after it activates; max_key_lifetime is %s", name, s.id[:8], life, cfg.MaxKeyLifetime)
		}
		if k["state"] == stateCurrent {
			currents++
			if i != 0 {
				h.violate("window of %q: the current key is at position %d", name, i)
			}
		}
		spans = append(spans, s)
	}
	if currents != 1 {
		h.violate("window of %q read at +%s has %d current keys", name, now.Sub(testStart), currents)
	}
	// Exactly one key encrypts at each instant from now to the schedule's end.
	slices.SortFunc(spans, func(a, b span) int { return a.nb.Compare(b.nb) })
	var prev *span
	for i := range spans {
		s := &spans[i]
		if !s.until.After(now) {
			continue
		}
		if prev == nil && s.nb.After(now) {
			h.violate("window of %q: no key encrypts at +%s (the first one starts at %s)", name, now.Sub(testStart), s.nb.Format(time.RFC3339))
		}
		if prev != nil && !prev.until.Equal(s.nb) {
			h.violate("window of %q: key %s encrypts until %s but the next key %s starts at %s", name, prev.id[:8], prev.until.Format(time.RFC3339), s.id[:8], s.nb.Format(time.RFC3339))
		}
		prev = s
	}
	return fresh
}

// observeStorage records keys entering and leaving storage, and checks that
// storage holds a whole schedule and that the active node's caches agree
// with storage.
func (h *history) observeStorage(step string) {
	if h.store.commits == h.observed && step != "op" && step != "leader" {
		return // storage unchanged; fills of the cache load what storage holds
	}
	h.observed = h.store.commits
	ctx := context.Background()
	now := h.clock.Now()
	for _, name := range histNames {
		kr, err := loadKeyring(ctx, h.inner, name)
		if err != nil {
			h.violate("keyring %q does not load: %v", name, err)
			return
		}
		var ids []string
		if kr == nil {
			if h.instance[name] != 0 {
				for _, id := range h.lastIDs[name] {
					h.dead[id] = "deleted with its keyring"
				}
			}
			h.instance[name] = 0
		} else {
			newInstance := h.instance[name] == 0
			if newInstance {
				h.instances++
				h.instance[name] = h.instances
			}
			seen := map[time.Time]bool{}
			for _, k := range kr.Keys {
				id := k.ID()
				ids = append(ids, id)
				if why, ok := h.dead[id]; ok {
					h.violate("storage holds key %s of %q again, %s", id[:8], name, why)
				}
				if _, ok := h.origin[id]; !ok {
					exempt := k.NotBefore.Sub(k.PublishAt) < 2*time.Second && (step == "rotate now" || newInstance)
					h.origin[id] = keyOrigin{instance: h.instance[name], step: step, exempt: exempt}
				}
				if seen[k.NotBefore] {
					h.violate("storage holds two keys of %q with not_before %s", name, k.NotBefore.Format(time.RFC3339))
				}
				seen[k.NotBefore] = true
			}
			if len(kr.Keys) > maxKeysPerKeyring {
				h.violate("storage holds %d keys of %q", len(kr.Keys), name)
			}
			for i := 1; i < len(kr.Keys); i++ {
				if p := kr.Keys[i-1]; p.EncryptUntil.After(now) && !p.EncryptUntil.Equal(kr.Keys[i].NotBefore) {
					h.violate("stored schedule of %q: key %s encrypts until %s, the next key starts at %s", name, p.ID()[:8], p.EncryptUntil.Format(time.RFC3339), kr.Keys[i].NotBefore.Format(time.RFC3339))
				}
			}
			live := map[string]bool{}
			for _, id := range ids {
				live[id] = true
			}
			for _, id := range h.lastIDs[name] {
				if !live[id] {
					h.dead[id] = "destroyed (expired, purged or discarded) before"
				}
			}
		}
		h.lastIDs[name] = ids
		if cached, _ := h.active.cache.get(name); cached != nil {
			if kr == nil {
				h.violate("the active node caches keyring %q, which storage no longer holds", name)
			} else if !h.sameAsStored(cached, name) {
				h.violate("the active node's cached keyring %q differs from storage", name)
			}
		}
	}
	if cfg, _ := h.active.cfgCache.get(); cfg != nil {
		stored, _ := loadConfig(ctx, h.inner)
		if cfg.MaxKeyLifetime != stored.MaxKeyLifetime || cfg.readTTLCap() != stored.readTTLCap() {
			h.violate("the active node's cached config %+v differs from storage %+v", *cfg, *stored)
		}
	}
}

// sameAsStored reports whether a cached keyring encodes to the bytes storage
// holds.
func (h *history) sameAsStored(cached *keyring, name string) bool {
	entry, _ := h.inner.Get(context.Background(), keyringPath(name))
	if entry == nil {
		return false
	}
	c := *cached
	c.SchemaVersion = keyringSchemaVersion
	enc, err := logical.StorageEntryJSON(entry.Key, &c)
	return err == nil && string(enc.Value) == string(entry.Value)
}

// do runs one operation.
func (h *history) do(op histOp) {
	now := h.clock.Now()
	switch op.Kind {
	case "wait":
		h.advance(now.Add(op.Wait))
		return
	case "outage":
		h.outageUntil = now.Add(op.Wait)
		return
	case "to-activation":
		kr, _ := loadKeyring(context.Background(), h.inner, op.Name)
		if kr == nil {
			return
		}
		for _, k := range kr.Keys {
			if t := k.NotBefore.Add(op.Wait); k.NotBefore.After(now) && t.After(now) && t.Sub(now) <= *historyLongWait {
				h.advance(t)
				return
			}
		}
		return
	case "leader":
		// A new active node over the same storage; the old one is gone.
		h.instances++
		h.active = h.newNode(h.store, logical.TestSystemView(), 3)
		if err := h.active.Initialize(context.Background(), &logical.InitializationRequest{Storage: h.store}); err != nil {
			h.violate("initialize: %v", err)
		}
		h.observeStorage("leader")
		return
	}
	h.store.fault, h.store.writesSeen = op.Fault, 0
	if op.Fault != "" {
		h.faults++
	}
	var resp *logical.Response
	var err error
	switch op.Kind {
	case "create", "settings": // a write to keys/:name creates or updates, as in Vault
		resp, err = h.request(h.active, h.store, logical.UpdateOperation, "keys/"+op.Name, op.Data)
	case "config":
		resp, err = h.request(h.active, h.store, logical.UpdateOperation, "config", op.Data)
	case "rotate":
		resp, err = h.request(h.active, h.store, logical.UpdateOperation, "keys/"+op.Name+"/rotate", op.Data)
	case "delete":
		resp, err = h.request(h.active, h.store, logical.DeleteOperation, "keys/"+op.Name, nil)
	}
	h.store.fault = ""
	_ = resp
	if err != nil && op.Fault == "" {
		var coded logical.HTTPCodedError
		if !errors.As(err, &coded) {
			h.violate("%s failed without an injected fault: %v", op, err)
		}
	}
	step := op.Kind
	if op.Kind == "rotate" && op.Data["mode"] == rotateNow {
		step = "rotate now"
	}
	h.observed = -1 // after an operation, always compare caches and storage
	h.observeStorage(step)
}

// run plays the history and returns the first violation, or "".
func (h *history) run() string {
	for i, op := range h.ops {
		h.step, h.stepName = i, op.String()
		h.do(op)
		if h.violation != "" {
			return h.violation
		}
	}
	// Let the readers catch up with the last operation.
	h.advance(h.clock.Now().Add(2 * time.Hour))
	h.checkLua()
	return h.violation
}

// shrink removes operations from a failing history while it still fails,
// within a bounded number of replays.
func shrink(t testing.TB, seed uint64, ops []histOp) ([]histOp, string) {
	fails := func(ops []histOp) string { return newHistory(t, seed, ops).run() }
	last := fails(ops)
	budget := 400
	for chunk := max(len(ops)/2, 1); chunk >= 1 && budget > 0; chunk /= 2 {
		for i := 0; i+chunk <= len(ops) && budget > 0; {
			try := append(slices.Clone(ops[:i]), ops[i+chunk:]...)
			budget--
			if v := fails(try); v != "" {
				ops, last = try, v
				continue
			}
			i += chunk
		}
	}
	return ops, last
}

// TestScheduleInvariantsOverHistories runs generated histories of the real
// backend and checks, after every step and every served window:
//   - every served window is accepted by every reader (windowDecoders);
//     not_before values are unique; exactly one key encrypts at each instant
//     from the read to the end of the schedule;
//   - every key, except the first of a keyring and a mode=now key, is held by
//     every reader following ttl before it encrypts;
//   - no key is served at or after its not_after, none decrypts longer than
//     max_key_lifetime after it activates, no window or keyring holds more
//     than 256 keys;
//   - a destroyed or deleted key is never served or stored again; the
//     active node's caches agree with storage after every operation, failed
//     writes included.
func TestScheduleInvariantsOverHistories(t *testing.T) {
	total, length := *historyOps, *historyLen
	if testing.Short() {
		total = min(total, 2000)
	}
	// Under -race (make test) the occasional long waits and the jumps to an
	// activation are bounded at 10m unless set, so 20,000 operations take
	// about a minute of CPU; make stress-engine runs 30m (HISTORY_LONGWAIT).
	if raceEnabled && !flagSet("history.longwait") {
		*historyLongWait = 10 * time.Minute
	}
	seeds := []uint64{}
	if *historySeed != 0 {
		seeds = append(seeds, *historySeed)
	} else {
		base := uint64(time.Now().UnixNano())
		for i := 0; i*length < total; i++ {
			seeds = append(seeds, base+uint64(i)*7919)
		}
	}
	historyLua = &luaChecker{luajit: findLuaJIT(), dir: t.TempDir()}
	defer func() { historyLua = nil }()
	deadline := time.Now().Add(*historyTimeout) // bound on the loop, far above its expected run time
	var (
		mu                        sync.Mutex
		ops, reads, ticks, faults int
		luaWindows                int
		simulated                 time.Duration
		failure                   string
		next                      int
	)
	start := time.Now()
	var wg sync.WaitGroup
	for range max(*historyWorkers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if failure != "" || next == len(seeds) {
					mu.Unlock()
					return
				}
				if time.Now().After(deadline) {
					failure = fmt.Sprintf("stopped at the time bound (-history.timeout %s) after %d operations", *historyTimeout, ops)
					mu.Unlock()
					return
				}
				seed := seeds[next]
				next++
				mu.Unlock()

				hist := genHistory(rand.New(rand.NewPCG(seed, 18)), length)
				h := newHistory(t, seed, hist)
				if v := h.run(); v != "" {
					small, v2 := shrink(t, seed, hist[:min(h.step+1, len(hist))])
					lines := make([]string, len(small))
					for i, op := range small {
						lines[i] = fmt.Sprintf("  %3d  %s", i, op)
					}
					mu.Lock()
					if failure == "" {
						failure = fmt.Sprintf("seed %d: %s\nshrunk to %d operations (replay with -run TestScheduleInvariantsOverHistories -history.seed=%d for the full history; keep the shrunk one as a regression test by pasting these lines into historyRegressions in history_regress_test.go with seed %d):\n%s\nshrunk history fails with: %s",
							seed, v, len(small), seed, seed, strings.Join(lines, "\n"), v2)
					}
					mu.Unlock()
					return
				}
				mu.Lock()
				ops += len(hist)
				reads += h.reads
				ticks += h.ticks
				faults += h.faults
				luaWindows += len(h.luaWindows)
				simulated += h.clock.Now().Sub(testStart)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failure != "" {
		t.Fatal(failure)
	}
	t.Logf("%d histories, %d operations (%d with an injected fault), %d reads, %d periodic ticks, %.0f simulated days (long waits up to %s), in %s",
		len(seeds), ops, faults, reads, ticks, simulated.Hours()/24, *historyLongWait, time.Since(start).Round(time.Millisecond))
	if historyLua.luajit == "" {
		t.Skip("every reader but one checked; the nginx Lua module's (resty.ticketkeys) was not: LuaJIT is not installed (apt-get install luajit2, scripts/debian-packages.txt)")
	}
	t.Logf("resty.ticketkeys (LuaJIT %s) parsed %d distinct nginx windows and picked the encrypting key at their sample instants", historyLua.luajit, luaWindows)
}

// flagSet reports whether the named flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
