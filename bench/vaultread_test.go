package bench

import (
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("p%.0f of 1..100ms: got %s, want %s", tc.p, got, tc.want)
		}
	}
	if percentile(nil, 99) != 0 {
		t.Error("percentile of nothing must be 0")
	}
}

func TestReadCostMerge(t *testing.T) {
	a := ReadCost{Name: "k", Path: "p"}
	a.merge(ReadCost{DataBytes: 10, Reads: 2, Elapsed: time.Second, latencies: []time.Duration{1 * time.Millisecond, 9 * time.Millisecond}})
	a.merge(ReadCost{DataBytes: 10, Reads: 2, Errors: 1, FirstError: "503", Elapsed: time.Second, latencies: []time.Duration{2 * time.Millisecond, 3 * time.Millisecond}})
	if a.Reads != 4 || a.Errors != 1 || a.FirstError != "503" || a.Elapsed != 2*time.Second || a.DataBytes != 10 {
		t.Fatalf("merged %+v", a)
	}
	if a.PerSecond() != 2 || a.P99 != 9*time.Millisecond || a.P50 != 2*time.Millisecond {
		t.Fatalf("reads/s %.1f p50 %s p99 %s, want 2, 2ms, 9ms", a.PerSecond(), a.P50, a.P99)
	}
}
