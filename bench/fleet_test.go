package bench

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

func TestHoldTrackerPropagationAndActivation(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ready, end := base.Add(10*time.Second), base.Add(40*time.Second)
	const ahead = 5 * time.Second
	kt := func(notBefore time.Duration) keyTimes {
		nb := base.Add(notBefore)
		return keyTimes{notBefore: nb, publishAt: nb.Add(-ahead)}
	}
	h := newHoldTracker(3)
	// "old": published before the fleet was ready, activates at 12s.
	// "k20": published at 15s, activates at 20s; node 2 gets it only at 21s.
	// "k50": published at 45s (after the end): in no measurement.
	for node := 0; node < 3; node++ {
		h.saw(node, base.Add(9*time.Second), map[string]keyTimes{"old": kt(12 * time.Second)})
	}
	h.saw(0, base.Add(15500*time.Millisecond), map[string]keyTimes{"k20": kt(20 * time.Second)})
	h.saw(1, base.Add(16*time.Second), map[string]keyTimes{"k20": kt(20 * time.Second)})
	h.saw(1, base.Add(17*time.Second), map[string]keyTimes{"k20": kt(20 * time.Second)}) // a later read changes nothing
	h.saw(2, base.Add(21*time.Second), map[string]keyTimes{"k20": kt(20 * time.Second)})
	h.saw(0, base.Add(45*time.Second), map[string]keyTimes{"k50": kt(50 * time.Second)})

	r := FleetResult{Nodes: 3, Keys: h.result(ready, end)}
	if len(r.Keys) != 3 {
		t.Fatalf("%d keys, want 3", len(r.Keys))
	}
	old, k20, k50 := r.Keys[0], r.Keys[1], r.Keys[2]
	if !old.ActivationMeasured || old.PublishMeasured || old.AtActivation != 3 {
		t.Errorf("old key: %+v, want activation measured (3 held), publish not measured", old)
	}
	if !k20.PublishMeasured || k20.HeldBy != 3 || k20.AtActivation != 2 || k20.LastAfterPublish != 6*time.Second {
		t.Errorf("k20: %+v, want held by 3, 2 at activation, last 6s after publish", k20)
	}
	if k50.ActivationMeasured || k50.PublishMeasured || k50.HeldBy != 1 {
		t.Errorf("k50: %+v, want in no measurement", k50)
	}
	share, keys, ok := r.ActivationShare()
	if !ok || keys != 2 || share != 5.0/6.0 {
		t.Errorf("activation share %v over %d keys (ok %t), want 5/6 over 2", share, keys, ok)
	}
	if got := pctExact(share); got != "83.333%" {
		t.Errorf("pctExact(5/6) = %q", got)
	}
	if got := pctExact(0.99999); got == "100%" || strings.HasPrefix(got, "100") {
		t.Errorf("pctExact(0.99999) = %q: must not read as 100%%", got)
	}
	med, worst, n, incomplete := r.Propagation()
	if n != 1 || incomplete != 0 || med != 6*time.Second || worst != 6*time.Second {
		t.Errorf("propagation median %s worst %s over %d keys (%d incomplete), want 6s over 1", med, worst, n, incomplete)
	}
}

func TestReadRecorderWindow(t *testing.T) {
	base := time.Now()
	var r readRecorder
	r.record(base, time.Millisecond, nil) // before the window: startup
	r.open(base.Add(time.Second))
	r.record(base.Add(1100*time.Millisecond), 2*time.Millisecond, nil)
	r.record(base.Add(1900*time.Millisecond), 4*time.Millisecond, nil)
	r.record(base.Add(3500*time.Millisecond), 6*time.Millisecond, errors.New("503"))
	r.record(base.Add(3600*time.Millisecond), 8*time.Millisecond, nil)
	r.close(base.Add(4 * time.Second))
	r.record(base.Add(5*time.Second), time.Millisecond, nil) // after: ignored
	if r.startup != 1 || r.reads != 3 || r.errors != 1 || r.firstError != "503" {
		t.Fatalf("recorder: startup %d reads %d errors %d first error %q", r.startup, r.reads, r.errors, r.firstError)
	}
	if want := []int{2, 0, 1}; len(r.perSecond) != 3 || r.perSecond[0] != 2 || r.perSecond[2] != 1 {
		t.Fatalf("per second %v, want %v", r.perSecond, want)
	}
}

