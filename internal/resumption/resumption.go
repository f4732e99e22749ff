// Package resumption is a bounded load client that measures TLS session
// resumption across several servers that should share ticket keys.
//
// Each connection goes to a server picked at random from Config.Addrs on
// behalf of a simulated user picked at random; every user has its own
// tls.ClientSessionCache, and all servers are dialled with the same
// ServerName, so a ticket issued by one server is offered to whichever server
// the user reaches next. A connection "offers" a ticket when the user's cache
// held a session for the name at handshake time, and "resumes" when
// tls.ConnectionState.DidResume is true. The share Resumed/Offered is the
// cross-node resumption rate.
//
// Every connection sends one HTTP/1.1 GET with "Connection: close" and reads
// the response to the end, so TLS 1.3 tickets (sent after the handshake) reach
// the cache. This works against Go servers, nginx and HAProxy alike.
//
// Run is always bounded: by MaxConnections, by MaxDuration and by the context,
// whichever ends first.
package resumption

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/ctxend"
)

// Config describes one load run. Zero values are documented per field.
type Config struct {
	// Addrs are the servers as host:port; each connection picks one at
	// random. Required, at least one.
	Addrs []string
	// ServerName is sent as SNI and verified against the certificate; it is
	// also the session-cache key, so it must be the same for all servers.
	// Required.
	ServerName string
	// RootCAs verifies the servers' certificates. Required.
	RootCAs *x509.CertPool
	// MinVersion and MaxVersion pin the TLS version (tls.VersionTLS12 or
	// tls.VersionTLS13). Zero means crypto/tls's default.
	MinVersion, MaxVersion uint16
	// Users is the number of simulated users, each with its own session
	// cache. Zero means 1.
	Users int
	// Concurrency is the number of connections in flight at once. Zero means 1.
	Concurrency int
	// MaxConnections bounds the total number of connections. Required (> 0).
	MaxConnections int
	// MaxDuration bounds the run's wall time. Required (> 0).
	MaxDuration time.Duration
	// Interval is the pause each worker makes between two connections. Zero
	// means none.
	Interval time.Duration
	// Path is the HTTP path to GET. Empty means "/".
	Path string
	// ConnTimeout bounds one connection (dial, handshake, request and
	// response). Zero means 5 seconds.
	ConnTimeout time.Duration
	// Seed seeds the choice of users and servers, so runs are repeatable.
	Seed int64
}

// Conn records one connection.
type Conn struct {
	// Start is when the connection was dialled; End when it finished.
	Start, End time.Time
	// Addr is the index in Config.Addrs of the server dialled.
	Addr int
	// User is the simulated user.
	User int
	// Offered is true when the user's cache held a ticket at handshake time.
	Offered bool
	// Resumed is ConnectionState.DidResume.
	Resumed bool
	// Version is the negotiated TLS version (0 on handshake failure).
	Version uint16
	// Handshake is the handshake duration.
	Handshake time.Duration
	// HandshakeErr is non-empty when the dial or handshake failed.
	HandshakeErr string
	// RequestErr is non-empty when the HTTP exchange failed or the status
	// was not 2xx after a successful handshake.
	RequestErr string
	// Aborted is true when the end of the run (MaxDuration or the caller's
	// context) cut the connection short. Aborted connections are in Conns
	// but counted in no total: they say nothing about the servers.
	Aborted bool
}

// SecondStats counts connections that started in one second of the run.
type SecondStats struct {
	// Start is the beginning of the second.
	Start time.Time
	// Connections, HandshakeFailures, RequestFailures, Offered and Resumed
	// are counted as in Result.
	Connections, HandshakeFailures, RequestFailures, Offered, Resumed int
}

// Result is the outcome of a run.
type Result struct {
	// Start and End bound the run.
	Start, End time.Time
	// Connections is the number of connections attempted, not counting
	// Aborted ones.
	Connections int
	// Aborted counts connections cut short by the end of the run.
	Aborted int
	// HandshakeFailures counts dial or handshake errors.
	HandshakeFailures int
	// RequestFailures counts failed HTTP exchanges after a good handshake.
	RequestFailures int
	// Offered counts connections whose user offered a ticket.
	Offered int
	// Resumed counts resumed connections.
	Resumed int
	// Seconds holds per-second counts, by connection start, from Start.
	Seconds []SecondStats
	// Latencies holds the handshake duration of every successful handshake,
	// in connection order.
	Latencies []time.Duration
	// Conns holds every connection in start order.
	Conns []Conn
	// StoppedBy says which bound ended the run: "max_connections",
	// "max_duration" or "context".
	StoppedBy string
}

