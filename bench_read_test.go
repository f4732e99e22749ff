package ticketkeys

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// BenchmarkReadWindow measures the engine's own cost of a read of a 14-key
// window (1h rotation, 12h retain), without Vault's HTTP and plugin hops.
func BenchmarkReadWindow(b *testing.B) {
	for _, format := range formats {
		b.Run(format, func(b *testing.B) {
			tb := getBackend(b)
			tb.mustRequest(b, logical.UpdateOperation, "keys/web", nil)
			for range 25 { // half-hourly ticks for 12.5 hours
				tb.clock.Advance(30 * time.Minute)
				tb.tick(b)
			}
			if _, keys := readWindow(b, tb, "web", format); len(keys) != 14 {
				b.Fatalf("window has %d keys, want 14", len(keys))
			}
			data := map[string]interface{}{"format": format}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := tb.request(b, logical.ReadOperation, "keys/web", data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
