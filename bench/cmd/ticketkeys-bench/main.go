// Command ticketkeys-bench is the harness behind `make bench`: it runs the
// cluster-resumption scenarios, the hook-cost comparison, the ticket
// decryption benchmark, the Vault read-cost comparison, the time to first
// byte, the fleet scale and the nginx rows (-only selects parts), and writes
// benchmark.md, benchmark.json and resumption.png into the output directory.
// docs/benchmark.md explains the report.
//
// Usage:
//
//	ticketkeys-bench [-out results] [-quick] [flags]
//	ticketkeys-bench serve [flags]   (internal: the server-node child process)
//
// Vault is started through internal/vaulttest, which needs the pinned Vault
// binary (VAULT_BIN or scripts/vault-build.sh's cache) and builds the plugin
// with `go build`, so run it from the repository. -no-vault skips the parts
// that need Vault.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ticketkeys "github.com/ticketkeys/vault-plugin-secrets-ticketkeys"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bench"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(bench.ServeMain(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

// options are the command-line flags.
type options struct {
	out             string
	quick           bool
	noVault         bool
	budget          time.Duration
	users           int
	warmup          time.Duration
	concurrency     int
	interval        time.Duration
	baseline        time.Duration
	rotating        time.Duration
	rotationPeriod  time.Duration
	switchGap       time.Duration
	retain          time.Duration
	maxConns        int
	tlsList         string
	certList        string
	scenarioList    string
	hookUsers       int
	hookConcurrency int
	hookSegment     time.Duration
	hookRounds      int
	hookRetain      time.Duration
	readConcurrency int
	readSegment     time.Duration
	readRounds      int
	readFormat      string
	maxReads        int
	decryptWindows  string
	decryptTime     string
	seed            int64
	fromJSON        string
	only            string
	kvPlugin        string
	readProfile     time.Duration
	parts           map[string]bool
	rttList         string
	rtts            []time.Duration
	rttUsers        int
	rttConcurrency  int
	rttWarmup       time.Duration
	rttDuration     time.Duration
	fleetNodes      int
	fleetPeriod     time.Duration
	fleetRetain     time.Duration
	fleetDuration   time.Duration
	fleetStart      int
	fleetKinds      string
	nginxOpenResty  string
	nginxWorkers    int
	nginxWarmup     time.Duration
	nginxDuration   time.Duration
	nginxRotate     time.Duration
	nginxWST        time.Duration
	nginxLong       int
	nginxRTT        bool
	nginxRTTDur     time.Duration
}

