package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/resumption"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// inProcess runs ServeNodes in a goroutine over pipes, as a child would.
type inProcess struct {
	t     *testing.T
	in    *io.PipeWriter
	dec   *json.Decoder
	done  chan error
	addrs []string
}

func startInProcess(t *testing.T, cfg NodeConfig) *inProcess {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	p := &inProcess{t: t, in: inW, dec: json.NewDecoder(outR), done: make(chan error, 1)}
	go func() {
		err := ServeNodes(context.Background(), cfg, inR, outW, io.Discard)
		outW.Close()
		p.done <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("ServeNodes did not return within 10s of stdin EOF")
		}
	})
	var ready Ready
	if err := p.dec.Decode(&ready); err != nil {
		t.Fatalf("read ready: %v", err)
	}
	if ready.Type != "ready" || len(ready.Addrs) != cfg.Nodes {
		t.Fatalf("ready: got type %q with %d addrs, want ready with %d", ready.Type, len(ready.Addrs), cfg.Nodes)
	}
	for _, a := range ready.Addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Fatalf("node address %q is not on 127.0.0.1", a)
		}
	}
	p.addrs = ready.Addrs
	return p
}

func (p *inProcess) command(cmd string) Sample {
	p.t.Helper()
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		p.t.Fatalf("send %s: %v", cmd, err)
	}
	var s Sample
	if err := p.dec.Decode(&s); err != nil {
		p.t.Fatalf("read answer to %s: %v", cmd, err)
	}
	return s
}

func certConfig(t *testing.T) (*testcert.Cert, string, string) {
	t.Helper()
	c := testcert.New(t, testcert.ECDSAP256)
	certFile, keyFile, _ := c.WritePEM(t.TempDir())
	return c, certFile, keyFile
}

func load(t *testing.T, c *testcert.Cert, addrs []string, dur time.Duration) resumption.Result {
	t.Helper()
	r, err := resumption.Run(context.Background(), resumption.Config{
		Addrs: addrs, ServerName: testcert.ServerName, RootCAs: c.Pool,
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		Users: 10, Concurrency: 2, MaxConnections: 3000, MaxDuration: dur, Interval: 2 * time.Millisecond, Seed: 7,
	})
	if err != nil {
		t.Fatalf("resumption.Run: %v", err)
	}
	if r.Offered < 20 {
		t.Fatalf("load: only %d offered tickets (%s), want >= 20", r.Offered, r)
	}
	return r
}

func TestServeNodesStaticSharesKeyOwnDoesNot(t *testing.T) {
	c, certFile, keyFile := certConfig(t)
	static := startInProcess(t, NodeConfig{Nodes: 3, Mode: ModeStatic, CertFile: certFile, KeyFile: keyFile})
	st := static.command("start")
	r := load(t, c, static.addrs, 800*time.Millisecond)
	fin := static.command("finish")
	if st.Type != "started" || fin.Type != "finished" {
		t.Fatalf("answers: got %q and %q, want started and finished", st.Type, fin.Type)
	}
	if fin.CPUus <= st.CPUus {
		t.Fatalf("CPU did not grow across the load: start %dus, finish %dus", st.CPUus, fin.CPUus)
	}
	// A few connections may be cut by the end of the load; every completed
	// offer must resume.
	if rate := r.ResumeRate(); rate < 0.98 {
		t.Fatalf("static shared key: resume rate %.3f (%s), want >= 0.98", rate, r)
	}

	own := startInProcess(t, NodeConfig{Nodes: 3, Mode: ModeOwnKeys, CertFile: certFile, KeyFile: keyFile})
	own.command("start")
	r = load(t, c, own.addrs, 800*time.Millisecond)
	own.command("finish")
	if rate := r.ResumeRate(); rate > 0.6 {
		t.Fatalf("own keys on 3 nodes: resume rate %.3f (%s), want about 1/3 (<= 0.6)", rate, r)
	}
}

func TestServeNodesSwitchRotatesWithoutWindow(t *testing.T) {
	c, certFile, keyFile := certConfig(t)
	p := startInProcess(t, NodeConfig{Nodes: 3, Mode: ModeSwitch, CertFile: certFile, KeyFile: keyFile,
		RotateEvery: 700 * time.Millisecond, SwitchGap: 200 * time.Millisecond})
	st := p.command("start")
	r := load(t, c, p.addrs, 1600*time.Millisecond)
	fin := p.command("finish")
	if n := len(fin.Rotations); n < 2 {
		t.Fatalf("rotations: got %d, want >= 2 in 1.6s at a 700ms period", n)
	}
	first := fin.Rotations[0].Sub(st.Time)
	if first < 650*time.Millisecond || first > 900*time.Millisecond {
		t.Fatalf("first rotation %s after start, want about 700ms", first)
	}
	if r.Offered == r.Resumed {
		t.Fatalf("rotation without a window lost no resumption (%s), want some failures", r)
	}
}

func TestServeNodesCommandErrorsAndConfigErrors(t *testing.T) {
	_, certFile, keyFile := certConfig(t)
	p := startInProcess(t, NodeConfig{Nodes: 1, Mode: ModeStatic, CertFile: certFile, KeyFile: keyFile})
	s := p.command("bogus")
	if s.Type != "error" || !strings.Contains(s.Error, `got "bogus"`) {
		t.Fatalf("unknown command: got %+v, want an error naming it", s)
	}
	for _, tc := range []struct {
		cfg  NodeConfig
		want string
	}{
		{NodeConfig{Nodes: 0, Mode: ModeStatic, CertFile: "c", KeyFile: "k"}, "nodes: must be 1..16, got 0"},
		{NodeConfig{Nodes: 1, Mode: "nope", CertFile: "c", KeyFile: "k"}, `mode: must be one of own, static, switch, ticketkeys, got "nope"`},
		{NodeConfig{Nodes: 1, Mode: ModeStatic}, "cert and key: both required"},
		{NodeConfig{Nodes: 3, Mode: ModeSwitch, CertFile: "c", KeyFile: "k"}, "rotate-every: must be > 0"},
		{NodeConfig{Nodes: 3, Mode: ModeSwitch, CertFile: "c", KeyFile: "k", RotateEvery: time.Second, SwitchGap: time.Second}, "(nodes-1)*switch-gap < rotate-every"},
		{NodeConfig{Nodes: 3, Mode: ModeTicketkeys, CertFile: "c", KeyFile: "k", Keyring: "web"}, "token set=false"},
	} {
		err := ServeNodes(context.Background(), tc.cfg, strings.NewReader(""), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ServeNodes(%+v): got %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}
