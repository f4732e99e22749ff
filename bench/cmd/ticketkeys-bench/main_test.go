package main

import (
	"crypto/tls"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bench"
)

func TestParseFlagsDefaultsFitTheBudget(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	// 2 TLS versions x 2 certificates x (3 baseline runs + 2 rotating runs),
	// each with its warm-up and about 2s of process start and stop, plus the
	// hook rounds: this must leave room for Vault's start (~6s), the read
	// cost (~16s) and the decryption benchmark (~10s) inside the budget.
	perCombo := 3*(o.warmup+o.baseline+2*time.Second) + 2*(o.warmup+o.rotating+2*time.Second)
	hook := 2 * time.Duration(2*o.hookRounds) * (time.Second + o.hookSegment + 2*time.Second)
	// Reads: keyring, built-in KV, external KV and KV without the default
	// policy per round, two profiles.
	reads := time.Duration(4*o.readRounds)*o.readSegment + 2*o.readProfile + 10*time.Second
	// Time to first byte: 2 TLS versions x 2 scenarios, each RTT with its
	// warm-up, and a child start per scenario.
	rtt := 8 * time.Second
	for _, d := range o.rtts {
		rtt += 4 * (bench.RTTWarmup(o.rttWarmup, d, o.rttUsers, o.rttConcurrency) + o.rttDuration + time.Second)
	}
	// Fleet: tokens, then per kind the start, the measurement and the stop.
	fleet := 10*time.Second + 2*(o.fleetDuration+15*time.Second)
	if mine := reads + rtt + fleet; mine > 4*time.Minute {
		t.Fatalf("read cost, time to first byte and fleet need about %s, want <= 4 minutes", mine)
	}
	// nginx: per set-up a cluster start, per TLS version the resumption run
	// and the time to first byte at each RTT; then three long-lived runs.
	var nginxRTT time.Duration
	for _, d := range o.rtts {
		nginxRTT += bench.RTTWarmup(o.rttWarmup, d, o.rttUsers, o.rttConcurrency) + o.nginxRTTDur + time.Second
	}
	nginx := 3*(time.Second+2*(o.nginxWarmup+o.nginxDuration+time.Second+nginxRTT)) + 3*(o.nginxWST+2*time.Second+time.Second)
	if nginx > 4*time.Minute {
		t.Fatalf("the nginx rows need about %s, want <= 4 minutes", nginx)
	}
	if total := 4*perCombo + hook + reads + rtt + fleet + nginx; total > o.budget-20*time.Second {
		t.Fatalf("default runs need about %s, budget %s leaves less than 20s for Vault and decryption", total, o.budget)
	}
	// The estimates are upper bounds (the sample's parts before nginx took
	// 9:17 where they estimate 10:54); 30s are left for the build.
	if o.budget > 14*time.Minute+30*time.Second {
		t.Fatalf("default budget %s: make bench must end within 15 minutes including the build", o.budget)
	}
	if r := int(o.rotating / o.rotationPeriod); r < 3 {
		t.Fatalf("rotating runs of %s at a %s period give %d rotations, want several (>= 3)", o.rotating, o.rotationPeriod, r)
	}
	// Scenario 3's last rotation needs a few seconds of load after it (the
	// dip lasts until the users have come back), or its misses are cut off.
	if tail := o.rotating % o.rotationPeriod; tail < 3*time.Second {
		t.Fatalf("rotating runs of %s end %s after the last rotation of scenario 3, want >= 3s", o.rotating, tail)
	}
}

func TestParseFlagsErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-rotation-period", "2s"}, "rotation-period: must be whole seconds >= 5s"},
		{[]string{"-users", "0"}, "must be >= 1, got 0"},
		{[]string{"extra"}, `arguments: want none besides flags, got ["extra"]`},
		{[]string{"-only", "rtt,speed"}, `only: want parts among cluster, hook, reads, decrypt, rtt, fleet, nginx, got "speed"`},
		{[]string{"-nginx-long", "0"}, "nginx-workers, nginx-long, nginx-rotate-every, nginx-shutdown-timeout: want 1..8, 1..100"},
		{[]string{"-rtts", "50ms,fast"}, `rtts: want durations in (0, 2s], got "fast"`},
		{[]string{"-rtt-users", "4", "-rtt-concurrency", "8"}, "rtt-users >= rtt-concurrency >= 1, got 4 and 8"},
		{[]string{"-fleet-nodes", "0"}, "fleet-nodes, fleet-start-concurrency: must be 1..20000"},
		{[]string{"-fleet-period", "3s"}, "the period >= 5s, got 3s"},
		{[]string{"-fleet-kinds", "sources,robots"}, `fleet-kinds: want sources or agents, got "robots"`},
	} {
		if _, err := parseFlags(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q): got %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestParseLists(t *testing.T) {
	w, err := parseWindows("1-4")
	if err != nil || !reflect.DeepEqual(w, []int{1, 2, 3, 4}) {
		t.Fatalf("parseWindows(1-4) = %v, %v", w, err)
	}
	w, err = parseWindows("1, 14")
	if err != nil || !reflect.DeepEqual(w, []int{1, 14}) {
		t.Fatalf("parseWindows(1, 14) = %v, %v", w, err)
	}
	for _, bad := range []string{"0-3", "5-2", "x", "1,,2", "65"} {
		if _, err := parseWindows(bad); err == nil {
			t.Errorf("parseWindows(%q) accepted", bad)
		}
	}
	v, err := parseTLS("1.3,1.2")
	if err != nil || !reflect.DeepEqual(v, []uint16{tls.VersionTLS13, tls.VersionTLS12}) {
		t.Fatalf("parseTLS = %v, %v", v, err)
	}
	if _, err := parseTLS("1.1"); err == nil || !strings.Contains(err.Error(), `got "1.1"`) {
		t.Fatalf("parseTLS(1.1): %v", err)
	}
	sc, err := parseScenarios("own,ticketkeys")
	if err != nil || len(sc) != 2 || sc[1].ID != "ticketkeys" {
		t.Fatalf("parseScenarios = %v, %v", sc, err)
	}
	if _, err := parseScenarios("own,fast"); err == nil || !strings.Contains(err.Error(), `got "fast"`) {
		t.Fatalf("parseScenarios(own,fast): %v", err)
	}
}