// allParts are the parts of a run, in order; -only selects some.
var allParts = []string{"cluster", "hook", "reads", "decrypt", "rtt", "fleet", "nginx"}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("ticketkeys-bench", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "results", "output directory for benchmark.md, benchmark.json, resumption.png and logs/")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: short durations, one round each, windows 1 and 14 only")
	fs.BoolVar(&o.noVault, "no-vault", false, "skip everything that needs Vault (scenario 4, hook cost, read cost, ticketkeys time to first byte, fleet)")
	fs.DurationVar(&o.budget, "budget", 14*time.Minute+30*time.Second, "wall-time budget of the whole run; steps that no longer fit are skipped and listed in the notes")
	fs.IntVar(&o.users, "users", 200, "simulated users, each with its own session cache")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "uncounted load before each measured run (gives the users their first tickets)")
	fs.IntVar(&o.concurrency, "concurrency", 4, "connections in flight")
	fs.DurationVar(&o.interval, "interval", 10*time.Millisecond, "pause between two connections of one worker")
	fs.DurationVar(&o.baseline, "baseline", 8*time.Second, "load duration of the runs without rotation (single, own, static)")
	fs.DurationVar(&o.rotating, "rotating", 24*time.Second, "measured load of the rotating runs (switch, ticketkeys); end it a few seconds after a rotation so that every rotation's misses are counted")
	fs.DurationVar(&o.rotationPeriod, "rotation-period", 5*time.Second, "rotation period of scenarios 3 and 4 (the engine's minimum is 5s)")
	fs.DurationVar(&o.switchGap, "switch-gap", time.Second, "scenario 3: delay between two nodes' switches")
	fs.DurationVar(&o.retain, "retain", 30*time.Second, "scenario 4: the keyring's retain")
	fs.IntVar(&o.maxConns, "max-conns", 200000, "bound on the connections of one run")
	fs.StringVar(&o.tlsList, "tls", "1.3,1.2", "TLS versions, comma-separated (1.2, 1.3)")
	fs.StringVar(&o.certList, "certs", "rsa,ecdsa", "certificate kinds, comma-separated (rsa, ecdsa)")
	fs.StringVar(&o.scenarioList, "scenarios", "single,own,static,switch,ticketkeys", "scenarios, comma-separated")
	fs.IntVar(&o.hookUsers, "hook-users", 8, "hook cost: simulated users")
	fs.IntVar(&o.hookConcurrency, "hook-concurrency", 4, "hook cost: connections in flight (no pause)")
	fs.DurationVar(&o.hookSegment, "hook-segment", 3*time.Second, "hook cost: length of one run of each configuration")
	fs.IntVar(&o.hookRounds, "hook-rounds", 2, "hook cost: alternating rounds")
	fs.DurationVar(&o.hookRetain, "hook-retain", 60*time.Second, "hook cost: the keyring's retain (60s at a 5s period gives a 14-key window)")
	fs.IntVar(&o.readConcurrency, "read-concurrency", 8, "read cost: concurrent readers")
	fs.DurationVar(&o.readSegment, "read-segment", 4*time.Second, "read cost: length of one round per path")
	fs.IntVar(&o.readRounds, "read-rounds", 2, "read cost: alternating rounds")
	fs.StringVar(&o.readFormat, "read-format", "nginx", "read cost: format of the keyring read")
	fs.IntVar(&o.maxReads, "max-reads", 200000, "read cost: bound on the reads of one round")
	fs.StringVar(&o.decryptWindows, "decrypt-windows", "1-14", "decryption benchmark: window sizes (N-M or comma-separated)")
	fs.StringVar(&o.decryptTime, "decrypt-benchtime", "500ms", "decryption benchmark: -test.benchtime per window size")
	fs.Int64Var(&o.seed, "seed", 1, "seed of the load's choices of users and nodes")
	fs.StringVar(&o.fromJSON, "from-json", "", "measure nothing: rewrite benchmark.md and resumption.png in -out from this benchmark.json")
	fs.StringVar(&o.only, "only", strings.Join(allParts, ","), "parts to run, comma-separated: "+strings.Join(allParts, ", "))
	fs.StringVar(&o.kvPlugin, "kv-plugin", os.Getenv("KV_PLUGIN_BIN"), "read cost: HashiCorp's KV engine built as an external plugin (tools/kvplugin/build.sh; default $KV_PLUGIN_BIN); empty skips that comparison")
	fs.DurationVar(&o.readProfile, "read-profile", 4*time.Second, "read cost: length of the Vault CPU profiles (sys/pprof) taken during keyring and KV reads; 0 skips them")
	fs.IntVar(&o.fleetNodes, "fleet-nodes", 1000, "fleet scale: simulated nodes (each with its own token)")
	fs.DurationVar(&o.fleetPeriod, "fleet-period", 5*time.Second, "fleet scale: the keyring's rotation period (short, so that the run sees several rotations)")
	fs.DurationVar(&o.fleetRetain, "fleet-retain", 60*time.Second, "fleet scale: the keyring's retain (60s at a 5s period gives the 14-key window of the defaults, 1h and 12h)")
	fs.DurationVar(&o.fleetDuration, "fleet-duration", 21*time.Second, "fleet scale: measured time per kind of node, after the fleet has started")
	fs.IntVar(&o.fleetStart, "fleet-start-concurrency", 32, "fleet scale: first reads in flight while the fleet starts")
	fs.StringVar(&o.fleetKinds, "fleet-kinds", "sources,agents", "fleet scale: kinds of node, comma-separated (sources, agents)")
	fs.StringVar(&o.rttList, "rtts", "50ms,150ms", "time to first byte: round-trip times the latency proxies add, comma-separated")
	fs.IntVar(&o.rttUsers, "rtt-users", 64, "time to first byte: simulated users")
	fs.IntVar(&o.rttConcurrency, "rtt-concurrency", 16, "time to first byte: connections in flight")
	fs.DurationVar(&o.rttWarmup, "rtt-warmup", 2*time.Second, "time to first byte: uncounted load before each measured RTT")
	fs.DurationVar(&o.rttDuration, "rtt-duration", 6*time.Second, "time to first byte: measured load per scenario, TLS version and RTT")
	fs.StringVar(&o.nginxOpenResty, "nginx-openresty", "1.27.1", "nginx: the OpenResty line of the third node (nodes 1 and 2 run Debian's nginx); empty runs three Debian nodes")
	fs.IntVar(&o.nginxWorkers, "nginx-workers", 1, "nginx: worker_processes per node")
	fs.DurationVar(&o.nginxWarmup, "nginx-warmup", time.Second, "nginx: uncounted load before each resumption run")
	fs.DurationVar(&o.nginxRTTDur, "nginx-rtt-duration", 3*time.Second, "nginx: measured time-to-first-byte load per set-up, TLS version and RTT")
	fs.DurationVar(&o.nginxDuration, "nginx-duration", 9500*time.Millisecond, "nginx: measured load of each resumption run (set-up x TLS version)")
	fs.DurationVar(&o.nginxRotate, "nginx-rotate-every", 3*time.Second, "nginx: rotation period of the Lua and reload set-ups")
	fs.DurationVar(&o.nginxWST, "nginx-shutdown-timeout", 10*time.Second, "nginx: the worker_shutdown_timeout of the second long-lived reload run (the first leaves it unset); they are watched for this + 2s")
	fs.IntVar(&o.nginxLong, "nginx-long", 8, "nginx: keep-alive connections and streams held open per node across a rotation")
	fs.BoolVar(&o.nginxRTT, "nginx-rtt", true, "nginx: measure the time to first byte at -rtts too")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("arguments: want none besides flags, got %q", fs.Args())
	}
	if o.quick {
		o.warmup, o.baseline, o.rotating = time.Second, 3*time.Second, 14*time.Second
		o.hookSegment, o.hookRounds, o.hookRetain = 2*time.Second, 1, 20*time.Second
		o.readSegment, o.readRounds, o.readProfile = time.Second, 1, 0
		o.decryptWindows, o.decryptTime = "1,14", "100ms"
		o.rttList, o.rttWarmup, o.rttDuration = "50ms", time.Second, 2*time.Second
		o.fleetNodes, o.fleetDuration, o.fleetRetain = 100, 6*time.Second, 20*time.Second
		o.nginxWarmup, o.nginxDuration, o.nginxRotate, o.nginxWST, o.nginxLong, o.nginxRTTDur = time.Second, 5*time.Second, 2*time.Second, 3*time.Second, 4, 2*time.Second
	}
	if o.nginxWorkers < 1 || o.nginxWorkers > 8 || o.nginxLong < 1 || o.nginxLong > 100 || o.nginxRotate < time.Second || o.nginxWST < time.Second {
		return nil, fmt.Errorf("nginx-workers, nginx-long, nginx-rotate-every, nginx-shutdown-timeout: want 1..8, 1..100, >= 1s, >= 1s, got %d, %d, %s, %s",
			o.nginxWorkers, o.nginxLong, o.nginxRotate, o.nginxWST)
	}
	if o.fleetNodes < 1 || o.fleetNodes > 20000 || o.fleetStart < 1 {
		return nil, fmt.Errorf("fleet-nodes, fleet-start-concurrency: must be 1..20000 and >= 1, got %d and %d", o.fleetNodes, o.fleetStart)
	}
	if o.fleetPeriod < 5*time.Second || o.fleetPeriod%time.Second != 0 || o.fleetRetain%time.Second != 0 {
		return nil, fmt.Errorf("fleet-period, fleet-retain: must be whole seconds, the period >= 5s, got %s and %s", o.fleetPeriod, o.fleetRetain)
	}
	for _, k := range strings.Split(o.fleetKinds, ",") {
		if k = strings.TrimSpace(k); k != bench.FleetSources && k != bench.FleetAgents {
			return nil, fmt.Errorf("fleet-kinds: want sources or agents, got %q in %q", k, o.fleetKinds)
		}
	}
	o.parts = map[string]bool{}
	for _, f := range strings.Split(o.only, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(allParts, f) {
			return nil, fmt.Errorf("only: want parts among %s, got %q in %q", strings.Join(allParts, ", "), f, o.only)
		}
		o.parts[f] = true
	}
	for _, f := range strings.Split(o.rttList, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 || d > 2*time.Second {
			return nil, fmt.Errorf("rtts: want durations in (0, 2s], got %q in %q", f, o.rttList)
		}
		o.rtts = append(o.rtts, d)
	}
	if o.rttUsers < o.rttConcurrency || o.rttConcurrency < 1 {
		return nil, fmt.Errorf("rtt-users, rtt-concurrency: must be rtt-users >= rtt-concurrency >= 1, got %d and %d", o.rttUsers, o.rttConcurrency)
	}
	if o.rotationPeriod < 5*time.Second || o.rotationPeriod%time.Second != 0 {
		return nil, fmt.Errorf("rotation-period: must be whole seconds >= 5s (the engine's minimum), got %s", o.rotationPeriod)
	}
	if o.users < 1 || o.concurrency < 1 || o.hookUsers < 1 || o.hookConcurrency < 1 || o.readConcurrency < 1 {
		return nil, fmt.Errorf("users, concurrency, hook-users, hook-concurrency, read-concurrency: must be >= 1, got %d, %d, %d, %d, %d",
			o.users, o.concurrency, o.hookUsers, o.hookConcurrency, o.readConcurrency)
	}
	return o, nil
}

