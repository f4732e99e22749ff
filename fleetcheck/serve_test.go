package fleetcheck

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// silentNode accepts TCP connections and never answers (a hung TLS
// server); it returns its address.
func silentNode(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	t.Cleanup(func() { close(done); ln.Close() })
	return ln.Addr().String()
}

// TestLastDoesNotWaitForTheRound: while a round waits on four nodes that
// accept TCP and never answer, the last report and the metrics (what
// /report.json and /metrics serve) come back at once.
func TestLastDoesNotWaitForTheRound(t *testing.T) {
	s, servers, cert := goFleet(t, 1)
	var nodes []string
	for range 4 {
		nodes = append(nodes, silentNode(t))
	}
	c := newChecker(t, s, cert, append(addrs(servers), nodes...), func(c *Config) { c.Timeout = 3 * time.Second })
	setNodes := func(n []Node) { c.cfg.Nodes = n; c.groups, c.groupOf = domains(n) }
	setNodes(nodesOf(cert, addrs(servers)...))
	first := check(t, c) // a whole round, healthy node only
	setNodes(nodesOf(cert, append(addrs(servers), nodes...)...))

	done := make(chan struct{})
	var ended time.Time
	go func() {
		defer close(done)
		_, _ = c.Check(context.Background())
		ended = time.Now()
	}()
	time.Sleep(300 * time.Millisecond)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(c))
	start := time.Now()
	last := c.Last()
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	<-done
	if !ended.After(start.Add(time.Second)) {
		t.Fatalf("the round ended %s after the reads began; want it still waiting on the silent nodes, or the test proves nothing", ended.Sub(start))
	}
	if took > 200*time.Millisecond {
		t.Errorf("Last and Gather took %s during a round; want no wait for the round", took)
	}
	if last != first {
		t.Errorf("Last during a round is not the last whole round")
	}
}
