package ticketkeys

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	gplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin"
)

// fullWindowBackend returns a backend whose keyring "web" holds a 14-key
// window (1h rotation, 12h retain): half-hourly ticks for 12.5 hours.
func fullWindowBackend(b *testing.B) *testBackend {
	b.Helper()
	tb := getBackend(b)
	tb.mustRequest(b, logical.UpdateOperation, "keys/web", nil)
	for range 25 {
		tb.clock.Advance(30 * time.Minute)
		tb.tick(b)
	}
	if _, keys := readWindow(b, tb, "web", formatNginx); len(keys) != 14 {
		b.Fatalf("window has %d keys, want 14", len(keys))
	}
	return tb
}

// BenchmarkReadWindow measures the engine's own cost of a read of a 14-key
// window, without Vault's HTTP and plugin hops.
func BenchmarkReadWindow(b *testing.B) {
	for _, format := range formats {
		b.Run(format, func(b *testing.B) {
			tb := fullWindowBackend(b)
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

// BenchmarkReadWindowPluginHop measures the same read through the SDK's
// plugin gRPC transport (go-plugin over an in-process connection, both
// ends): what a read costs the plugin process and Vault's plugin client
// beyond the engine, before HTTP, tokens and audit. Set against
// BenchmarkReadWindow it shows how much of the hop is the engine's.
func BenchmarkReadWindowPluginHop(b *testing.B) {
	for _, format := range formats {
		b.Run(format, func(b *testing.B) {
			tb := fullWindowBackend(b)
			served := map[string]gplugin.Plugin{plugin.BackendPluginName: &plugin.GRPCBackendPlugin{
				Factory: func(context.Context, *logical.BackendConfig) (logical.Backend, error) { return tb.backend, nil },
				Logger:  hclog.NewNullLogger(),
			}}
			conn, _ := gplugin.TestPluginGRPCConn(b, false, served)
			b.Cleanup(func() { conn.Close() })
			raw, err := conn.Dispense(plugin.BackendPluginName)
			if err != nil {
				b.Fatal(err)
			}
			remote := raw.(logical.Backend)
			conf := &logical.BackendConfig{Logger: hclog.NewNullLogger(), System: logical.TestSystemView(), StorageView: tb.storage}
			if err := remote.Setup(context.Background(), conf); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				req := &logical.Request{Operation: logical.ReadOperation, Path: "keys/web", Data: map[string]interface{}{"format": format}, Storage: tb.storage}
				resp, err := remote.HandleRequest(context.Background(), req)
				if err != nil || resp == nil || resp.IsError() {
					b.Fatalf("read through the plugin transport: %v %v", err, resp)
				}
			}
		})
	}
}