// parseWindows parses "1-14" or "1,2,14".
func parseWindows(s string) ([]int, error) {
	if a, b, ok := strings.Cut(s, "-"); ok {
		lo, err1 := strconv.Atoi(strings.TrimSpace(a))
		hi, err2 := strconv.Atoi(strings.TrimSpace(b))
		if err1 != nil || err2 != nil || lo < 1 || hi < lo || hi > 64 {
			return nil, fmt.Errorf("decrypt-windows: want N-M with 1 <= N <= M <= 64, got %q", s)
		}
		var out []int
		for i := lo; i <= hi; i++ {
			out = append(out, i)
		}
		return out, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 64 {
			return nil, fmt.Errorf("decrypt-windows: want sizes 1..64, got %q in %q", f, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseTLS(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "1.2":
			out = append(out, tls.VersionTLS12)
		case "1.3":
			out = append(out, tls.VersionTLS13)
		default:
			return nil, fmt.Errorf("tls: want 1.2 or 1.3, got %q in %q", f, s)
		}
	}
	return out, nil
}

func parseScenarios(s string) ([]bench.Scenario, error) {
	var out []bench.Scenario
	for _, f := range strings.Split(s, ",") {
		sc, ok := bench.ScenarioByID(strings.TrimSpace(f))
		if !ok {
			return nil, fmt.Errorf("scenarios: want single, own, static, switch or ticketkeys, got %q in %q", f, s)
		}
		out = append(out, sc)
	}
	return out, nil
}

// harness holds the state of one run.
type harness struct {
	o        *options
	tb       *bench.TB
	rep      *bench.Report
	deadline time.Time
	failed   bool
}

func (h *harness) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.rep.Notes = append(h.rep.Notes, msg)
	fmt.Fprintln(os.Stderr, "bench: note:", msg)
}

func (h *harness) fail(format string, args ...any) {
	h.failed = true
	h.note(format, args...)
}

// fits reports whether a step that needs d still fits in the budget; if
// not it records that the step was skipped.
func (h *harness) fits(step string, d time.Duration) bool {
	if left := time.Until(h.deadline); left < d {
		h.note("skipped %s: needs about %s, %s of the budget left", step, d.Round(time.Second), left.Round(time.Second))
		return false
	}
	return true
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(args []string) int {
	o, err := parseFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
		return 2
	}
	tlsVersions, err := parseTLS(o.tlsList)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
		return 2
	}
	scenarios, err := parseScenarios(o.scenarioList)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
		return 2
	}
	windows, err := parseWindows(o.decryptWindows)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
		return 2
	}
	if o.fromJSON != "" {
		if err := rewrite(o.fromJSON, o.out); err != nil {
			fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
			return 1
		}
		return 0
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench: own executable:", err)
		return 1
	}
	logDir := filepath.Join(o.out, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
		return 1
	}

	// Everything temporary (certificates, Vault's storage, the plugin build)
	// goes under one directory removed at the end.
	tmp, err := os.MkdirTemp("", "ticketkeys-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	os.Setenv("TMPDIR", tmp)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	tb := bench.NewTB(ctx, "bench", os.Stderr)
	defer tb.Close() // stops Vault by PID

	h := &harness{o: o, tb: tb, deadline: start.Add(o.budget), rep: &bench.Report{
		Started:   start,
		Machine:   bench.ReadMachine(),
		LoadStart: bench.LoadAvg(),
		Settings: bench.Settings{
			Users: o.users, Warmup: o.warmup, Concurrency: o.concurrency, Interval: o.interval,
			BaselineDuration: o.baseline, RotationDuration: o.rotating, RotationPeriod: o.rotationPeriod,
			SwitchGap: o.switchGap, Retain: o.retain,
			HookUsers: o.hookUsers, HookConcurrency: o.hookConcurrency, HookSegment: o.hookSegment, HookRounds: o.hookRounds, HookRetain: o.hookRetain,
			ReadConcurrency: o.readConcurrency, ReadSegment: o.readSegment, ReadRounds: o.readRounds, ReadFormat: o.readFormat,
			VaultVersion: vaulttest.VaultVersion, PluginVersion: ticketkeys.Version, Budget: o.budget,
		},
		Notes: []string{},
	}}
	progress("start: load average %s, budget %s, output %s", h.rep.LoadStart, o.budget, o.out)

	certs, err := makeCerts(tb, o.certList)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
		return 1
	}

	rn := &bench.Runner{Exe: exe, ServeArgs: []string{"serve"}, LogDir: logDir}
	var vault *bench.Vault
	const hookKeyring = "bench-hook"
	const fleetKeyring = "bench-fleet"
	needVault := o.parts["cluster"] || o.parts["hook"] || o.parts["reads"] || o.parts["rtt"] || o.parts["fleet"]
	if !needVault {
		progress("no selected part needs Vault: not starting it")
	} else if o.noVault {
		h.note("-no-vault: scenario 4, the hook cost, the Vault read cost, the time to first byte of ticketkeys and the fleet were not measured")
	} else {
		progress("starting Vault %s with the plugin (internal/vaulttest)", vaulttest.VaultVersion)
		vault, err = bench.StartVault(tb)
		if err != nil {
			h.fail("Vault could not be started, so scenario 4, the hook cost and the read cost were not measured: %v", err)
		} else {
			rn.VaultAddr, rn.VaultToken = vault.Server.Addr, vault.ReaderToken
			rn.Rotations = vault.Activations
			// Created first, so that its window has filled up (current,
			// next and retain/period previous keys) by the time the hook
			// cost is measured at the end.
			if err := vault.CreateKeyring(ctx, hookKeyring, o.rotationPeriod, o.hookRetain); err != nil {
				h.fail("hook keyring: %v", err)
			}
			// Likewise the fleet's keyring: a full window, as in production.
			if o.parts["fleet"] {
				if err := vault.CreateKeyring(ctx, fleetKeyring, o.fleetPeriod, o.fleetRetain); err != nil {
					h.fail("fleet keyring: %v", err)
				}
			}
			progress("Vault ready at %s", vault.Server.Addr)
		}
	}

	// Cluster scenarios.
	for _, v := range tlsVersions {
		if !o.parts["cluster"] {
			break
		}
		for _, c := range certs {
			for _, sc := range scenarios {
				if ctx.Err() != nil {
					break
				}
				dur := o.baseline
				if sc.Rotates {
					dur = o.rotating
				}
				name := fmt.Sprintf("TLS %s %s %s", bench.TLSName(v), c.Kind, sc.ID)
				if sc.Mode == bench.ModeTicketkeys && vault == nil {
					continue
				}
				if !h.fits(name, o.warmup+dur+5*time.Second) {
					continue
				}
				spec := bench.RunSpec{Scenario: sc, TLS: v, Cert: c, Warmup: o.warmup, Duration: dur, RotateEvery: o.rotationPeriod,
					Load: bench.Load{Users: o.users, Concurrency: o.concurrency, Interval: o.interval, MaxConnections: o.maxConns},
					Seed: o.seed}
				if sc.Mode == bench.ModeTicketkeys {
					spec.Keyring = strings.ToLower(fmt.Sprintf("bench-tk-tls%s-%s", strings.ReplaceAll(bench.TLSName(v), ".", ""), c.Kind))
					if err := vault.CreateKeyring(ctx, spec.Keyring, o.rotationPeriod, o.retain); err != nil {
						h.fail("%s: %v", name, err)
						continue
					}
				}
				progress("run %s (%s warm-up, %s measured)", name, o.warmup, dur)
				res, err := rn.Run(ctx, spec)
				if err != nil {
					res.Err = err.Error()
					h.fail("%s: %v", name, err)
				}
				progress("  %s: conns=%d offered=%d resumed=%s errors=%d cpu/conn=%sms rotations=%d",
					name, res.Connections, res.Offered, fmtShare(res.ResumeShare()), res.HandshakeFailures+res.RequestFailures,
					fmtMS(res.CPUPerConn()), len(res.Rotations))
				h.rep.Runs = append(h.rep.Runs, res)
			}
		}
	}
	bench.SetRelSingle(h.rep.Runs)

	// Hook cost: one node, plain single key vs the client hook.
	if vault != nil && ctx.Err() == nil && o.parts["hook"] {
		hookCert := certs[len(certs)-1] // ECDSA when both are measured: resumed handshakes do not use the certificate
		for _, v := range tlsVersions {
			name := "hook cost TLS " + bench.TLSName(v)
			need := time.Duration(2*o.hookRounds)*(o.hookSegment+3*time.Second) + 5*time.Second
			if !h.fits(name, need) {
				continue
			}
			progress("%s (%d rounds of %s per configuration)", name, o.hookRounds, o.hookSegment)
			hc, err := rn.RunHookCost(ctx, bench.HookSpec{TLS: v, Cert: hookCert, Keyring: hookKeyring,
				Load:   bench.Load{Users: o.hookUsers, Concurrency: o.hookConcurrency, MaxConnections: o.maxConns},
				Warmup: time.Second, Segment: o.hookSegment, Rounds: o.hookRounds, Seed: o.seed})
			if err != nil {
				h.fail("%s: %v", name, err)
			}
			progress("  %s: plain %sµs/conn, hook %sµs/conn (%d keys), ratio %.2f", name,
				fmtUS(hc.Plain.CPUPerConn()), fmtUS(hc.Hook.CPUPerConn()), hc.Hook.WindowKeys, hc.Ratio())
			h.rep.Hook = append(h.rep.Hook, hc)
		}
	}

	// Vault read cost: keyring vs KV v2 of the same size.
	if vault != nil && ctx.Err() == nil && o.parts["reads"] {
		need := time.Duration(4*o.readRounds)*o.readSegment + 2*o.readProfile + 8*time.Second
		if h.fits("Vault read cost", need) {
			progress("Vault read cost (%d readers, %d rounds of %s per path)", o.readConcurrency, o.readRounds, o.readSegment)
			if rr, err := h.readCost(ctx, vault, hookKeyring); err != nil {
				h.fail("Vault read cost: %v", err)
			} else {
				h.rep.Reads = rr
				progress("  keys: %.0f reads/s p99 %sms; kv: %.0f reads/s p99 %sms", rr.Keys.PerSecond(), fmtMS(rr.Keys.P99), rr.KV.PerSecond(), fmtMS(rr.KV.P99))
			}
		}
	}

	// Ticket decryption by window size.
	if ctx.Err() == nil && o.parts["decrypt"] {
		testing.Init()
		if err := flag.CommandLine.Set("test.benchtime", o.decryptTime); err != nil {
			h.fail("decrypt-benchtime %q: %v", o.decryptTime, err)
		}
		for _, n := range windows {
			if !h.fits(fmt.Sprintf("decryption benchmark window=%d", n), 3*time.Second) || ctx.Err() != nil {
				break
			}
			var f *bench.DecryptFixture
			if err := tb.Do(func() { f, err = bench.NewDecryptFixture(tb, n) }); err != nil || f == nil {
				h.fail("decryption benchmark window=%d: %v", n, err)
				break
			}
			r := testing.Benchmark(func(b *testing.B) { bench.BenchmarkDecrypt(b, f) })
			if r.N == 0 {
				h.fail("decryption benchmark window=%d: the benchmark failed (N=0)", n)
				break
			}
			h.rep.Decrypt = append(h.rep.Decrypt, bench.DecryptResult{Window: n, N: r.N,
				NsPerOp: float64(r.T.Nanoseconds()) / float64(r.N), AllocsPerOp: r.AllocsPerOp()})
		}
		if len(h.rep.Decrypt) > 0 {
			progress("decryption benchmark: window=%d %.0f ns/op ... window=%d %.0f ns/op",
				h.rep.Decrypt[0].Window, h.rep.Decrypt[0].NsPerOp, h.rep.Decrypt[len(h.rep.Decrypt)-1].Window, h.rep.Decrypt[len(h.rep.Decrypt)-1].NsPerOp)
		}
	}
	// Time to first byte behind latency proxies.
	if ctx.Err() == nil && o.parts["rtt"] {
		h.measureRTT(ctx, rn, vault, tlsVersions, certs[len(certs)-1])
	}

	// Fleet scale: many nodes against the one Vault.
	if vault != nil && ctx.Err() == nil && o.parts["fleet"] {
		h.measureFleet(ctx, vault, fleetKeyring, logDir)
	}

	// nginx nodes: own keys, the Lua module, rotation by reload.
	if ctx.Err() == nil && o.parts["nginx"] {
		h.measureNginx(ctx, tlsVersions, certs[len(certs)-1], logDir)
	}

	if ctx.Err() != nil {
		h.fail("interrupted (%v): the report holds what was measured before", context.Cause(ctx))
	}

	h.rep.LoadEnd = bench.LoadAvg()
	h.rep.Finished = time.Now()
	if err := writeOutputs(h.rep, o.out); err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-bench:", err)
		return 1
	}
	progress("done in %s: %s", time.Since(start).Round(time.Second), filepath.Join(o.out, "benchmark.md"))
	if h.failed {
		return 1
	}
	return 0
}