// ResumeRate is Resumed / Offered (0 when nothing was offered).
func (r Result) ResumeRate() float64 {
	if r.Offered == 0 {
		return 0
	}
	return float64(r.Resumed) / float64(r.Offered)
}

// Between counts the connections that started in [from, to).
func (r Result) Between(from, to time.Time) SecondStats {
	s := SecondStats{Start: from}
	for _, c := range r.Conns {
		if c.Aborted || c.Start.Before(from) || !c.Start.Before(to) {
			continue
		}
		s.add(c)
	}
	return s
}

// LatencyPercentile returns the p-th percentile (0..100) of the handshake
// latencies, or 0 when there are none.
func (r Result) LatencyPercentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	l := append([]time.Duration(nil), r.Latencies...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	i := int(float64(len(l)-1) * p / 100)
	if i < 0 {
		i = 0
	}
	if i >= len(l) {
		i = len(l) - 1
	}
	return l[i]
}

// String summarises the result for test logs (no key material is involved).
func (r Result) String() string {
	return fmt.Sprintf("connections=%d aborted_at_end=%d handshake_failures=%d request_failures=%d offered=%d resumed=%d rate=%.4f duration=%s stopped_by=%s",
		r.Connections, r.Aborted, r.HandshakeFailures, r.RequestFailures, r.Offered, r.Resumed, r.ResumeRate(),
		r.End.Sub(r.Start).Round(time.Millisecond), r.StoppedBy)
}

func (s *SecondStats) add(c Conn) {
	s.Connections++
	switch {
	case c.HandshakeErr != "":
		s.HandshakeFailures++
	case c.RequestErr != "":
		s.RequestFailures++
	}
	if c.Offered {
		s.Offered++
		if c.Resumed {
			s.Resumed++
		}
	}
}

func (cfg *Config) check() error {
	if len(cfg.Addrs) == 0 {
		return errors.New("resumption: Addrs: at least one address is required, got none")
	}
	if cfg.ServerName == "" {
		return errors.New(`resumption: ServerName: required, got ""`)
	}
	if cfg.RootCAs == nil {
		return errors.New("resumption: RootCAs: required, got nil")
	}
	if cfg.MaxConnections <= 0 {
		return fmt.Errorf("resumption: MaxConnections: must be > 0, got %d", cfg.MaxConnections)
	}
	if cfg.MaxDuration <= 0 {
		return fmt.Errorf("resumption: MaxDuration: must be > 0, got %s", cfg.MaxDuration)
	}
	if cfg.Users < 0 {
		return fmt.Errorf("resumption: Users: must be >= 0, got %d", cfg.Users)
	}
	if cfg.Concurrency < 0 {
		return fmt.Errorf("resumption: Concurrency: must be >= 0, got %d", cfg.Concurrency)
	}
	if cfg.Interval < 0 {
		return fmt.Errorf("resumption: Interval: must be >= 0, got %s", cfg.Interval)
	}
	return nil
}

// trackingCache wraps a user's cache for one connection and records whether
// the handshake found a session in it.
type trackingCache struct {
	inner tls.ClientSessionCache
	hit   bool
}

func (c *trackingCache) Get(key string) (*tls.ClientSessionState, bool) {
	s, ok := c.inner.Get(key)
	if ok && s != nil {
		c.hit = true
	}
	return s, ok
}

func (c *trackingCache) Put(key string, cs *tls.ClientSessionState) { c.inner.Put(key, cs) }

