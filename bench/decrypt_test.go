package bench

import (
	"fmt"
	"testing"
)

// BenchmarkDecryptTicket measures the decryption of a ticket made with the
// oldest key of a window of 1..MaxWindow keys, every key tried in turn as the
// client hook does (the worst case). `make bench` runs the same body through
// testing.Benchmark and puts the numbers in the report.
func BenchmarkDecryptTicket(b *testing.B) {
	for n := 1; n <= MaxWindow; n++ {
		f, err := NewDecryptFixture(b, n)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("window=%d", n), func(b *testing.B) { BenchmarkDecrypt(b, f) })
	}
}

func TestDecryptFixtureTriesEveryKey(t *testing.T) {
	for _, n := range []int{1, 3, MaxWindow} {
		f, err := NewDecryptFixture(t, n)
		if err != nil {
			t.Fatal(err)
		}
		ss, tried, err := f.Decrypt()
		if err != nil || ss == nil {
			t.Fatalf("window=%d: decrypt: %v (session %v)", n, err, ss)
		}
		if tried != n {
			t.Fatalf("window=%d: tried %d keys, want all %d (the ticket is under the oldest)", n, tried, n)
		}
	}
	// Without the key that made the ticket, nothing decrypts it.
	f, err := NewDecryptFixture(t, 4)
	if err != nil {
		t.Fatal(err)
	}
	f.keys = f.keys[:3]
	if ss, _, err := f.Decrypt(); err == nil || ss != nil {
		t.Fatalf("window without the ticket's key: got session %v, err %v; want no session and an error", ss, err)
	}
	if _, err := NewDecryptFixture(t, 0); err == nil {
		t.Fatal("window=0 accepted")
	}
}

func TestBenchmarkDecryptRunsThroughTestingBenchmark(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a benchmark")
	}
	f, err := NewDecryptFixture(t, 2)
	if err != nil {
		t.Fatal(err)
	}
	r := testing.Benchmark(func(b *testing.B) { BenchmarkDecrypt(b, f) })
	if r.N == 0 || r.T <= 0 {
		t.Fatalf("testing.Benchmark: N=%d T=%s, want a measurement", r.N, r.T)
	}
}
