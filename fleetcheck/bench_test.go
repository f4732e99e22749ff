package fleetcheck

import (
	"context"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// BenchmarkCheck100GoNodes times one round of the fleet check against 100
// Go nodes in this process (each a TLS server with its own client.Source,
// ECDSA P-256), both TLS versions, the default sampled matrix (each node's
// ticket to itself and 8 others) and the next-key check: 2 x 100 x (1 fresh
// + 9 matrix + 1 next) = 2,200 handshakes per round. `make bench-fleetcheck`
// runs it; the checker and the nodes share this machine's cores.
func BenchmarkCheck100GoNodes(b *testing.B) {
	const n = 100
	cert := testcert.New(b, testcert.ECDSAP256)
	s := newSchedule(b, FormatGo, 80, 3, time.Now().Add(-90*time.Minute), time.Hour, 2*time.Hour)
	vc := vaultStub(b, s)
	var addrs []string
	for i := 0; i < n; i++ {
		addrs = append(addrs, startSourceNode(b, cert, vc))
	}
	c, err := New(Config{Keyring: "test", Format: FormatGo, Read: VaultReader(vc, "ticketkeys", "test", FormatGo), Nodes: nodesOf(cert, addrs...)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var last *Report
	b.ResetTimer()
	for b.Loop() {
		r, err := c.Check(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if !r.OK || r.NodesReadyNext != n {
			b.Fatalf("round %d not green: %d failures, first %v", r.Round, len(r.Failures), r.Failures[:min(1, len(r.Failures))])
		}
		last = r
	}
	b.StopTimer()
	handshakes := len(last.Nodes)*len(last.Nodes[0].Versions)*2 + last.Matrix.Pairs
	b.ReportMetric(float64(handshakes), "handshakes/round")
	b.ReportMetric(float64(last.Matrix.Pairs), "matrix-pairs/round")
}
