package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/resumption"
)

// NginxRun is one nginx resumption run: a set-up and a TLS version, load
// through the random balancer while the keys rotate. ServerCPU (and so
// CPUPerConn) is the nodes' masters plus all their workers, exited ones
// included; WorkerCPU and MasterCPU split it.
type NginxRun struct {
	RunResult
	Setup     string        `json:"setup"`
	Builds    []string      `json:"builds"`
	WorkerCPU time.Duration `json:"worker_cpu_ns"`
	MasterCPU time.Duration `json:"master_cpu_ns"`
	// Reloads counts the reloads of the measured window (every node
	// reloaded once per rotation in the reload set-up).
	Reloads int `json:"reloads"`
}

// WorkerCPUPerConn is WorkerCPU divided by the connections (0 if none).
func (r NginxRun) WorkerCPUPerConn() time.Duration {
	if r.Connections == 0 {
		return 0
	}
	return r.WorkerCPU / time.Duration(r.Connections)
}

// MasterCPUPerConn is MasterCPU divided by the connections (0 if none).
func (r NginxRun) MasterCPUPerConn() time.Duration {
	if r.Connections == 0 {
		return 0
	}
	return r.MasterCPU / time.Duration(r.Connections)
}

// NginxLoadSpec is the load of one NginxRun.
type NginxLoadSpec struct {
	TLS uint16
	// Warmup is uncounted load (no rotation); Duration the measured load,
	// with a rotation every RotateEvery.
	Warmup, Duration, RotateEvery time.Duration
	Load                          Load
	Seed                          int64
}

// RunNginxLoad drives the resumption load (internal/resumption: a random
// node per connection) against c's nodes and rotates the keys every
// spec.RotateEvery during the measured part.
func RunNginxLoad(ctx context.Context, c *NginxCluster, spec NginxLoadSpec) (NginxRun, error) {
	res := NginxRun{Setup: c.Spec.Setup, RunResult: RunResult{Scenario: "nginx-" + c.Spec.Setup, Label: NginxSetupLabel(c.Spec.Setup),
		TLS: TLSName(spec.TLS), Cert: c.Spec.Cert.Kind, Nodes: len(c.Nodes), Rotates: c.Spec.Setup != NginxOwn}}
	for _, b := range c.Spec.Builds {
		res.Builds = append(res.Builds, b.Name+" "+b.Version)
	}
	type loadOut struct {
		res resumption.Result
		err error
	}
	loaded := make(chan loadOut, 1)
	go func() {
		out, err := resumption.Run(ctx, resumption.Config{
			Addrs: c.Addrs, ServerName: c.Spec.Cert.ServerName, RootCAs: c.Spec.Cert.Pool,
			MinVersion: spec.TLS, MaxVersion: spec.TLS,
			Users: spec.Load.Users, Concurrency: spec.Load.Concurrency, MaxConnections: spec.Load.MaxConnections,
			MaxDuration: spec.Warmup + spec.Duration, Interval: spec.Load.Interval, Seed: spec.Seed,
		})
		loaded <- loadOut{out, err}
	}()
	warm := time.NewTimer(spec.Warmup)
	select {
	case <-warm.C:
	case <-ctx.Done():
		warm.Stop()
	}
	cpu0, err0 := c.CPU()
	started := Sample{Time: time.Now()}
	rctx, stopRotating := context.WithCancel(ctx)
	rotErr := c.RotateEvery(rctx, spec.RotateEvery)
	lo := <-loaded
	stopRotating()
	rerr := <-rotErr
	cpu1, err1 := c.CPU()
	if err := errors.Join(err0, err1, lo.err, rerr); err != nil {
		return res, err
	}
	d := cpu1.Sub(cpu0)
	finished := Sample{Time: time.Now(), CPUus: (d.Workers + d.Master).Microseconds()}
	res.fill(lo.res, started, finished)
	res.WorkerCPU, res.MasterCPU = d.Workers, d.Master
	var rot []time.Time
	for _, t := range c.Rotations() {
		if !t.After(res.End) {
			rot = append(rot, t)
		}
	}
	res.Rotations = relative(res.Start, rot)
	if c.Spec.Setup == NginxReload {
		res.Reloads = len(res.Rotations) * len(c.Nodes)
	}
	return res, nil
}

