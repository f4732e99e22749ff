package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// upstream runs handle for every connection accepted on 127.0.0.1 until the
// test ends.
func upstream(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func startProxy(t *testing.T, up string, rtt time.Duration, opts ProxyOptions) *LatencyProxy {
	t.Helper()
	p, err := StartLatencyProxy(up, rtt, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestLatencyProxyRejectsBadSettings(t *testing.T) {
	for _, tc := range []struct {
		upstream string
		rtt      time.Duration
		want     string
	}{
		{"10.0.0.1:80", 50 * time.Millisecond, `upstream: must be a loopback IP address (benchmarks stay on this machine), got "10.0.0.1:80"`},
		{"localhost:80", 50 * time.Millisecond, `upstream: must be a loopback IP address`},
		{"127.0.0.1", 50 * time.Millisecond, `upstream: want host:port, got "127.0.0.1"`},
		{"127.0.0.1:80", -time.Millisecond, "rtt: must be 0..1m, got -1ms"},
	} {
		p, err := StartLatencyProxy(tc.upstream, tc.rtt, ProxyOptions{})
		if err == nil {
			p.Close()
			t.Errorf("StartLatencyProxy(%q, %s): accepted", tc.upstream, tc.rtt)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("StartLatencyProxy(%q, %s): %v, want %q", tc.upstream, tc.rtt, err, tc.want)
		}
	}
}

// TestLatencyProxyDelaysEachDirection: a request/response exchange on a new
// connection takes at least two round trips from the start of the dial (the
// simulated TCP handshake, then the exchange), the next one at least one;
// and each direction alone is delayed by at least half a round trip.
func TestLatencyProxyDelaysEachDirection(t *testing.T) {
	const rtt = 80 * time.Millisecond
	arrivals := make(chan time.Time, 4)
	up := upstream(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			now := time.Now()
			arrivals <- now
			// The reply carries the instant it was sent.
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(now.UnixNano()))
			if _, err := c.Write(b[:]); err != nil {
				return
			}
		}
	})
	p := startProxy(t, up, rtt, ProxyOptions{})

	dialStart := time.Now()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, wantRTTs := range []int{2, 1} {
		sent := time.Now()
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatal(err)
		}
		var b [8]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatal(err)
		}
		got := time.Now()
		replySent := time.Unix(0, int64(binary.BigEndian.Uint64(b[:])))
		arrived := <-arrivals

		from := sent
		if i == 0 {
			from = dialStart
		}
		if d := got.Sub(from); d < time.Duration(wantRTTs)*rtt {
			t.Errorf("exchange %d: %s from the start, want >= %d round trips (%s)", i+1, d, wantRTTs, time.Duration(wantRTTs)*rtt)
		}
		if d := arrived.Sub(sent); d < rtt/2 {
			t.Errorf("exchange %d: request reached the upstream %s after it was written, want >= rtt/2 = %s", i+1, d, rtt/2)
		}
		if d := got.Sub(replySent); d < rtt/2 {
			t.Errorf("exchange %d: reply reached the client %s after the upstream wrote it, want >= rtt/2 = %s", i+1, d, rtt/2)
		}
	}
	if p.Accepted() != 1 {
		t.Errorf("Accepted() = %d, want 1", p.Accepted())
	}
	if p50, _, _ := p.Lateness(); p50 < 0 {
		t.Errorf("lateness p50 %s < 0", p50)
	}
}

