package fleetcheck

import (
	"context"
	"fmt"
	"testing"
)

// TestOneShotSamplingCoversEveryPair: above -matrix-full, one-shot runs
// (cron) each make round 1 only; seeded from the clock, 100 runs on 40 nodes
// cover every one of the 1,600 pairs (each run covers a random block of 8
// offsets of 39: a pair is missed by 100 runs with probability about 1e-10).
func TestOneShotSamplingCoversEveryPair(t *testing.T) {
	const n, runs = 40, 100
	var nodes []Node
	for i := range n {
		nodes = append(nodes, Node{Addr: fmt.Sprintf("127.0.0.1:%d", 10000+i)})
	}
	read := func(context.Context) (*Window, error) { return nil, fmt.Errorf("unused") }
	covered := map[[2]int]bool{}
	for range runs {
		c, err := New(Config{Format: FormatGo, Read: read, Nodes: nodes})
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			for _, j := range c.targets(i, n, 1) {
				covered[[2]int{i, j}] = true
			}
		}
	}
	if len(covered) != n*n {
		t.Fatalf("%d one-shot runs covered %d of %d pairs", runs, len(covered), n*n)
	}
}