// RunNginxTTFB measures the time to first byte through a latency proxy in
// front of every node (LatencyProxy, as the Go rows), at each RTT, while
// the keys rotate every rotateEvery. spec.Scenario only names the rows.
func RunNginxTTFB(ctx context.Context, c *NginxCluster, spec RTTSpec, rotateEvery time.Duration) []RTTResult {
	rctx, stop := context.WithCancel(ctx)
	rotErr := c.RotateEvery(rctx, rotateEvery)
	var out []RTTResult
	for i, rtt := range spec.RTTs {
		if ctx.Err() != nil {
			break
		}
		res := RTTResult{Scenario: spec.Scenario.ID, Label: spec.Scenario.Label, TLS: TLSName(spec.TLS), Cert: spec.Cert.Kind, RTT: rtt}
		if err := measureRTT(ctx, c.Addrs, spec, rtt, spec.Seed+int64(i)*1000, &res); err != nil {
			res.Err = err.Error()
		}
		out = append(out, res)
	}
	stop()
	if err := <-rotErr; err != nil && len(out) > 0 {
		out[len(out)-1].Err = "rotation: " + err.Error()
	}
	return out
}

// NginxLongResult is what one rotation did to long-lived connections:
// idle HTTP/1.1 keep-alive connections and slow chunked responses (a
// stream, as a WebSocket or server-sent events would hold) open on every
// node across it.
type NginxLongResult struct {
	Setup string `json:"setup"`
	Label string `json:"label"`
	// ShutdownTimeout is worker_shutdown_timeout (0: unset).
	ShutdownTimeout time.Duration `json:"worker_shutdown_timeout_ns"`
	// Observe is how long after the rotation the processes were watched.
	Observe time.Duration `json:"observe_ns"`
	// KeepAlive connections were open before the rotation; KeepAliveEnded
	// of them failed a request sent at the end of Observe.
	KeepAlive      int `json:"keepalive"`
	KeepAliveEnded int `json:"keepalive_ended"`
	// Streams were open before the rotation; StreamsEnded of them were
	// ended by the server within Observe, the last StreamsLastEnd after
	// the rotation.
	Streams        int           `json:"streams"`
	StreamsEnded   int           `json:"streams_ended"`
	StreamsLastEnd time.Duration `json:"streams_last_end_ns"`
	// OldWorkers are the workers a rotation replaced (a reload's old
	// generation; none when the workers stay). OldWorkersAtEnd were still
	// alive after Observe. Linger is the rotation to the last old worker's
	// exit (Observe when some were still alive).
	OldWorkers      int           `json:"old_workers"`
	OldWorkersAtEnd int           `json:"old_workers_at_end"`
	Linger          time.Duration `json:"linger_ns"`
	// OldRSSPeak is the largest sum of the old workers' resident memory
	// seen while they lingered; NewRSS the new (or unchanged) workers' at
	// the end, for scale.
	OldRSSPeak int64  `json:"old_rss_peak_bytes"`
	NewRSS     int64  `json:"new_rss_bytes"`
	Err        string `json:"error,omitempty"`
}

// longConn is one client connection of RunNginxLong.
type longConn struct {
	conn net.Conn
	br   *bufio.Reader
	// stream only: set by the reader when the server ended the stream.
	mu    sync.Mutex
	ended time.Time
}