// TestLatencyProxyKeepsOrderAndTiming: many small writes spaced in time
// arrive complete, in order, and each one no earlier than half a round trip
// after it was written.
func TestLatencyProxyKeepsOrderAndTiming(t *testing.T) {
	const (
		rtt      = 40 * time.Millisecond
		messages = 120
	)
	type arrival struct {
		seq  uint32
		sent time.Time
		at   time.Time
	}
	got := make(chan arrival, messages)
	errc := make(chan error, 1)
	up := upstream(t, func(c net.Conn) {
		var b [12]byte
		for {
			if _, err := io.ReadFull(c, b[:]); err != nil {
				if !errors.Is(err, io.EOF) {
					errc <- err
				}
				close(got)
				return
			}
			got <- arrival{seq: binary.BigEndian.Uint32(b[:4]), sent: time.Unix(0, int64(binary.BigEndian.Uint64(b[4:]))), at: time.Now()}
		}
	})
	p := startProxy(t, up, rtt, ProxyOptions{ChunkBytes: 64})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// Wait out the simulated TCP handshake, so that every message is
	// delayed by exactly the one-way time.
	time.Sleep(rtt)
	for i := 0; i < messages; i++ {
		var b [12]byte
		binary.BigEndian.PutUint32(b[:4], uint32(i))
		binary.BigEndian.PutUint64(b[4:], uint64(time.Now().UnixNano()))
		if _, err := c.Write(b[:]); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	n := 0
	for a := range got {
		if a.seq != uint32(n) {
			t.Fatalf("message %d arrived as number %d: order not kept", n, a.seq)
		}
		if d := a.at.Sub(a.sent); d < rtt/2 {
			t.Errorf("message %d arrived %s after it was written, want >= %s", n, d, rtt/2)
		}
		n++
	}
	select {
	case err := <-errc:
		t.Fatalf("upstream read: %v", err)
	default:
	}
	if n != messages {
		t.Fatalf("%d of %d messages arrived", n, messages)
	}
	c.Close()
}

// TestLatencyProxyQueueIsBounded: against an upstream that never reads, the
// proxy holds at most its bound and the client's writes stop (TCP flow
// control) instead of the proxy buffering without end.
func TestLatencyProxyQueueIsBounded(t *testing.T) {
	hold := make(chan struct{})
	up := upstream(t, func(c net.Conn) { <-hold })
	defer close(hold)
	opts := ProxyOptions{ChunkBytes: 4 << 10, QueueChunks: 4}
	p := startProxy(t, up, 10*time.Millisecond, opts)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const limit = 256 << 20
	buf := make([]byte, 64<<10)
	written := 0
	c.SetWriteDeadline(time.Now().Add(1500 * time.Millisecond))
	for written < limit {
		n, err := c.Write(buf)
		written += n
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("write: %v, want a timeout once the buffers are full", err)
			}
			break
		}
	}
	if written >= limit {
		t.Fatalf("the client wrote %d bytes to an upstream that never reads: nothing pushed back", written)
	}
	if peak, bound := p.PeakQueuedBytes(), p.MaxQueuedBytes(); peak > int64(bound) || peak == 0 {
		t.Fatalf("peak queued %d bytes, want 0 < peak <= %d (%d chunks of %d + 2)", peak, bound, opts.QueueChunks, opts.ChunkBytes)
	}
	t.Logf("client wrote %d bytes before blocking (kernel buffers + proxy queue); proxy peak %d of %d", written, p.PeakQueuedBytes(), p.MaxQueuedBytes())
}

// TestLatencyProxyForwardsHalfClose: a client's EOF reaches the upstream
// (delayed), the upstream's answer and its EOF come back.
func TestLatencyProxyForwardsHalfClose(t *testing.T) {
	up := upstream(t, func(c net.Conn) {
		b, err := io.ReadAll(c) // until the client's half close
		if err != nil {
			return
		}
		io.WriteString(c, "got "+string(b))
	})
	p := startProxy(t, up, 20*time.Millisecond, ProxyOptions{})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "got hello" {
		t.Fatalf("read %q, %v; want \"got hello\" then EOF", b, err)
	}
}

// TestLatencyProxyCloseEndsEverything: Close with connections open (one
// idle, one mid-delay) returns, the clients see their connections end, new
// dials fail, and no goroutine of the proxy is left.
func TestLatencyProxyCloseEndsEverything(t *testing.T) {
	up := upstream(t, func(c net.Conn) { io.Copy(c, c) })
	before := runtime.NumGoroutine()
	p, err := StartLatencyProxy(up, 200*time.Millisecond, ProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	io.WriteString(clients[1], "in flight") // waits in the queue
	waitFor(t, func() bool { return p.Accepted() == 2 })
	time.Sleep(20 * time.Millisecond)

	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 16)); err == nil || isTimeout(err) {
			t.Errorf("client %d: read %d bytes, %v after Close; want the connection ended", i, n, err)
		}
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("dial %s after Close succeeded", p.Addr())
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestLatencyProxyUnreachableUpstream: when the upstream refuses, the
// client's connection is closed (not left hanging).
func TestLatencyProxyUnreachableUpstream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := startProxy(t, addr, 10*time.Millisecond, ProxyOptions{})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read: %v, want the connection closed", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
