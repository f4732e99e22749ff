package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// LatencyProxy forwards TCP connections from a listener on 127.0.0.1 to one
// upstream address on the loopback interface, delaying each direction by
// half a round trip, so that a client on this machine sees the network
// delays of a server RTT away (this machine has no netem).
//
// Per connection there is one reader and one writer per direction. The
// reader stamps every chunk it reads with its delivery time (read time +
// RTT/2) and queues it; the writer writes the chunks in queue order, each not
// before its stamp. So bytes keep their order and their spacing in time per
// direction, and a direction's queue is bounded (QueueChunks chunks of at
// most ChunkBytes): when it is full the reader stops reading, and TCP flow
// control pushes back on the sender, as a slow link would.
//
// The kernel completes the TCP handshake at loopback speed, before the proxy
// sees the connection. To stand in for the round trip of SYN and SYN-ACK,
// the client's bytes are delivered no earlier than one RTT after the accept
// plus RTT/2, which is when they would arrive if the client could only send
// after its SYN-ACK came back. A client timing from the start of its dial to
// the first response byte therefore sees the full-network time to first
// byte, although its connect() returns at once.
//
// A half close (EOF) is forwarded, delayed like data, with CloseWrite; a
// read or write error closes both sides. Close stops the listener, closes
// every connection and waits for all goroutines.
type LatencyProxy struct {
	rtt      time.Duration
	upstream string
	ln       net.Listener
	opts     ProxyOptions

	wg   sync.WaitGroup
	done chan struct{} // closed by Close: writers stop waiting

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	// lateness of deliveries (actual write time - delivery stamp), bounded.
	lateness []time.Duration

	accepted    atomic.Int64
	queuedBytes atomic.Int64
	peakQueued  atomic.Int64
}

// ProxyOptions bound a LatencyProxy's buffering. Zero fields take the
// defaults given.
type ProxyOptions struct {
	// ChunkBytes is the largest chunk read at once. Zero means 16 KiB.
	ChunkBytes int
	// QueueChunks is how many chunks one direction of one connection may
	// hold in flight. Zero means 64 (1 MiB at the default chunk size).
	QueueChunks int
	// LatenessSamples bounds the delivery lateness samples kept for
	// Lateness. Zero means 100000.
	LatenessSamples int
}

// proxyChunk is one read of a direction, to be written at deliverAt; eof
// marks the end of the direction (err is the read error, nil for EOF).
type proxyChunk struct {
	data      []byte
	deliverAt time.Time
	eof       bool
	err       error
}

