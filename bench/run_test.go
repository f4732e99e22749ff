package bench

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/resumption"
)

func TestFillCountsAndLeavesOutConnectionsCutAtTheEnd(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	dur := 3 * time.Second
	conn := func(startMS, endMS int, offered, resumed bool, hsErr string, hs time.Duration) resumption.Conn {
		return resumption.Conn{Start: t0.Add(time.Duration(startMS) * time.Millisecond), End: t0.Add(time.Duration(endMS) * time.Millisecond),
			Offered: offered, Resumed: resumed, HandshakeErr: hsErr, Handshake: hs,
			Aborted: endMS >= 3000}
	}
	out := resumption.Result{Start: t0, End: t0.Add(dur), Conns: []resumption.Conn{
		conn(100, 110, false, false, "", 2*time.Millisecond),
		conn(500, 510, true, true, "", 1*time.Millisecond),
		conn(1200, 1210, true, false, "", 3*time.Millisecond),
		conn(1500, 1600, true, false, "handshake: remote error", 0),              // a real failure, counted
		conn(2950, 3000, true, false, "handshake: context deadline exceeded", 0), // cut by the end
		conn(2990, 3001, false, false, "dial: i/o timeout", 0),                   // cut by the end
	}}
	var r RunResult
	r.fill(out, Sample{CPUus: 1000}, Sample{CPUus: 5000, Rotations: []time.Time{t0.Add(-time.Second), t0.Add(1100 * time.Millisecond)}})
	if r.Connections != 4 || r.CutAtEnd != 2 || r.HandshakeFailures != 1 {
		t.Fatalf("connections=%d cut=%d handshake failures=%d, want 4, 2, 1", r.Connections, r.CutAtEnd, r.HandshakeFailures)
	}
	if r.Offered != 3 || r.Resumed != 1 || r.FailedResumptions() != 2 {
		t.Fatalf("offered=%d resumed=%d failed=%d, want 3, 1, 2", r.Offered, r.Resumed, r.FailedResumptions())
	}
	if r.ServerCPU != 4*time.Millisecond || r.CPUPerConn() != time.Millisecond {
		t.Fatalf("server CPU %s, per conn %s, want 4ms and 1ms", r.ServerCPU, r.CPUPerConn())
	}
	if len(r.Rotations) != 1 || math.Abs(r.Rotations[0]-1.1) > 1e-9 {
		t.Fatalf("rotations %v, want [1.1] (the one before the start is left out)", r.Rotations)
	}
	if v, ok := r.FailedPerRotation(); !ok || v != 2 {
		t.Fatalf("failed per rotation %v %t, want 2 true", v, ok)
	}
	if len(r.Series) != 2 || r.Series[0].Offered != 1 || r.Series[0].Rate() != 1 || r.Series[1].Offered != 2 || r.Series[1].Rate() != 0 {
		t.Fatalf("series %+v, want second 0: 1/1, second 1: 0/2", r.Series)
	}
	if r.P99 != 3*time.Millisecond || r.P50 != 2*time.Millisecond {
		t.Fatalf("p50 %s p99 %s, want 2ms and 3ms", r.P50, r.P99)
	}
	if r.ErrorSamples["handshake: remote error"] != 1 || len(r.ErrorSamples) != 1 {
		t.Fatalf("error samples %v, want only the real failure", r.ErrorSamples)
	}
}