// measureRTT runs the time-to-first-byte measurement: own keys and
// ticketkeys (3 nodes), each TLS version, every RTT.
func (h *harness) measureRTT(ctx context.Context, rn *bench.Runner, vault *bench.Vault, tlsVersions []uint16, cert bench.CertSet) {
	o := h.o
	h.rep.RTTSettings = bench.RTTSettings{RTTs: o.rtts, Users: o.rttUsers, Concurrency: o.rttConcurrency,
		Warmup: o.rttWarmup, Duration: o.rttDuration, Cert: cert.Kind}
	for _, v := range tlsVersions {
		for _, id := range []string{"own", "ticketkeys"} {
			sc, _ := bench.ScenarioByID(id)
			name := fmt.Sprintf("time to first byte TLS %s %s", bench.TLSName(v), id)
			if ctx.Err() != nil {
				return
			}
			if sc.Mode == bench.ModeTicketkeys && vault == nil {
				continue
			}
			need := 3 * time.Second
			for _, rtt := range o.rtts {
				need += bench.RTTWarmup(o.rttWarmup, rtt, o.rttUsers, o.rttConcurrency) + o.rttDuration + time.Second
			}
			if !h.fits(name, need) {
				continue
			}
			spec := bench.RTTSpec{Scenario: sc, TLS: v, Cert: cert, RTTs: o.rtts, Users: o.rttUsers, Concurrency: o.rttConcurrency,
				Warmup: o.rttWarmup, Duration: o.rttDuration, MaxConnections: o.maxConns, Seed: o.seed}
			if sc.Mode == bench.ModeTicketkeys {
				spec.Keyring = "bench-rtt-tls" + strings.ReplaceAll(bench.TLSName(v), ".", "")
				if err := vault.CreateKeyring(ctx, spec.Keyring, o.rotationPeriod, o.retain); err != nil {
					h.fail("%s: %v", name, err)
					continue
				}
			}
			progress("%s (RTT %v, at least %s warm-up + %s each)", name, o.rtts, o.rttWarmup, o.rttDuration)
			res, err := rn.RunRTT(ctx, spec)
			if err != nil {
				h.fail("%s: %v", name, err)
				continue
			}
			for _, r := range res {
				if r.Err != "" {
					h.fail("%s at %s: %s", name, r.RTT, r.Err)
				}
				progress("  RTT %s: conns=%d resumed=%d errors=%d ttfb p50 %sms p99 %sms (full p50 %sms, resumed p50 %sms)", r.RTT,
					r.Connections, r.Resumed, r.Errors, fmtMS(r.All.P50), fmtMS(r.All.P99), fmtMS(r.Full.P50), fmtMS(r.Resumption.P50))
			}
			h.rep.RTT = append(h.rep.RTT, res...)
		}
	}
}