// Run makes connections until MaxConnections, MaxDuration or ctx ends the
// run. It returns an error only for an invalid Config; connection failures
// are counted in the Result.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.check(); err != nil {
		return Result{}, err
	}
	users := max(cfg.Users, 1)
	workers := max(cfg.Concurrency, 1)
	path := cfg.Path
	if path == "" {
		path = "/"
	}
	connTimeout := cfg.ConnTimeout
	if connTimeout == 0 {
		connTimeout = 5 * time.Second
	}
	caches := make([]tls.ClientSessionCache, users)
	for i := range caches {
		caches[i] = tls.NewLRUClientSessionCache(8)
	}
	base := &tls.Config{
		ServerName: cfg.ServerName,
		RootCAs:    cfg.RootCAs,
		MinVersion: cfg.MinVersion,
		MaxVersion: cfg.MaxVersion,
		NextProtos: []string{"http/1.1"},
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()

	var (
		mu        sync.Mutex
		rng       = rand.New(rand.NewSource(cfg.Seed))
		started   int
		conns     []Conn
		stoppedBy string
	)
	// next reserves one connection slot and picks its user and server.
	next := func() (user, addr int, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		if started >= cfg.MaxConnections {
			if stoppedBy == "" {
				stoppedBy = "max_connections"
			}
			return 0, 0, false
		}
		started++
		return rng.Intn(users), rng.Intn(len(cfg.Addrs)), true
	}

	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				user, addr, ok := next()
				if !ok {
					return
				}
				c := one(ctx, base, caches[user], cfg.Addrs[addr], path, connTimeout)
				c.User, c.Addr = user, addr
				// A failure at the run's deadline is the deadline's doing
				// (the socket deadline can fire before ctx.Err is set); it
				// counts from 5 ms before the deadline.
				if (c.HandshakeErr != "" || c.RequestErr != "") && ctxend.Err(ctx, c.End.Add(5*time.Millisecond)) != nil {
					c.Aborted = true
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				if cfg.Interval > 0 {
					t := time.NewTimer(cfg.Interval)
					select {
					case <-ctx.Done():
						t.Stop()
						return
					case <-t.C:
					}
				}
			}
		}()
	}
	wg.Wait()
	end := time.Now()

	if stoppedBy == "" {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && end.Sub(start) >= cfg.MaxDuration {
			stoppedBy = "max_duration"
		} else {
			stoppedBy = "context"
		}
	}
	sort.SliceStable(conns, func(i, j int) bool { return conns[i].Start.Before(conns[j].Start) })
	r := Result{Start: start, End: end, Conns: conns, StoppedBy: stoppedBy}
	for _, c := range conns {
		if c.Aborted {
			r.Aborted++
			continue
		}
		r.Connections++
		switch {
		case c.HandshakeErr != "":
			r.HandshakeFailures++
		case c.RequestErr != "":
			r.RequestFailures++
		}
		if c.HandshakeErr == "" {
			r.Latencies = append(r.Latencies, c.Handshake)
		}
		if c.Offered {
			r.Offered++
			if c.Resumed {
				r.Resumed++
			}
		}
		sec := int(c.Start.Sub(start) / time.Second)
		for len(r.Seconds) <= sec {
			r.Seconds = append(r.Seconds, SecondStats{Start: start.Add(time.Duration(len(r.Seconds)) * time.Second)})
		}
		r.Seconds[sec].add(c)
	}
	return r, nil
}

// one makes one connection and one HTTP exchange.
func one(ctx context.Context, base *tls.Config, cache tls.ClientSessionCache, addr, path string, timeout time.Duration) Conn {
	c := Conn{Start: time.Now()}
	tc := &trackingCache{inner: cache}
	cfg := base.Clone()
	cfg.ClientSessionCache = tc

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		c.HandshakeErr = "dial: " + err.Error()
		c.End = time.Now()
		return c
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	conn := tls.Client(raw, cfg)
	hsStart := time.Now()
	if err := conn.HandshakeContext(ctx); err != nil {
		c.Offered = tc.hit
		c.HandshakeErr = "handshake: " + err.Error()
		c.End = time.Now()
		return c
	}
	c.Handshake = time.Since(hsStart)
	st := conn.ConnectionState()
	c.Offered = tc.hit
	c.Resumed = st.DidResume
	c.Version = st.Version

	req := "GET " + path + " HTTP/1.1\r\nHost: " + base.ServerName + "\r\nUser-Agent: ticketkeys-resumption\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		c.RequestErr = "write request: " + err.Error()
		c.End = time.Now()
		return c
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.RequestErr = "read response: " + err.Error()
		c.End = time.Now()
		return c
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		c.RequestErr = "read body: " + err.Error()
	} else if resp.StatusCode < 200 || resp.StatusCode > 299 {
		c.RequestErr = fmt.Sprintf("status %d", resp.StatusCode)
	}
	// Drain to EOF so any post-handshake messages (TLS 1.3 tickets) sent
	// after the body are processed too; bounded by the deadline.
	_, _ = io.Copy(io.Discard, br)
	c.End = time.Now()
	return c
}