// TestParseAgentRead: a read is decoded by schedule.Decode (ids, times,
// ttl, settings) and a malformed one is refused naming the field.
func TestParseAgentRead(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	material := append(bytes.Repeat([]byte{0xaa}, 16), bytes.Repeat([]byte{7}, 64)...)
	data := func() map[string]any {
		return map[string]any{"name": "web", "format": "nginx", "key_size": json.Number("80"), "retain": json.Number("10"),
			"ttl": json.Number("4"), "rotation_period": json.Number("5"), "publish_ahead": json.Number("5"),
			"keys": []any{map[string]any{"id": strings.Repeat("aa", 16), "state": "current", "not_before": "2026-01-01T00:00:10Z",
				"encrypt_until": "2026-01-01T00:00:15Z", "not_after": "2026-01-01T00:00:25Z", "ticket_key": base64.StdEncoding.EncodeToString(material)}},
		}
	}
	keys, ttl, period, ahead, err := parseAgentRead(&api.Secret{Data: data()})
	if err != nil {
		t.Fatal(err)
	}
	id := strings.Repeat("aa", 16)
	if ttl != 4*time.Second || period != 5*time.Second || ahead != 5*time.Second || keys[id].notBefore != nb || keys[id].publishAt != nb.Add(-5*time.Second) {
		t.Fatalf("parsed %v %s %s %s", keys, ttl, period, ahead)
	}
	for _, tc := range []struct {
		change func(map[string]any)
		want   string
	}{
		{func(m map[string]any) { delete(m, "ttl") }, "ttl: required, missing"},
		{func(m map[string]any) { m["ttl"] = json.Number("1.5") }, `field "ttl": want int64, got JSON number 1.5`},
		{func(m map[string]any) { m["keys"] = "x" }, `field "keys": want a list, got JSON string`},
		{func(m map[string]any) { m["keys"] = []any{map[string]any{"id": "aa"}} }, "keys[0].id: must be 32 hex characters, got 2 characters"},
	} {
		d := data()
		tc.change(d)
		if _, _, _, _, err := parseAgentRead(&api.Secret{Data: d}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseAgentRead: %v, want %q", err, tc.want)
		}
	}
}

func TestFleetProjection(t *testing.T) {
	r := FleetResult{Kind: FleetAgents, Nodes: 1000, Reads: 4000, RotationPeriod: 5 * time.Second,
		Start: time.Unix(0, 0), End: time.Unix(20, 0), VaultCPU: 3 * time.Second, PluginCPU: map[string]time.Duration{"p": time.Second},
		AuditBytes: 4000 * 10000}
	if got := r.ReadsPerNodePerPeriod(); got != 1 {
		t.Fatalf("reads per node per period %v, want 1", got)
	}
	if r.CPUPerRead() != time.Millisecond {
		t.Fatalf("cpu per read %s, want 1ms", r.CPUPerRead())
	}
	p := r.Project(100000, time.Hour, 2)
	// Agent: 30s engine jitter + 1s rounding; 100000 reads in 31s.
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }
	if p.Spread != 31*time.Second || !near(p.PeakReadsPerSecond, 100000.0/31) || !near(p.PeakCores, 100000.0/31*0.001) {
		t.Fatalf("projection %+v", p)
	}
	if p.DrainOnCPUs != 50*time.Second {
		t.Fatalf("drain on 2 cores %s, want 100000 x 1ms / 2 = 50s", p.DrainOnCPUs)
	}
	if want := 100000.0 / 3600 * 86400 * 10000; p.AuditPerDay < want*0.999 || p.AuditPerDay > want*1.001 {
		t.Fatalf("audit per day %v, want %v", p.AuditPerDay, want)
	}
	rep := &Report{Fleet: []FleetResult{r, {Kind: FleetSources, Nodes: 1000, Err: "fleet: 3 of 1000 nodes could not start"}},
		FleetSettings: FleetSettings{Nodes: 1000, CPUs: 2, RotationPeriod: 5 * time.Second, AgentFormat: "nginx"}}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"## Fleet scale", "**Extrapolation**", "| Agent-style readers (ttl + 1 s), format nginx | 100000 |", "failed: fleet: 3 of 1000 nodes",
		"what limits first is the burst", "lasts about 50.0s"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestProcStat(t *testing.T) {
	st, err := parseProcStat("4242 (vault plugin (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 125 0 0 20 0 12 0 100 0 0")
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "vault plugin (x)" || st.PPID != 17 || st.CPU != 3750*time.Millisecond {
		t.Fatalf("parsed %+v, want name with parentheses, ppid 17, (250+125) ticks = 3.75s", st)
	}
	if _, err := parseProcStat("4242 no name"); err == nil {
		t.Error("parsed a line without (name)")
	}
	// The test process itself: CPU grows, and a child shows up by name.
	tree, err := ReadTreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for s := time.Now(); time.Since(s) < 50*time.Millisecond; {
	}
	later, err := ReadTreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self, _ := later.Since(tree); self < 0 {
		t.Errorf("cpu went backwards: %s", self)
	}
}

func TestParsePprofTop(t *testing.T) {
	out := `File: vault
Type: cpu
Duration: 4s, Total samples = 2.89s (72.21%)
Showing nodes accounting for 2.80s, 96.89% of 2.89s total
      flat  flat%   sum%        cum   cum%
     0.01s  0.35%  0.35%      1.32s 45.67%  net/http.(*conn).serve
         0     0%  0.35%      0.52s 17.99%  github.com/hashicorp/vault/vault.parseACLPolicyWithTemplating
      10ms  0.35%  0.69%       20ms  0.69%  github.com/hashicorp/vault/audit.clone[go.shape.map[string]interface {}] (inline)
`
	total, cum := parsePprofTop(out)
	if total != 2890*time.Millisecond {
		t.Errorf("total %s, want 2.89s", total)
	}
	for name, want := range map[string]time.Duration{
		"net/http.(*conn).serve": 1320 * time.Millisecond,
		"github.com/hashicorp/vault/vault.parseACLPolicyWithTemplating":            520 * time.Millisecond,
		"github.com/hashicorp/vault/audit.clone[go.shape.map[string]interface {}]": 20 * time.Millisecond,
	} {
		if cum[name] != want {
			t.Errorf("cum[%s] = %s, want %s", name, cum[name], want)
		}
	}
}
