package bench

import (
	"fmt"
	"testing"
)

// BenchmarkDecryptTicket measures the client hook's decryption of a ticket
// made with the oldest key of a window of 1..MaxWindow keys (the ticket
// names its key, so one key is tried whatever the window). `make bench` runs
// the same body through testing.Benchmark and puts the numbers in the
// report. legacy/window=N is a ticket of the previous release's format,
// which is tried against every key of the window while legacy tickets are
// accepted (the cost before key names, and of a forged ticket meanwhile).
func BenchmarkDecryptTicket(b *testing.B) {
	for _, legacy := range []bool{false, true} {
		for n := 1; n <= MaxWindow; n++ {
			f, err := newDecryptFixture(b, n, legacy)
			if err != nil {
				b.Fatal(err)
			}
			name := fmt.Sprintf("window=%d", n)
			if legacy {
				name = "legacy/" + name
			}
			b.Run(name, func(b *testing.B) { BenchmarkDecrypt(b, f) })
		}
	}
}

// TestDecryptFixture: the fixture's ticket resumes through the real hook,
// in both formats, and a ticket whose key is not in the window does not.
func TestDecryptFixture(t *testing.T) {
	for _, n := range []int{1, 3, MaxWindow} {
		for _, legacy := range []bool{false, true} {
			f, err := newDecryptFixture(t, n, legacy)
			if err != nil {
				t.Fatal(err)
			}
			if ss, err := f.Decrypt(); err != nil || ss == nil {
				t.Fatalf("window=%d legacy=%v: decrypt: %v (session %v)", n, legacy, err, ss)
			}
		}
	}
	// Another window's ticket decrypts under none of this window's keys.
	a, err := NewDecryptFixture(t, 4)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewLegacyDecryptFixture(t, 4)
	if err != nil {
		t.Fatal(err)
	}
	a.ticket = b.ticket
	if ss, err := a.Decrypt(); err == nil || ss != nil {
		t.Fatalf("ticket of another window: got session %v, err %v; want no session and an error", ss, err)
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
