package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

// Mode says how the server nodes of a run get their session-ticket keys.
type Mode string

const (
	// ModeOwnKeys leaves every node on crypto/tls's own random keys (each
	// tls.Config makes its own): a ticket resumes only on the node that
	// issued it. Scenario 1, and the single-node reference.
	ModeOwnKeys Mode = "own"
	// ModeStatic gives every node the same fixed key, set once with
	// SetSessionTicketKeys and never changed. Scenario 2, and the plain
	// single-key tls.Config of the hook-cost measurement.
	ModeStatic Mode = "static"
	// ModeSwitch rotates without a window: every RotateEvery after start a
	// new shared key replaces the old one (which is dropped), node i
	// switching i*SwitchGap after node 0. Scenario 3.
	ModeSwitch Mode = "switch"
	// ModeTicketkeys gives every node its own client.Source reading the
	// keyring from a real Vault, wired with Source.ConfigureServer.
	// Scenario 4, and the hook of the hook-cost measurement.
	ModeTicketkeys Mode = "ticketkeys"
)

// Environment variables that carry the Vault address and token to a child
// (a token never goes on a command line, where ps would show it).
const (
	EnvVaultAddr  = "TICKETKEYS_BENCH_VAULT_ADDR"
	EnvVaultToken = "TICKETKEYS_BENCH_VAULT_TOKEN"
)

// NodeConfig describes the server nodes one child process runs.
type NodeConfig struct {
	// Nodes is how many TLS servers to run (each with its own tls.Config and
	// listener on 127.0.0.1:0). Required, 1..16.
	Nodes int
	// Mode selects how the nodes get their ticket keys. Required.
	Mode Mode
	// CertFile and KeyFile are the PEM certificate and key all nodes serve.
	// Required.
	CertFile, KeyFile string
	// RotateEvery is the rotation period of ModeSwitch. Required (> 0) for
	// that mode.
	RotateEvery time.Duration
	// SwitchGap is the delay between two nodes' switches in ModeSwitch. Zero
	// means 1s.
	SwitchGap time.Duration
	// VaultAddr, VaultToken, Mount and Keyring locate the keyring of
	// ModeTicketkeys. Mount empty means "ticketkeys".
	VaultAddr, VaultToken, Mount, Keyring string
	// MaxLife bounds the child's whole life, so that an orphan ends by
	// itself. Zero means 15 minutes.
	MaxLife time.Duration
}

func (c *NodeConfig) check() error {
	if c.Nodes < 1 || c.Nodes > 16 {
		return fmt.Errorf("bench serve: nodes: must be 1..16, got %d", c.Nodes)
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return fmt.Errorf("bench serve: cert and key: both required, got cert=%q key=%q", c.CertFile, c.KeyFile)
	}
	switch c.Mode {
	case ModeOwnKeys, ModeStatic:
	case ModeSwitch:
		if c.SwitchGap == 0 {
			c.SwitchGap = time.Second
		}
		if c.RotateEvery <= 0 {
			return fmt.Errorf("bench serve: rotate-every: must be > 0 for mode %s, got %s", c.Mode, c.RotateEvery)
		}
		if c.SwitchGap < 0 || time.Duration(c.Nodes-1)*c.SwitchGap >= c.RotateEvery {
			return fmt.Errorf("bench serve: switch-gap: must be >= 0 and (nodes-1)*switch-gap < rotate-every (%s), got %s with %d nodes",
				c.RotateEvery, c.SwitchGap, c.Nodes)
		}
	case ModeTicketkeys:
		if c.VaultAddr == "" || c.VaultToken == "" || c.Keyring == "" {
			return fmt.Errorf("bench serve: mode %s needs the Vault address (%s), a token (%s) and keyring: got addr=%q token set=%t keyring=%q",
				c.Mode, EnvVaultAddr, EnvVaultToken, c.VaultAddr, c.VaultToken != "", c.Keyring)
		}
	default:
		return fmt.Errorf("bench serve: mode: must be one of own, static, switch, ticketkeys, got %q", c.Mode)
	}
	return nil
}

