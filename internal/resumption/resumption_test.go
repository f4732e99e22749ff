package resumption

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// startServers starts n Go HTTPS servers on loopback. With shared set, they
// all use the same explicit ticket key; otherwise each keeps crypto/tls's own
// random keys.
func startServers(t *testing.T, cert *testcert.Cert, n int, shared bool) []string {
	t.Helper()
	var key [32]byte
	key[0] = 1 // a fixed test key: only the equality between servers matters
	var addrs []string
	for i := 0; i < n; i++ {
		cfg := cert.ServerConfig()
		if shared {
			cfg.SetSessionTicketKeys([][32]byte{key})
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte("ok\n"))
			}),
			ReadHeaderTimeout: 5 * time.Second,
		}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// TestRunMeasuresCrossNodeResumption proves that the client tells shared keys
// from per-server keys: with one key shared by three servers every offered
// ticket resumes, with crypto/tls's per-process keys only about one in three
// does. Both TLS versions are covered.
func TestRunMeasuresCrossNodeResumption(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, shared := range []bool{true, false} {
			name := map[bool]string{true: "shared", false: "separate"}[shared]
			t.Run(tls.VersionName(v)+"/"+name, func(t *testing.T) {
				addrs := startServers(t, cert, 3, shared)
				res, err := Run(context.Background(), Config{
					Addrs: addrs, ServerName: testcert.ServerName, RootCAs: cert.Pool,
					MinVersion: v, MaxVersion: v,
					Users: 10, Concurrency: 2, MaxConnections: 300, MaxDuration: 20 * time.Second, Seed: 1,
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s", res)
				if res.HandshakeFailures != 0 || res.RequestFailures != 0 {
					t.Fatalf("failures: %s; first: %+v", res, firstFailure(res))
				}
				if res.Connections != 300 || res.StoppedBy != "max_connections" {
					t.Fatalf("bound: got %d connections stopped by %s, want 300 by max_connections", res.Connections, res.StoppedBy)
				}
				// 10 users and 2 workers: at most 20 connections find an empty cache.
				if res.Offered < 280 {
					t.Fatalf("offered: got %d, want >= 280", res.Offered)
				}
				for _, c := range res.Conns {
					if c.Version != v {
						t.Fatalf("version: got %x, want %x", c.Version, v)
					}
				}
				rate := res.ResumeRate()
				if shared && rate != 1 {
					t.Fatalf("shared keys: resume rate %.4f, want 1", rate)
				}
				if !shared && (rate < 0.15 || rate > 0.6) {
					t.Fatalf("separate keys: resume rate %.4f, want about 1/3", rate)
				}
				sum := 0
				for _, s := range res.Seconds {
					sum += s.Connections
				}
				if sum != res.Connections {
					t.Fatalf("per-second buckets hold %d connections, want %d", sum, res.Connections)
				}
				if got := res.Between(res.Start, res.End.Add(time.Second)); got.Resumed != res.Resumed {
					t.Fatalf("Between over the whole run: resumed %d, want %d", got.Resumed, res.Resumed)
				}
			})
		}
	}
}

// TestRunBounds proves the time bound and that failures are counted, not
// fatal: every connection goes to a closed port.
func TestRunBounds(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	res, err := Run(context.Background(), Config{
		Addrs: []string{addr}, ServerName: testcert.ServerName, RootCAs: cert.Pool,
		MaxConnections: 1 << 30, MaxDuration: 300 * time.Millisecond, Interval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("run took %s, bound was 300ms", el)
	}
	if res.StoppedBy != "max_duration" || res.Connections == 0 || res.HandshakeFailures != res.Connections {
		t.Fatalf("got %s, want only handshake failures and stopped_by=max_duration", res)
	}
	if _, err := Run(context.Background(), Config{Addrs: []string{addr}, ServerName: "x", RootCAs: cert.Pool, MaxDuration: time.Second}); err == nil {
		t.Fatal("MaxConnections 0 accepted")
	}
}

func firstFailure(r Result) Conn {
	for _, c := range r.Conns {
		if c.HandshakeErr != "" || c.RequestErr != "" {
			return c
		}
	}
	return Conn{}
}