// waitForFullWindow waits until keyring's window holds current, next and
// retain/period previous keys. Keyrings are created at the start, so in a
// full run the parts before have taken longer than that; with -only the
// wait keeps the measured window at the documented size.
func (h *harness) waitForFullWindow(ctx context.Context, v *bench.Vault, keyring string, period, retain time.Duration) error {
	target := bench.ReadTarget{Path: "ticketkeys/keys/" + keyring, Query: url.Values{"format": {"nginx"}}}
	full := int(retain/period) + 2
	for deadline := time.Now().Add(retain + 2*period); ; {
		n, err := bench.WindowSize(ctx, v.Server.Client, target)
		if err != nil {
			return err
		}
		if n >= full || time.Now().After(deadline) || ctx.Err() != nil {
			return nil
		}
		progress("  waiting for keyring %s's window to fill up (%d of %d keys)", keyring, n, full)
		time.Sleep(min(time.Until(deadline), period))
	}
}

// measureFleet creates one token per node and runs each kind of fleet on a
// keyring of its own.
func (h *harness) measureFleet(ctx context.Context, vault *bench.Vault, keyring, logDir string) {
	o := h.o
	kinds := strings.Split(o.fleetKinds, ",")
	h.rep.FleetSettings = bench.FleetSettings{Nodes: o.fleetNodes, RotationPeriod: o.fleetPeriod, Retain: o.fleetRetain,
		Duration: o.fleetDuration, StartConcurrency: o.fleetStart, AgentFormat: "nginx", CPUs: runtime.NumCPU()}
	need := time.Duration(len(kinds))*(o.fleetDuration+12*time.Second) + 5*time.Second
	if !h.fits("fleet scale", need) {
		return
	}
	if err := h.waitForFullWindow(ctx, vault, keyring, o.fleetPeriod, o.fleetRetain); err != nil {
		h.fail("fleet scale: %v", err)
		return
	}
	progress("fleet scale: creating %d node tokens (reader policy and ticketkeys-token-self, without default, as node-approle.sh issues)", o.fleetNodes)
	t0 := time.Now()
	tokens, err := vault.CreateNodeTokens(ctx, o.fleetNodes, 8)
	if err != nil {
		h.fail("fleet scale: %v", err)
		return
	}
	progress("  %d tokens in %s", len(tokens), time.Since(t0).Round(time.Millisecond))
	logf, err := os.OpenFile(filepath.Join(logDir, "fleet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		h.fail("fleet scale: %v", err)
		return
	}
	defer logf.Close()
	for _, kind := range kinds {
		kind = strings.TrimSpace(kind)
		if ctx.Err() != nil {
			return
		}
		progress("fleet scale: %d %s (rotation period %s, %s measured)", len(tokens), kind, o.fleetPeriod, o.fleetDuration)
		res := bench.RunFleet(ctx, bench.FleetSpec{Kind: kind, Addr: vault.Server.Addr, Tokens: tokens, Mount: "ticketkeys", Keyring: keyring,
			AgentFormat: "nginx", StartConcurrency: o.fleetStart, Duration: o.fleetDuration, VaultPID: vault.Server.Proc.PID,
			AuditLog: vault.Server.AuditLogPath, LogWriter: logf})
		if res.Err != "" {
			h.fail("fleet scale %s: %s", kind, res.Err)
		}
		share, keys, ok := res.ActivationShare()
		med, worst, pk, inc := res.Propagation()
		progress("  %s: startup %s, reads %d (errors %d), %.0f/s mean, %d/s peak, cpu/read %sµs, publish->last node %s/%s (%d keys, %d incomplete), held at activation %.4f over %d keys (ok=%t)",
			kind, res.Startup.Round(time.Millisecond), res.Reads, res.ReadErrors, res.AvgReadsPerSecond(), res.PeakReadsPerSecond(),
			fmtUS(res.CPUPerRead()), med.Round(time.Millisecond), worst.Round(time.Millisecond), pk, inc, share, keys, ok)
		if ok && share < 1 {
			h.fail("fleet scale %s: only %.4f of the nodes held the next key at its activation", kind, share)
		}
		h.rep.Fleet = append(h.rep.Fleet, res)
	}
}

// makeCerts makes the certificates (internal/testcert) and writes them for
// the children.
func makeCerts(tb *bench.TB, list string) ([]bench.CertSet, error) {
	var out []bench.CertSet
	for _, f := range strings.Split(list, ",") {
		var kt testcert.KeyType
		switch strings.TrimSpace(f) {
		case "rsa":
			kt = testcert.RSA2048
		case "ecdsa":
			kt = testcert.ECDSAP256
		default:
			return nil, fmt.Errorf("certs: want rsa or ecdsa, got %q in %q", f, list)
		}
		var cs bench.CertSet
		err := tb.Do(func() {
			c := testcert.New(tb, kt)
			certFile, keyFile, _ := c.WritePEM(tb.TempDir())
			cs = bench.CertSet{Kind: kt.String(), CertFile: certFile, KeyFile: keyFile, Pool: c.Pool, ServerName: testcert.ServerName}
		})
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", kt, err)
		}
		out = append(out, cs)
	}
	return out, nil
}