// Messages of the child's line protocol. The parent writes one command per
// line to the child's stdin ("start", "finish"); the child answers each with
// one JSON object on stdout, and announces itself with a Ready message.
// Closing stdin makes the child shut down.
type (
	// Ready is the child's first message: its listening addresses.
	Ready struct {
		Type  string   `json:"type"` // "ready"
		PID   int      `json:"pid"`
		Addrs []string `json:"addrs"`
	}
	// Sample answers "start" and "finish": the child's own CPU time so far
	// (getrusage RUSAGE_SELF, user+system) and, for "finish", what happened
	// since "start".
	Sample struct {
		Type  string    `json:"type"` // "started" or "finished"
		Time  time.Time `json:"time"`
		CPUus int64     `json:"cpu_us"`
		// Rotations are the instants node 0 switched key (ModeSwitch).
		Rotations []time.Time `json:"rotations,omitempty"`
		// Sources summarises each node's client.Source (ModeTicketkeys):
		// counts and states only, cumulative since the node started.
		Sources []SourceSummary `json:"sources,omitempty"`
		// Error is set when the command failed.
		Error string `json:"error,omitempty"`
	}
	// SourceSummary is one node's client.Status, reduced to counts.
	SourceSummary struct {
		WindowKeys    int    `json:"window_keys"`
		Refreshes     uint64 `json:"refreshes"`
		RefreshErrors uint64 `json:"refresh_errors"`
		Exhausted     bool   `json:"exhausted"`
		HitCurrent    uint64 `json:"hit_current"`
		HitNext       uint64 `json:"hit_next"`
		HitPrevious   uint64 `json:"hit_previous"`
		Miss          uint64 `json:"miss"`
		Issued        uint64 `json:"issued"`
	}
)

// ProcessCPU returns the CPU time (user + system) the calling process has
// used so far, from getrusage(RUSAGE_SELF).
func ProcessCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage RUSAGE_SELF: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// node is one TLS server.
type node struct {
	cfg *tls.Config
	ln  net.Listener
	srv *http.Server
	src *client.Source
}

// ServeNodes runs the nodes of cfg until in reaches EOF, ctx ends or
// cfg.MaxLife passes, answering the commands read from in on out (see
// Ready and Sample). Logs (never key material) go to logw.
func ServeNodes(ctx context.Context, cfg NodeConfig, in io.Reader, out io.Writer, logw io.Writer) error {
	if err := cfg.check(); err != nil {
		return err
	}
	maxLife := cfg.MaxLife
	if maxLife <= 0 {
		maxLife = 15 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, maxLife)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))

	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("bench serve: load certificate %s / %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	var shared [32]byte
	if _, err := rand.Read(shared[:]); err != nil {
		return fmt.Errorf("bench serve: random key: %w", err)
	}
	nodes := make([]*node, cfg.Nodes)
	defer func() {
		for _, n := range nodes {
			if n == nil {
				continue
			}
			if n.srv != nil {
				n.srv.Close()
			} else if n.ln != nil {
				n.ln.Close()
			}
			if n.src != nil {
				n.src.Close()
			}
		}
	}()
	for i := range nodes {
		n := &node{cfg: &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"http/1.1"},
			MinVersion:   tls.VersionTLS12,
		}}
		nodes[i] = n
		switch cfg.Mode {
		case ModeStatic, ModeSwitch:
			n.cfg.SetSessionTicketKeys([][32]byte{shared})
		case ModeTicketkeys:
			src, err := newSource(ctx, cfg, logger)
			if err != nil {
				return fmt.Errorf("bench serve: node %d: %w", i, err)
			}
			n.src = src
			if err := src.ConfigureServer(n.cfg); err != nil {
				return fmt.Errorf("bench serve: node %d: %w", i, err)
			}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("bench serve: node %d: listen on 127.0.0.1:0: %w", i, err)
		}
		n.ln = ln
		// http.Server.Serve on a tls.Listener uses n.cfg itself (only
		// ServeTLS clones it), so SetSessionTicketKeys reaches the server.
		n.srv = &http.Server{
			Handler:           http.HandlerFunc(okHandler),
			ReadHeaderTimeout: 5 * time.Second,
			// Handshake errors of connections cut at the end of a load
			// are expected; they go to the child's log, not the harness.
			ErrorLog: log.New(logw, fmt.Sprintf("node %d: ", i), log.LstdFlags),
		}
		n.srv.SetKeepAlivesEnabled(false)
		go n.srv.Serve(tls.NewListener(ln, n.cfg))
	}

	enc := json.NewEncoder(out)
	ready := Ready{Type: "ready", PID: os.Getpid()}
	for _, n := range nodes {
		ready.Addrs = append(ready.Addrs, n.ln.Addr().String())
	}
	if err := enc.Encode(ready); err != nil {
		return fmt.Errorf("bench serve: write ready: %w", err)
	}

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			case <-ctx.Done():
				return
			}
		}
	}()

	var sw *switcher
	defer func() {
		if sw != nil {
			sw.stop()
		}
	}()
	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case line, ok = <-lines:
			if !ok {
				return nil // stdin closed: shut down
			}
		}
		msg := Sample{Time: time.Now()}
		cpu, err := ProcessCPU()
		if err != nil {
			msg.Error = err.Error()
		}
		msg.CPUus = cpu.Microseconds()
		switch line {
		case "start":
			msg.Type = "started"
			if cfg.Mode == ModeSwitch && sw == nil {
				sw = startSwitcher(ctx, nodes, cfg.RotateEvery, cfg.SwitchGap, msg.Time)
			}
		case "finish":
			msg.Type = "finished"
			if sw != nil {
				msg.Rotations = sw.stop()
				sw = nil
			}
		default:
			msg.Type = "error"
			msg.Error = fmt.Sprintf("bench serve: command: must be start or finish, got %q", line)
		}
		if msg.Type != "error" {
			for _, n := range nodes {
				if n.src != nil {
					msg.Sources = append(msg.Sources, summarise(n.src.Status()))
				}
			}
		}
		if err := enc.Encode(msg); err != nil {
			return fmt.Errorf("bench serve: write %s: %w", msg.Type, err)
		}
	}
}

func okHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "ok\n")
}

// newSource builds one node's client.Source with its own API client, as
// every node of a real fleet would have.
func newSource(ctx context.Context, cfg NodeConfig, logger *slog.Logger) (*client.Source, error) {
	ac := api.DefaultConfig()
	if ac.Error != nil {
		return nil, fmt.Errorf("vault api config: %w", ac.Error)
	}
	ac.Address = cfg.VaultAddr
	ac.Timeout = 10 * time.Second
	c, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vault api client for %s: %w", cfg.VaultAddr, err)
	}
	c.SetToken(cfg.VaultToken)
	c.ClearNamespace()
	mount := cfg.Mount
	if mount == "" {
		mount = "ticketkeys"
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	src, err := client.NewSource(fctx, c, mount, cfg.Keyring, client.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("client.NewSource %s/keys/%s: %w", mount, cfg.Keyring, err)
	}
	return src, nil
}

func summarise(st client.Status) SourceSummary {
	s := SourceSummary{
		Refreshes:     st.Refreshes,
		RefreshErrors: st.RefreshErrors,
		Exhausted:     st.Exhausted,
		HitCurrent:    st.Tickets.Current,
		HitNext:       st.Tickets.Next,
		HitPrevious:   st.Tickets.Previous,
		Miss:          st.Tickets.Miss,
		Issued:        st.Tickets.Issued,
	}
	for _, n := range st.Keys {
		s.WindowKeys += n
	}
	return s
}

// switcher runs ModeSwitch's rotations: at start+k*every (k = 1, 2, ...)
// a new random key replaces the old one on node 0, then on node i after
// i*gap. It stops at stop() or when ctx ends.
type switcher struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	rotations []time.Time
}

func startSwitcher(ctx context.Context, nodes []*node, every, gap time.Duration, start time.Time) *switcher {
	if gap == 0 {
		gap = time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &switcher{cancel: cancel, done: make(chan struct{})}
	// The loop is bounded by ctx (the child's MaxLife at most) and by the
	// count below.
	maxRotations := 10000
	go func() {
		defer close(s.done)
		var key [32]byte
		for k := 1; k <= maxRotations; k++ {
			if _, err := rand.Read(key[:]); err != nil {
				return
			}
			for i, n := range nodes {
				at := start.Add(time.Duration(k)*every + time.Duration(i)*gap)
				t := time.NewTimer(time.Until(at))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				n.cfg.SetSessionTicketKeys([][32]byte{key}) // the old key is dropped
				if i == 0 {
					s.mu.Lock()
					s.rotations = append(s.rotations, time.Now())
					s.mu.Unlock()
				}
			}
		}
	}()
	return s
}

// stop ends the rotations and returns the instants node 0 switched.
func (s *switcher) stop() []time.Time {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.rotations...)
}

// ServeMain is the "serve" subcommand: it parses args into a NodeConfig
// (the Vault address and token come from EnvVaultAddr and EnvVaultToken),
// serves on stdin/stdout and returns the process exit code.
func ServeMain(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var cfg NodeConfig
	var mode string
	fs.IntVar(&cfg.Nodes, "nodes", 3, "number of TLS server nodes")
	fs.StringVar(&mode, "mode", string(ModeOwnKeys), "ticket keys: own, static, switch or ticketkeys")
	fs.StringVar(&cfg.CertFile, "cert", "", "PEM certificate file")
	fs.StringVar(&cfg.KeyFile, "key", "", "PEM private key file")
	fs.DurationVar(&cfg.RotateEvery, "rotate-every", 0, "rotation period of mode switch")
	fs.DurationVar(&cfg.SwitchGap, "switch-gap", time.Second, "delay between two nodes' switches in mode switch")
	fs.StringVar(&cfg.Mount, "mount", "ticketkeys", "mount of the ticketkeys engine (mode ticketkeys)")
	fs.StringVar(&cfg.Keyring, "keyring", "", "keyring name (mode ticketkeys)")
	fs.DurationVar(&cfg.MaxLife, "max-life", 15*time.Minute, "the child exits by itself after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Mode = Mode(mode)
	cfg.VaultAddr = os.Getenv(EnvVaultAddr)
	cfg.VaultToken = os.Getenv(EnvVaultToken)
	if err := ServeNodes(context.Background(), cfg, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