// RunNginxLong opens perNode keep-alive connections and perNode streams on
// every node, rotates once, watches the nodes' workers every 100 ms for
// observe, then sends a request on every keep-alive connection and closes
// everything.
func RunNginxLong(ctx context.Context, c *NginxCluster, perNode int, observe time.Duration) NginxLongResult {
	res := NginxLongResult{Setup: c.Spec.Setup, Label: NginxSetupLabel(c.Spec.Setup), ShutdownTimeout: c.Spec.ShutdownTimeout, Observe: observe}
	cfg := &tls.Config{ServerName: c.Spec.Cert.ServerName, RootCAs: c.Spec.Cert.Pool, MinVersion: tls.VersionTLS13}
	var keep, streams []*longConn
	var closing sync.Once
	closingCh := make(chan struct{})
	var readers sync.WaitGroup
	defer func() {
		closing.Do(func() { close(closingCh) })
		for _, lc := range append(keep, streams...) {
			lc.conn.Close()
		}
		readers.Wait()
	}()
	dial := func(addr, path string) (*longConn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
		if err != nil {
			return nil, err
		}
		lc := &longConn{conn: conn, br: bufio.NewReader(conn)}
		if err := lc.get(path, path == "/"); err != nil {
			conn.Close()
			return nil, err
		}
		return lc, nil
	}
	for _, addr := range c.Addrs {
		for range perNode {
			lc, err := dial(addr, "/")
			if err != nil {
				res.Err = "keep-alive connection: " + err.Error()
				return res
			}
			keep = append(keep, lc)
			sc, err := dial(addr, "/stream")
			if err != nil {
				res.Err = "stream: " + err.Error()
				return res
			}
			streams = append(streams, sc)
			readers.Add(1)
			go func() {
				defer readers.Done()
				_ = sc.conn.SetReadDeadline(time.Now().Add(observe + 30*time.Second))
				_, err := io.Copy(io.Discard, sc.br)
				select {
				case <-closingCh:
					return // our own close
				default:
				}
				_ = err
				sc.mu.Lock()
				sc.ended = time.Now()
				sc.mu.Unlock()
			}()
		}
	}
	res.KeepAlive, res.Streams = len(keep), len(streams)
	before := map[int][]int{} // node -> workers before the rotation
	for i, p := range c.Nodes {
		before[i] = LiveChildren(p.MasterPID)
	}
	if err := c.Rotate(); err != nil {
		res.Err = err.Error()
		return res
	}
	rotated := time.Now()
	gone := map[int]time.Duration{}
	old := map[int]bool{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Since(rotated) < observe && ctx.Err() == nil {
		<-tick.C
		var rss int64
		for i, p := range c.Nodes {
			now := LiveChildren(p.MasterPID)
			replaced := false
			for _, pid := range now {
				if !slices.Contains(before[i], pid) {
					replaced = true // a new generation exists: the old one is draining
				}
			}
			for _, pid := range before[i] {
				if !replaced && !old[pid] {
					continue
				}
				old[pid] = true
				if slices.Contains(now, pid) {
					if n, err := ReadRSS(pid); err == nil {
						rss += n
					}
				} else if _, ok := gone[pid]; !ok {
					gone[pid] = time.Since(rotated)
				}
			}
		}
		res.OldRSSPeak = max(res.OldRSSPeak, rss)
	}
	res.OldWorkers = len(old)
	for pid := range old {
		if g, ok := gone[pid]; ok {
			res.Linger = max(res.Linger, g)
		} else {
			res.OldWorkersAtEnd++
		}
	}
	if res.OldWorkersAtEnd > 0 {
		res.Linger = observe
	}
	for _, p := range c.Nodes {
		for _, pid := range LiveChildren(p.MasterPID) {
			if old[pid] {
				continue
			}
			if n, err := ReadRSS(pid); err == nil {
				res.NewRSS += n
			}
		}
	}
	for _, sc := range streams {
		sc.mu.Lock()
		if !sc.ended.IsZero() {
			res.StreamsEnded++
			res.StreamsLastEnd = max(res.StreamsLastEnd, sc.ended.Sub(rotated))
		}
		sc.mu.Unlock()
	}
	for _, lc := range keep {
		_ = lc.conn.SetDeadline(time.Now().Add(3 * time.Second))
		if err := lc.get("/", true); err != nil {
			res.KeepAliveEnded++
		}
	}
	return res
}

// get sends one GET on the connection; with readBody it reads the whole
// response (keep-alive), else only the status line and headers (a stream).
func (lc *longConn) get(path string, readBody bool) error {
	if _, err := io.WriteString(lc.conn, "GET "+path+" HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(lc.br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if readBody {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	return nil
}