// readCost compares reads of the keyring with reads of a KV v2 secret of
// the same size, on the built-in engine and (when its binary is given) on
// the same engine as an external plugin, in alternating rounds, with Vault's
// CPU and audit bytes per read; then it profiles Vault during keyring reads
// and during KV reads.
func (h *harness) readCost(ctx context.Context, v *bench.Vault, keyring string) (*bench.ReadResult, error) {
	o := h.o
	c, err := bench.NewReadClient(v.Server.Addr, v.ReaderToken, o.readConcurrency)
	if err != nil {
		return nil, err
	}
	keys := bench.ReadTarget{Name: "keyring", Path: "ticketkeys/keys/" + keyring, Query: url.Values{"format": {o.readFormat}}}
	if err := h.waitForFullWindow(ctx, v, keyring, o.rotationPeriod, o.hookRetain); err != nil {
		return nil, err
	}
	size, err := bench.DataSize(ctx, c, keys)
	if err != nil {
		return nil, err
	}
	win, err := bench.WindowSize(ctx, c, keys)
	if err != nil {
		return nil, err
	}
	kvPath, err := bench.WriteKVOfSize(ctx, v.Server.Client, "kv", "bench-same-size", size)
	if err != nil {
		return nil, err
	}
	targets := []bench.ReadTarget{keys, {Name: "kv v2", Path: kvPath}}
	if o.kvPlugin == "" {
		h.note("read cost: no external KV plugin binary (-kv-plugin or KV_PLUGIN_BIN; make bench builds it with tools/kvplugin/build.sh): the plugin hop was not measured")
	} else if err := v.MountExternalKV(ctx, o.kvPlugin); err != nil {
		h.fail("read cost: external KV plugin: %v", err)
	} else {
		// A new KV v2 mount upgrades its storage first and refuses writes
		// for a moment.
		var xPath string
		deadline := time.Now().Add(30 * time.Second)
		for {
			xPath, err = bench.WriteKVOfSize(ctx, v.Server.Client, bench.ExternalKVMount, "bench-same-size", size)
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			h.fail("read cost: external KV plugin: %v", err)
		} else {
			targets = append(targets, bench.ReadTarget{Name: "kv v2 (external plugin)", Path: xPath})
		}
	}
	noDefault, keysNode := -1, -1
	if tok, err := v.CreateNodeTokens(ctx, 1, 1); err != nil {
		h.fail("read cost: %v", err)
	} else if nc, err := bench.NewReadClient(v.Server.Addr, tok[0], o.readConcurrency); err != nil {
		h.fail("read cost: %v", err)
	} else {
		noDefault, keysNode = len(targets), len(targets)+1
		targets = append(targets,
			bench.ReadTarget{Name: "kv v2 (token without default policy)", Path: kvPath, Client: nc},
			bench.ReadTarget{Name: "keyring (node token, without default policy)", Path: keys.Path, Query: keys.Query, Client: nc})
	}
	meters := bench.ReadMeters{VaultPID: v.Server.Proc.PID, AuditLog: v.Server.AuditLogPath}
	out := bench.ReadRounds(ctx, c, targets, o.readConcurrency, o.readRounds, o.readSegment, o.maxReads, meters)
	for i := range out {
		out[i].DataBytes = size
		if out[i].Reads == 0 {
			return nil, fmt.Errorf("no successful read of %s (errors %d: %s)", out[i].Path, out[i].Errors, out[i].FirstError)
		}
	}
	rr := &bench.ReadResult{Keys: out[0], KV: out[1], Concurrency: o.readConcurrency, WindowKeys: win, Audit: v.Server.AuditLogPath != ""}
	for i := 2; i < len(out); i++ {
		switch i {
		case noDefault:
			rr.KVNoDefault = &out[i]
		case keysNode:
			rr.KeysNoDefault = &out[i]
		default:
			rr.KVExternal = &out[i]
		}
	}
	if o.readProfile > 0 && ctx.Err() == nil {
		dir := filepath.Join(o.out, "logs")
		for _, t := range []struct {
			target bench.ReadTarget
			file   string
			into   **bench.VaultProfile
		}{{keys, "vault-cpu-keyring-read.pprof", &rr.KeysProfile}, {targets[1], "vault-cpu-kv-read.pprof", &rr.KVProfile}} {
			vp, err := bench.ProfileVaultDuring(ctx, v.Server.Client, c, t.target, o.readConcurrency, o.readProfile, dir, t.file)
			if err != nil {
				h.note("read cost: Vault CPU profile during %s reads: %v", t.target.Name, err)
				continue
			}
			*t.into = vp
		}
	}
	return rr, nil
}