// StartLatencyProxy listens on 127.0.0.1 (a port the kernel picks) and
// forwards to upstream, which must be a loopback host:port, with rtt/2 of
// delay in each direction.
func StartLatencyProxy(upstream string, rtt time.Duration, opts ProxyOptions) (*LatencyProxy, error) {
	host, _, err := net.SplitHostPort(upstream)
	if err != nil {
		return nil, fmt.Errorf("latency proxy: upstream: want host:port, got %q: %w", upstream, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("latency proxy: upstream: must be a loopback IP address (benchmarks stay on this machine), got %q", upstream)
	}
	if rtt < 0 || rtt > time.Minute {
		return nil, fmt.Errorf("latency proxy: rtt: must be 0..1m, got %s", rtt)
	}
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = 16 << 10
	}
	if opts.QueueChunks <= 0 {
		opts.QueueChunks = 64
	}
	if opts.LatenessSamples <= 0 {
		opts.LatenessSamples = 100000
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("latency proxy: listen on 127.0.0.1:0: %w", err)
	}
	p := &LatencyProxy{rtt: rtt, upstream: upstream, ln: ln, opts: opts, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address (127.0.0.1:port).
func (p *LatencyProxy) Addr() string { return p.ln.Addr().String() }

// RTT is the round trip the proxy adds.
func (p *LatencyProxy) RTT() time.Duration { return p.rtt }

// MaxQueuedBytes is the most bytes one direction of one connection can
// hold: the queue, the chunk its reader is queueing and the chunk its writer
// is writing.
func (p *LatencyProxy) MaxQueuedBytes() int { return p.opts.ChunkBytes * (p.opts.QueueChunks + 2) }

// PeakQueuedBytes is the largest number of bytes held in the queues of all
// connections at once so far.
func (p *LatencyProxy) PeakQueuedBytes() int64 { return p.peakQueued.Load() }

// Accepted is the number of connections accepted so far.
func (p *LatencyProxy) Accepted() int64 { return p.accepted.Load() }

// Lateness returns the p50, p99 and maximum of how late chunks were written
// after their delivery time (timer and scheduling delay on a busy machine),
// over the samples kept.
func (p *LatencyProxy) Lateness() (p50, p99, maxLate time.Duration) {
	p.mu.Lock()
	d := append([]time.Duration(nil), p.lateness...)
	p.mu.Unlock()
	if len(d) == 0 {
		return 0, 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return percentile(d, 50), percentile(d, 99), d[len(d)-1]
}

// Close stops accepting, closes every open connection and waits until all
// of the proxy's goroutines have ended. It is safe to call more than once.
func (p *LatencyProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	close(p.done)
	err := p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track adds c to the open connections; false when the proxy is closed.
func (p *LatencyProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *LatencyProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *LatencyProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		accepted := time.Now()
		p.accepted.Add(1)
		if !p.track(down) {
			down.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(down, accepted)
	}
}

// serve forwards one connection until both directions have ended.
func (p *LatencyProxy) serve(down net.Conn, accepted time.Time) {
	defer p.wg.Done()
	defer p.untrack(down)
	defer down.Close()
	up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		return // the client sees the connection close
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	defer up.Close()

	// abort closes both sides once: an error in one direction ends the
	// other (its reader and writer fail on the closed connections).
	var abortOnce sync.Once
	abort := func() {
		abortOnce.Do(func() {
			down.Close()
			up.Close()
		})
	}
	// The client's first bytes wait for the simulated SYN/SYN-ACK round
	// trip; the server's bytes only wait half a round trip.
	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() { defer dirs.Done(); p.pipe(down, up, accepted.Add(p.rtt), abort) }()
	go func() { defer dirs.Done(); p.pipe(up, down, time.Time{}, abort) }()
	dirs.Wait()
}

// pipe forwards src to dst: a reader goroutine queues stamped chunks, this
// goroutine writes them at their time. Bytes read before notBefore are
// stamped as if read at notBefore.
func (p *LatencyProxy) pipe(src, dst net.Conn, notBefore time.Time, abort func()) {
	queue := make(chan proxyChunk, p.opts.QueueChunks)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(queue)
		for {
			buf := make([]byte, p.opts.ChunkBytes)
			n, err := src.Read(buf)
			now := time.Now()
			if now.Before(notBefore) {
				now = notBefore
			}
			at := now.Add(p.rtt / 2)
			if n > 0 {
				p.addQueued(int64(n))
				select {
				case queue <- proxyChunk{data: buf[:n], deliverAt: at}:
				case <-stop:
					p.addQueued(-int64(n))
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				select {
				case queue <- proxyChunk{eof: true, err: err, deliverAt: at}:
				case <-stop:
				}
				return
			}
		}
	}()
	defer func() {
		close(stop)
		<-readerDone
		for c := range queue { // release what the writer never wrote
			p.addQueued(-int64(len(c.data)))
		}
	}()
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for c := range queue {
		if wait := time.Until(c.deliverAt); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-p.done:
				abort()
				return
			}
		}
		p.recordLateness(time.Since(c.deliverAt))
		if c.eof {
			if c.err != nil {
				abort()
				return
			}
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				if cw.CloseWrite() == nil {
					return
				}
			}
			abort()
			return
		}
		_, err := dst.Write(c.data)
		p.addQueued(-int64(len(c.data)))
		if err != nil {
			abort()
			return
		}
	}
}

func (p *LatencyProxy) addQueued(n int64) {
	v := p.queuedBytes.Add(n)
	for {
		peak := p.peakQueued.Load()
		if v <= peak || p.peakQueued.CompareAndSwap(peak, v) {
			return
		}
	}
}

func (p *LatencyProxy) recordLateness(d time.Duration) {
	p.mu.Lock()
	if len(p.lateness) < p.opts.LatenessSamples {
		p.lateness = append(p.lateness, max(d, 0))
	}
	p.mu.Unlock()
}
