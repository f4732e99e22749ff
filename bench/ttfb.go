package bench

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
	"sync"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/ctxend"
)

// TTFBConfig is a load that measures the time to first byte of every
// connection: from the start of the TCP dial to the first byte of the HTTP
// response, over a new TLS connection per request.
type TTFBConfig struct {
	// Addrs are the nodes (normally latency proxies in front of them); each
	// connection picks one at random. Required.
	Addrs []string
	// ServerName is the SNI, the certificate name and the session-cache key.
	ServerName string
	// RootCAs verifies the certificate.
	RootCAs *x509.CertPool
	// TLS pins the version (tls.VersionTLS12 or tls.VersionTLS13).
	TLS uint16
	// Users is the number of simulated users, each with its own session
	// cache; they are split evenly among the workers, so a user never has
	// two connections at once. At least Concurrency.
	Users int
	// Concurrency is the number of workers (connections in flight).
	Concurrency int
	// Warmup is uncounted load first (it gives the users their tickets);
	// Duration the measured load after it.
	Warmup, Duration time.Duration
	// MaxConnections bounds the connections of the run (warm-up included).
	MaxConnections int
	// ConnTimeout bounds one connection. Zero means 10s.
	ConnTimeout time.Duration
	Seed        int64
}

// TTFBConn is one measured connection.
type TTFBConn struct {
	Start time.Time
	Node  int
	// Warmup is true for connections that started during the warm-up.
	Warmup bool
	// Offered is true when the user's cache held a ticket for the name;
	// Resumed is ConnectionState.DidResume.
	Offered, Resumed bool
	// Handshake is dial start to handshake done; TTFB dial start to the
	// first response byte.
	Handshake, TTFB time.Duration
	// Err is set when the connection failed; Aborted when the end of the
	// run cut it (then it is counted nowhere).
	Err     string
	Aborted bool
}

func (c *TTFBConfig) check() error {
	switch {
	case len(c.Addrs) == 0:
		return errors.New("ttfb load: addrs: at least one required")
	case c.Concurrency < 1:
		return fmt.Errorf("ttfb load: concurrency: must be >= 1, got %d", c.Concurrency)
	case c.Users < c.Concurrency:
		return fmt.Errorf("ttfb load: users: must be >= concurrency (%d), got %d", c.Concurrency, c.Users)
	case c.Duration <= 0 || c.Warmup < 0:
		return fmt.Errorf("ttfb load: duration must be > 0 and warm-up >= 0, got %s and %s", c.Duration, c.Warmup)
	case c.MaxConnections < 1:
		return fmt.Errorf("ttfb load: max connections: must be >= 1, got %d", c.MaxConnections)
	case c.TLS != tls.VersionTLS12 && c.TLS != tls.VersionTLS13:
		return fmt.Errorf("ttfb load: tls: must be 1.2 or 1.3, got 0x%x", c.TLS)
	}
	return nil
}

// recordingCache is one user's session cache; it remembers whether the
// last Get found a session (the ticket was offered).
type recordingCache struct {
	tls.ClientSessionCache
	hit bool
}

func (r *recordingCache) Get(key string) (*tls.ClientSessionState, bool) {
	s, ok := r.ClientSessionCache.Get(key)
	r.hit = ok && s != nil
	return s, ok
}

// RunTTFB runs the load and returns every connection in start order per
// worker. It is bounded by cfg's duration and connection count and by ctx.
func RunTTFB(ctx context.Context, cfg TTFBConfig) ([]TTFBConn, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.ConnTimeout <= 0 {
		cfg.ConnTimeout = 10 * time.Second
	}
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	ctx, cancel := context.WithDeadline(ctx, measureFrom.Add(cfg.Duration))
	defer cancel()

	var (
		mu      sync.Mutex
		conns   []TTFBConn
		started int
		wg      sync.WaitGroup
	)
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if started >= cfg.MaxConnections {
			return false
		}
		started++
		return true
	}
	for w := 0; w < cfg.Concurrency; w++ {
		// Worker w owns users w, w+C, w+2C, ...
		var caches []*recordingCache
		for u := w; u < cfg.Users; u += cfg.Concurrency {
			caches = append(caches, &recordingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4)})
		}
		rng := rand.New(rand.NewSource(cfg.Seed + int64(w)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []TTFBConn
			for n := 0; ctxend.Err(ctx, time.Now()) == nil && take(); n++ {
				// Each of the worker's users connects once first (so that
				// all hold a ticket after the warm-up), then at random.
				cache := caches[n%len(caches)]
				if n >= len(caches) {
					cache = caches[rng.Intn(len(caches))]
				}
				node := rng.Intn(len(cfg.Addrs))
				c := oneTTFB(ctx, cfg, cache, cfg.Addrs[node])
				c.Node = node
				c.Warmup = c.Start.Before(measureFrom)
				mine = append(mine, c)
			}
			mu.Lock()
			conns = append(conns, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return conns, nil
}

// oneTTFB makes one connection: dial, handshake, one GET, the first byte,
// then the rest of the response (so that TLS 1.3 tickets, sent after the
// handshake, reach the cache).
func oneTTFB(ctx context.Context, cfg TTFBConfig, cache *recordingCache, addr string) TTFBConn {
	out := TTFBConn{Start: time.Now()}
	run := ctx
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnTimeout)
	defer cancel()
	fail := func(what string, err error) TTFBConn {
		// Cut by the end of the run: not a failure. A connection that
		// outlived its own ConnTimeout is one.
		out.Aborted = ctxend.Err(run, time.Now()) != nil
		out.Err = what + ": " + err.Error()
		return out
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fail("dial", err)
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	defer stop()
	cache.hit = false
	tc := tls.Client(raw, &tls.Config{
		ServerName:         cfg.ServerName,
		RootCAs:            cfg.RootCAs,
		MinVersion:         cfg.TLS,
		MaxVersion:         cfg.TLS,
		ClientSessionCache: cache,
		NextProtos:         []string{"http/1.1"},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail("handshake", err)
	}
	out.Handshake = time.Since(out.Start)
	out.Offered = cache.hit
	out.Resumed = tc.ConnectionState().DidResume
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: "+cfg.ServerName+"\r\nConnection: close\r\n\r\n"); err != nil {
		return fail("request", err)
	}
	br := bufio.NewReader(tc)
	if _, err := br.Peek(1); err != nil {
		return fail("response", err)
	}
	out.TTFB = time.Since(out.Start)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail("response", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fail("response body", err)
	}
	if resp.StatusCode/100 != 2 {
		return fail("response", fmt.Errorf("status %s", resp.Status))
	}
	return out
}