func writeOutputs(rep *bench.Report, dir string) error {
	var errs []error
	if len(rep.Runs) > 0 {
		f, err := os.Create(filepath.Join(dir, "resumption.png"))
		if err == nil {
			err = bench.WritePlot(f, rep.Runs)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			rep.Notes = append(rep.Notes, "plot: "+err.Error())
			errs = append(errs, err)
		} else {
			rep.PlotFile = "resumption.png"
		}
	}
	if len(rep.RTT) > 0 {
		f, err := os.Create(filepath.Join(dir, "ttfb.png"))
		if err == nil {
			err = bench.WriteTTFBPlot(f, rep.RTT)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			rep.Notes = append(rep.Notes, "time to first byte plot: "+err.Error())
			errs = append(errs, err)
		} else {
			rep.TTFBPlotFile = "ttfb.png"
		}
	}
	for _, w := range []struct {
		name  string
		write func(*os.File) error
	}{
		{"benchmark.md", func(f *os.File) error { return rep.WriteMarkdown(f) }},
		{"benchmark.json", func(f *os.File) error { return rep.WriteJSON(f) }},
	} {
		f, err := os.Create(filepath.Join(dir, w.name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = w.write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", w.name, err))
		}
	}
	return errors.Join(errs...)
}

// rewrite renders the report and plot of a saved benchmark.json into dir.
func rewrite(jsonPath, dir string) error {
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return fmt.Errorf("from-json: %w", err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("from-json %s: %w", jsonPath, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeOutputs(&rep, dir)
}

func fmtMS(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }
func fmtUS(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond)) }
func fmtShare(v float64) string    { return fmt.Sprintf("%.1f%%", 100*v) }