func TestFillLeavesOutTheWarmup(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	out := resumption.Result{Start: t0, End: t0.Add(4 * time.Second), Conns: []resumption.Conn{
		{Start: t0.Add(100 * time.Millisecond), Offered: false},                // warm-up: a first visit
		{Start: t0.Add(900 * time.Millisecond), Offered: true, Resumed: false}, // warm-up
		{Start: t0.Add(1500 * time.Millisecond), Offered: true, Resumed: true}, // measured, second 0
		{Start: t0.Add(2600 * time.Millisecond), Offered: true, Resumed: true}, // measured, second 1
	}}
	var r RunResult
	r.fill(out, Sample{Time: t0.Add(time.Second), Sources: []SourceSummary{{WindowKeys: 3, HitCurrent: 10, Refreshes: 1}}},
		Sample{Rotations: []time.Time{t0.Add(2 * time.Second)}, Sources: []SourceSummary{{WindowKeys: 4, HitCurrent: 12, HitPrevious: 1, Refreshes: 2}}})
	if want := []SourceSummary{{WindowKeys: 4, HitCurrent: 2, HitPrevious: 1, Refreshes: 1}}; !reflect.DeepEqual(r.Sources, want) {
		t.Fatalf("sources %+v, want the counts of the measured window %+v", r.Sources, want)
	}
	if !r.Start.Equal(t0.Add(time.Second)) || r.Connections != 2 || r.Offered != 2 || r.Resumed != 2 {
		t.Fatalf("start %s connections %d offered %d resumed %d, want the warm-up left out: %s, 2, 2, 2", r.Start, r.Connections, r.Offered, r.Resumed, t0.Add(time.Second))
	}
	if len(r.Series) != 2 || r.Series[0].Offered != 1 || r.Series[1].Offered != 1 {
		t.Fatalf("series %+v, want seconds counted from the end of the warm-up", r.Series)
	}
	if len(r.Rotations) != 1 || r.Rotations[0] != 1 {
		t.Fatalf("rotations %v, want [1] (seconds since the measurement started)", r.Rotations)
	}
}

func TestFailedPerRotationNeedsRotations(t *testing.T) {
	r := RunResult{Offered: 10, Resumed: 4}
	if _, ok := r.FailedPerRotation(); ok {
		t.Fatal("FailedPerRotation ok without rotations")
	}
	if !math.IsNaN(RunResult{}.ResumeShare()) || !math.IsNaN((SecondPoint{}).Rate()) {
		t.Fatal("share with nothing offered must be NaN")
	}
}

func TestSetRelSingle(t *testing.T) {
	runs := []RunResult{
		{Scenario: "single", TLS: "1.3", Cert: "RSA-2048", Connections: 100, ServerCPU: 100 * time.Millisecond},
		{Scenario: "own", TLS: "1.3", Cert: "RSA-2048", Connections: 100, ServerCPU: 350 * time.Millisecond},
		{Scenario: "own", TLS: "1.2", Cert: "RSA-2048", Connections: 100, ServerCPU: 350 * time.Millisecond},
	}
	SetRelSingle(runs)
	if runs[0].RelSingle != 1 || math.Abs(runs[1].RelSingle-3.5) > 1e-9 || runs[2].RelSingle != 0 {
		t.Fatalf("RelSingle: got %v %v %v, want 1, 3.5 and 0 (no reference for TLS 1.2)", runs[0].RelSingle, runs[1].RelSingle, runs[2].RelSingle)
	}
}

func TestActivationsFromHistory(t *testing.T) {
	from := time.Date(2026, 11, 29, 22, 0, 0, 500e6, time.UTC)
	to := from.Add(20 * time.Second)
	data := map[string]any{
		"keys": []any{
			map[string]any{"id": "a", "state": "current", "not_before": "2026-11-29T22:00:10Z"},
			map[string]any{"id": "b", "state": "next", "not_before": "2026-11-29T22:00:25Z"}, // after the load
			map[string]any{"id": "c", "state": "previous", "not_before": "2026-11-29T22:00:05Z"},
			map[string]any{"id": "d", "state": "previous", "not_before": "2026-11-29T22:00:00Z"}, // created before the load
		},
		"destroyed": []any{
			map[string]any{"id": "e", "not_before": "2026-11-29T22:00:15Z", "reason": "discarded"},
			map[string]any{"id": "f", "not_before": "2026-11-29T22:00:20Z", "reason": "expired"},
		},
	}
	got, err := activations(data, from, to)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"22:00:05", "22:00:10", "22:00:20"}
	if len(got) != len(want) {
		t.Fatalf("activations %v, want %v", got, want)
	}
	for i := range want {
		if got[i].Format("15:04:05") != want[i] {
			t.Fatalf("activations %v, want %v", got, want)
		}
	}
	if _, err := activations(map[string]any{"keys": []any{map[string]any{"not_before": "soon"}}}, from, to); err == nil {
		t.Fatal("a bad not_before was accepted")
	}
}
