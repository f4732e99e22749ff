package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"image/png"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// tlsNode serves okHandler over TLS on 127.0.0.1 with cfg until the test
// ends.
func tlsNode(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Handshakes cut by the end of a load are expected: their errors are
	// not logged.
	srv := &http.Server{Handler: http.HandlerFunc(okHandler), ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	srv.SetKeepAlivesEnabled(false)
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestTTFBThroughProxyCountsRoundTrips: through the latency proxy, a TLS
// 1.2 connection's first byte comes at least 4 round trips after the dial
// with a full handshake and at least 3 when resumed; with TLS 1.3 at least
// 3 either way. Offered and resumed follow the session caches.
func TestTTFBThroughProxyCountsRoundTrips(t *testing.T) {
	const rtt = 30 * time.Millisecond
	cert := testcert.New(t, testcert.ECDSAP256)
	node := tlsNode(t, cert.ServerConfig())
	p := startProxy(t, node, rtt, ProxyOptions{})
	for _, tc := range []struct {
		version          uint16
		fullRTTs, resRTT int
	}{
		{tls.VersionTLS12, 4, 3},
		{tls.VersionTLS13, 3, 3},
	} {
		conns, err := RunTTFB(context.Background(), TTFBConfig{
			Addrs: []string{p.Addr()}, ServerName: testcert.ServerName, RootCAs: cert.Pool, TLS: tc.version,
			Users: 4, Concurrency: 2, Duration: 800 * time.Millisecond, MaxConnections: 40, Seed: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		var full, resumed int
		for _, c := range conns {
			if c.Err != "" {
				if !c.Aborted {
					t.Errorf("TLS %s: connection failed: %s", TLSName(tc.version), c.Err)
				}
				continue
			}
			want := tc.fullRTTs
			if c.Resumed {
				resumed++
				want = tc.resRTT
				if !c.Offered {
					t.Errorf("TLS %s: resumed without offering a ticket", TLSName(tc.version))
				}
			} else {
				full++
			}
			if c.TTFB < time.Duration(want)*rtt {
				t.Errorf("TLS %s: resumed=%t TTFB %s, want >= %d round trips (%s)", TLSName(tc.version), c.Resumed, c.TTFB, want, time.Duration(want)*rtt)
			}
			if c.Handshake <= 0 || c.Handshake >= c.TTFB {
				t.Errorf("TLS %s: handshake %s, TTFB %s: want 0 < handshake < TTFB", TLSName(tc.version), c.Handshake, c.TTFB)
			}
		}
		// 4 users: their first connections are full, later ones resume
		// (one node, its own keys).
		if full < 1 || resumed < 1 {
			t.Errorf("TLS %s: %d full and %d resumed connections, want both", TLSName(tc.version), full, resumed)
		}
	}
}

func TestTTFBConfigErrorsNameTheField(t *testing.T) {
	ok := TTFBConfig{Addrs: []string{"127.0.0.1:1"}, TLS: tls.VersionTLS13, Users: 2, Concurrency: 2, Duration: time.Second, MaxConnections: 1}
	for _, tc := range []struct {
		change func(*TTFBConfig)
		want   string
	}{
		{func(c *TTFBConfig) { c.Addrs = nil }, "addrs: at least one required"},
		{func(c *TTFBConfig) { c.Users = 1 }, "users: must be >= concurrency (2), got 1"},
		{func(c *TTFBConfig) { c.MaxConnections = 0 }, "max connections: must be >= 1, got 0"},
		{func(c *TTFBConfig) { c.TLS = tls.VersionTLS11 }, "tls: must be 1.2 or 1.3, got 0x302"},
		{func(c *TTFBConfig) { c.Duration = 0 }, "duration must be > 0"},
	} {
		c := ok
		tc.change(&c)
		if _, err := RunTTFB(context.Background(), c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RunTTFB: %v, want %q", err, tc.want)
		}
	}
}

func syntheticRTT() []RTTResult {
	var out []RTTResult
	for _, rtt := range []time.Duration{50 * time.Millisecond, 150 * time.Millisecond} {
		r := float64(rtt) / float64(time.Millisecond)
		for _, v := range []string{"1.2", "1.3"} {
			fullRTTs := 4.0
			if v == "1.3" {
				fullRTTs = 3
			}
			for _, sc := range []struct {
				id, label string
				resumed   int
			}{{"own", "1: own default keys", 33}, {"ticketkeys", "4: ticketkeys (Vault)", 99}} {
				x := RTTResult{Scenario: sc.id, Label: sc.label, TLS: v, Cert: "ECDSA-P256", RTT: rtt, Connections: 100}
				var conns []TTFBConn
				for i := 0; i < 100; i++ {
					c := TTFBConn{Offered: true, Resumed: i < sc.resumed, TTFB: time.Duration((fullRTTs*r + float64(i%5)) * float64(time.Millisecond))}
					if c.Resumed {
						c.TTFB = time.Duration((3*r + float64(i%5)) * float64(time.Millisecond))
					}
					conns = append(conns, c)
				}
				conns = append(conns, TTFBConn{Warmup: true, TTFB: time.Hour}, TTFBConn{Aborted: true, Err: "cut"})
				x.fill(conns)
				out = append(out, x)
			}
		}
	}
	return out
}

func TestRTTFillAndSavings(t *testing.T) {
	res := syntheticRTT()
	x := res[0] // 50ms, TLS 1.2, own keys
	if x.Connections != 100 || x.Resumed != 33 || x.Full.N != 67 || x.Resumption.N != 33 || x.Errors != 0 {
		t.Fatalf("fill: %+v, want 100 connections (warm-up and cut ones excluded), 33 resumed", x)
	}
	if x.Full.P50 < 200*time.Millisecond || x.Resumption.P50 >= 160*time.Millisecond {
		t.Fatalf("fill: full p50 %s resumed p50 %s", x.Full.P50, x.Resumption.P50)
	}
	lines := strings.Join(rttSavingsLines(res), "\n")
	for _, want := range []string{
		"TLS 1.2 at 50ms RTT: full handshake p50 202 ms (4.0 RTT), resumed p50 152 ms (3.0 RTT): full − resumed = 50 ms (1.00 RTT) per new connection; resumption saves a round trip.",
		"TLS 1.3 at 150ms RTT: full handshake p50 452 ms (3.0 RTT), resumed p50 452 ms (3.0 RTT): full − resumed = 0 ms (0.00 RTT) per new connection; resumption saves no round trip, only CPU.",
	} {
		if !strings.Contains(lines, want) {
			t.Errorf("savings lack %q:\n%s", want, lines)
		}
	}
	sc := strings.Join(rttScenarioLines(res), "\n")
	if !strings.Contains(sc, "TLS 1.2 at 150ms RTT, all connections: own keys p50 601 ms") || !strings.Contains(sc, "ticketkeys p50 452 ms") {
		t.Errorf("scenario lines:\n%s", sc)
	}
}

func TestReportRTTSectionAndPlot(t *testing.T) {
	res := syntheticRTT()
	res = append(res, RTTResult{Scenario: "own", Label: "1: own default keys", TLS: "1.3", RTT: 50 * time.Millisecond, Err: "no measured connection"})
	rep := &Report{RTT: res, RTTSettings: RTTSettings{RTTs: []time.Duration{50 * time.Millisecond, 150 * time.Millisecond}, Users: 64, Concurrency: 16, Cert: "ECDSA-P256"}, TTFBPlotFile: "ttfb.png"}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"## Time to first byte over a round trip", "| 150ms | 1.2 | 4: ticketkeys (Vault) | 100 | 99.0% | 0 |",
		"failed: no measured connection", "resumption saves a round trip", "saves only the certificate signature", "(ttfb.png)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	var img bytes.Buffer
	if err := WriteTTFBPlot(&img, res); err != nil {
		t.Fatal(err)
	}
	m, err := png.Decode(&img)
	if err != nil {
		t.Fatal(err)
	}
	if b := m.Bounds(); b.Dx() < 800 || b.Dy() < 500 {
		t.Errorf("plot is %v, want 2 x 2 panels", b)
	}
	if err := WriteTTFBPlot(&img, nil); err == nil {
		t.Error("WriteTTFBPlot(nil) drew a plot without data")
	}
}
