package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bench"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
)

// measureNginx runs the nginx rows: 3 nodes (Debian's nginx twice and one
// OpenResty line) per key set-up, the resumption load per TLS version while
// the keys rotate, the time to first byte at each RTT, and what one
// rotation does to long-lived connections (Lua module; reload with
// worker_shutdown_timeout unset and set), and how closely the Lua module's
// workers switch at the published instants by themselves.
func (h *harness) measureNginx(ctx context.Context, tlsVersions []uint16, cert bench.CertSet, logDir string) {
	o := h.o
	perTLS := o.nginxWarmup + o.nginxDuration + 3*time.Second
	var rttNeed time.Duration
	if o.nginxRTT {
		for _, rtt := range o.rtts {
			rttNeed += bench.RTTWarmup(o.rttWarmup, rtt, o.rttUsers, o.rttConcurrency) + o.nginxRTTDur + time.Second
		}
	}
	observe := o.nginxWST + 2*time.Second
	var builds []*servertest.NginxBuild
	err := h.tb.Do(func() {
		deb := servertest.DebianNginx(h.tb)
		builds = []*servertest.NginxBuild{deb, deb, deb}
	})
	if err != nil {
		h.fail("nginx: Debian's nginx: %v", err)
		return
	}
	if o.nginxOpenResty != "" {
		var or *servertest.NginxBuild
		if err := h.tb.Do(func() { or = servertest.OpenResty(h.tb, o.nginxOpenResty) }); err != nil || or == nil {
			h.note("nginx: OpenResty %s not available, the third node runs Debian's nginx too: %v", o.nginxOpenResty, err)
		} else {
			builds[2] = or
		}
	}
	var lib string
	if err := h.tb.Do(func() { lib = filepath.Join(servertest.RepoRoot(h.tb), "nginx", "lib") }); err != nil {
		h.fail("nginx: %v", err)
		return
	}
	rep := &bench.NginxReport{Settings: bench.NginxSettings{Workers: o.nginxWorkers, Cert: cert.Kind,
		Warmup: o.nginxWarmup, Duration: o.nginxDuration, RotateEvery: o.nginxRotate,
		Users: o.users, Concurrency: o.concurrency, Interval: o.interval, LongPerNode: o.nginxLong, RTTDuration: o.nginxRTTDur}}
	for _, b := range builds {
		rep.Settings.Builds = append(rep.Settings.Builds, b.Name+" "+b.Version)
	}
	h.rep.Nginx = rep
	ticks := int(2*(observe+30*time.Second)/time.Second) + 10
	start := func(setup string, wst time.Duration, logName string) (*bench.NginxCluster, error) {
		return bench.StartNginxCluster(h.tb, bench.NginxClusterSpec{Builds: builds, Setup: setup, Cert: cert,
			Workers: o.nginxWorkers, ShutdownTimeout: wst, LibDir: lib, StreamTicks: ticks, LogDir: logDir, LogName: logName})
	}

	// Resumption, CPU, handshake latency and time to first byte.
	for _, setup := range bench.NginxSetups {
		if ctx.Err() != nil {
			return
		}
		name := "nginx " + setup
		if !h.fits(name, time.Duration(len(tlsVersions))*(perTLS+rttNeed)+2*time.Second) {
			continue
		}
		c, err := start(setup, 0, setup)
		if err != nil {
			h.fail("%s: %v", name, err)
			continue
		}
		for _, v := range tlsVersions {
			if ctx.Err() != nil {
				break
			}
			progress("%s TLS %s (%s warm-up, %s measured, rotation every %s)", name, bench.TLSName(v), o.nginxWarmup, o.nginxDuration, o.nginxRotate)
			res, err := bench.RunNginxLoad(ctx, c, bench.NginxLoadSpec{TLS: v, Warmup: o.nginxWarmup, Duration: o.nginxDuration, RotateEvery: o.nginxRotate,
				Load: bench.Load{Users: o.users, Concurrency: o.concurrency, Interval: o.interval, MaxConnections: o.maxConns}, Seed: o.seed})
			if err != nil {
				res.Err = err.Error()
				h.fail("%s TLS %s: %v", name, bench.TLSName(v), err)
			}
			progress("  conns=%d offered=%d resumed=%s errors=%d workers cpu/conn=%sµs masters cpu/conn=%sµs rotations=%d hs p50 %sms p99 %sms",
				res.Connections, res.Offered, fmtShare(res.ResumeShare()), res.HandshakeFailures+res.RequestFailures,
				fmtUS(res.WorkerCPUPerConn()), fmtUS(res.MasterCPUPerConn()), len(res.Rotations), fmtMS(res.P50), fmtMS(res.P99))
			rep.Runs = append(rep.Runs, res)
			if !o.nginxRTT || ctx.Err() != nil {
				continue
			}
			spec := bench.RTTSpec{Scenario: bench.Scenario{ID: "nginx-" + setup, Label: bench.NginxSetupLabel(setup), Nodes: len(builds)},
				TLS: v, Cert: cert, RTTs: o.rtts, Users: o.rttUsers, Concurrency: o.rttConcurrency,
				Warmup: o.rttWarmup, Duration: o.nginxRTTDur, MaxConnections: o.maxConns, Seed: o.seed}
			for _, r := range bench.RunNginxTTFB(ctx, c, spec, o.nginxRotate) {
				if r.Err != "" {
					h.fail("%s TLS %s time to first byte at %s: %s", name, bench.TLSName(v), r.RTT, r.Err)
				}
				progress("  RTT %s: conns=%d resumed=%d errors=%d ttfb p50 %sms p99 %sms", r.RTT, r.Connections, r.Resumed, r.Errors, fmtMS(r.All.P50), fmtMS(r.All.P99))
				rep.RTT = append(rep.RTT, r)
			}
		}
		c.Stop()
	}

	// Long-lived connections across one rotation.
	for _, run := range []struct {
		setup string
		wst   time.Duration
	}{{bench.NginxLua, 0}, {bench.NginxReload, 0}, {bench.NginxReload, o.nginxWST}} {
		if ctx.Err() != nil {
			return
		}
		name := fmt.Sprintf("nginx long-lived %s worker_shutdown_timeout=%s", run.setup, run.wst)
		if !h.fits(name, observe+5*time.Second) {
			continue
		}
		c, err := start(run.setup, run.wst, fmt.Sprintf("long-%s-wst%s", run.setup, run.wst))
		if err != nil {
			h.fail("%s: %v", name, err)
			continue
		}
		progress("%s (%d keep-alive connections and %d streams per node, watched %s)", name, o.nginxLong, o.nginxLong, observe)
		r := bench.RunNginxLong(ctx, c, o.nginxLong, observe)
		c.Stop()
		if r.Err != "" {
			h.fail("%s: %s", name, r.Err)
		}
		progress("  keep-alive ended %d/%d, streams ended %d/%d (last %s), old workers %d (alive at end %d), lingered %s, old RSS peak %.1f MiB",
			r.KeepAliveEnded, r.KeepAlive, r.StreamsEnded, r.Streams, r.StreamsLastEnd.Round(100*time.Millisecond), r.OldWorkers, r.OldWorkersAtEnd,
			r.Linger.Round(100*time.Millisecond), float64(r.OldRSSPeak)/(1<<20))
		rep.Long = append(rep.Long, r)
	}

	// The Lua module's switch at the published instants, the window file unchanged.
	const switchActivations, switchGap = 3, 2 * time.Second
	name := "nginx switch at published instants"
	if ctx.Err() != nil || !h.fits(name, 4*time.Second+(switchActivations+2)*switchGap) {
		return
	}
	c, err := start(bench.NginxLua, 0, "switch")
	if err != nil {
		h.fail("%s: %v", name, err)
		return
	}
	progress("%s (%d activations %s apart, no file change)", name, switchActivations, switchGap)
	r := bench.RunNginxSwitch(ctx, c, switchActivations, switchGap)
	c.Stop()
	if r.Err != "" {
		h.fail("%s: %s", name, r.Err)
	}
	progress("  probes=%d slowest switch between %s and %s, early tickets %d, unseen %d", r.Probes, r.LateMax, r.SwitchedBy, r.Early, r.Unseen)
	rep.Switch = append(rep.Switch, r)
}
