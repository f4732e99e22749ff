// Command ticketkeys-fleetcheck proves from outside that every TLS node of a fleet holds the keys of a
// ticketkeys keyring: that its fresh tickets carry the scheduled key, that every node resumes every other
// node's tickets, that every node resumes a ticket re-encrypted under the NEXT key before that key
// activates, and that no node resumes a ticket under a retired key. See docs/fleet-check.md.
//
// Usage:
//
//	ticketkeys-fleetcheck -keyring web -format nginx -ca ca.pem -sni www.example.com \
//	    -node 10.0.0.1:443 -node 10.0.0.2:443 [-json report.json] [-continuous -listen 127.0.0.1:9464]
//
// A node is host:port[,sni=NAME][,ca=FILE][,kind=local|agent][,domain=NAME]; -nodes-file reads one per
// line (# starts a comment). The Vault token (VAULT_TOKEN, or -token-file, re-read every round) needs read
// on <mount>/keys/<keyring> only (bootstrap/policies/fleetcheck.hcl). Key material stays in memory: it is never printed, logged or written.
//
// Exit status (one round): 0 when no check failed, 1 when one did, 2 on a usage or configuration error.
// With -continuous it runs until SIGINT or SIGTERM, checking every -interval and at the schedule's instants,
// and serves Prometheus metrics on -listen (/metrics, and the last report at /report.json).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/fleetcheck"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaultclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// nodeList collects repeated -node flags.
type nodeList []string

func (n *nodeList) String() string     { return strings.Join(*n, " ") }
func (n *nodeList) Set(v string) error { *n = append(*n, v); return nil }

// options are the parsed flags.
type options struct {
	vaultAddr, tokenFile, mount, keyring, format string
	approleRoleIDFile, approleSecretIDFile       string
	approleMount                                 string
	vaultCACert                                  string
	vaultInsecureHTTP                            bool
	nodes                                        nodeList
	nodesFile, sni, ca, tlsVersions, kind        string
	reloadAllowance, maxReadTTL                  time.Duration
	grace, nextGrace, timeout, retiredFor        time.Duration
	matrixFull, matrixSample, concurrency        int
	maxRetired, previousKeys, maxPrevious        int
	jsonPath, evidencePath                       string
	table, continuous, unnamedTickets            bool
	interval                                     time.Duration
	listen                                       string
}

// run is the command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ticketkeys-fleetcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.vaultAddr, "vault-addr", "", "Vault address: https://, unix://, or http:// to a loopback address (default: VAULT_ADDR)")
	fs.StringVar(&o.vaultCACert, "vault-ca-cert", "", "PEM file of the CAs that verify Vault's certificate (default: the system roots; VAULT_CACERT and VAULT_SKIP_VERIFY are ignored)")
	fs.BoolVar(&o.vaultInsecureHTTP, "vault-insecure-http", false, "allow plain http:// to a non-loopback Vault address: the token and the keys travel in clear")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the Vault token, re-read every round (e.g. a Vault Agent sink); default: VAULT_TOKEN")
	fs.StringVar(&o.approleRoleIDFile, "approle-role-id-file", "", "log in with AppRole: file holding the role_id (with -approle-secret-id-file); the token is renewed and the login repeated as a node's (client.KeepLogin)")
	fs.StringVar(&o.approleSecretIDFile, "approle-secret-id-file", "", "log in with AppRole: file holding the secret_id")
	fs.StringVar(&o.approleMount, "approle-mount", "approle", "mount path of the AppRole auth method")
	fs.StringVar(&o.mount, "mount", "ticketkeys", "mount path of the ticketkeys engine")
	fs.StringVar(&o.keyring, "keyring", "", "keyring name (required)")
	fs.StringVar(&o.format, "format", "", "format the nodes use: nginx, haproxy, envoy or go (required)")
	fs.Var(&o.nodes, "node", "a node: host:port[,sni=NAME][,ca=FILE][,kind=local|agent][,domain=NAME] (repeatable)")
	fs.StringVar(&o.nodesFile, "nodes-file", "", "file with one node per line, as -node (# starts a comment)")
	fs.StringVar(&o.sni, "sni", "", "default server name (SNI, and the name certificates must match); default: each node's host")
	fs.StringVar(&o.ca, "ca", "", "default PEM file of CA certificates to verify the nodes; default: the system roots")
	fs.StringVar(&o.kind, "kind", "", "default node kind: local (switches at the instant: Go client, nginx Lua, Caddy module) or agent (fed by Vault Agent: nginx key files, HAProxy, Envoy); default: local for -format go, else agent")
	fs.DurationVar(&o.reloadAllowance, "reload-allowance", fleetcheck.DefaultReloadAllowance, "time an Agent-fed node takes to use a rendered window (reload, push), part of its tolerance")
	fs.BoolVar(&o.unnamedTickets, "unnamed-tickets", false, "format go only: the nodes install the window with crypto/tls SetSessionTicketKeys (Caddy), so their tickets carry no key name; each is named by the key that opens it")
	fs.DurationVar(&o.maxReadTTL, "max-read-ttl", fleetcheck.DefaultMaxReadTTL, "the engine mount's max_read_ttl: after a purge, a node may resume the purged keys until its next read, within this (pending, not failing)")
	fs.StringVar(&o.tlsVersions, "tls", "1.2,1.3", "TLS versions to check, comma-separated")
	fs.DurationVar(&o.grace, "grace", fleetcheck.DefaultGrace, "clock skew tolerated around the schedule's instants; Agent-fed nodes (-kind agent) add Vault Agent's re-read delay, derived from the window (docs/fleet-check.md)")
	fs.DurationVar(&o.nextGrace, "next-grace", 0, "how long after its publication a node may miss the next key before that fails (default: publish_ahead/4, at least the node's tolerance, at most 2m, 3/4 of publish_ahead and publish_ahead - grace)")
	fs.DurationVar(&o.timeout, "timeout", fleetcheck.DefaultTimeout, "bound on each connection")
	fs.DurationVar(&o.retiredFor, "retired-for", 0, "how long a retired key is held and offered to the nodes (continuous mode; default: one rotation period, at least 1m; at most 256 keys)")
	fs.IntVar(&o.matrixFull, "matrix-full", fleetcheck.DefaultMatrixFull, "largest fleet checked with the full cross-node matrix")
	fs.IntVar(&o.matrixSample, "matrix-sample", fleetcheck.DefaultMatrixSample, "above -matrix-full, other nodes each node's ticket goes to per round (rotating)")
	fs.IntVar(&o.concurrency, "concurrency", fleetcheck.DefaultConcurrency, "handshakes in flight at most")
	fs.IntVar(&o.maxRetired, "max-retired", fleetcheck.DefaultMaxRetired, "retired keys offered per round at most: half of them the newest every round (after a purge, the former next and current keys), the others rotating through the rest")
	fs.IntVar(&o.previousKeys, "previous-keys", 0, "previous keys (newest first) every node must still resume (default: all the window holds; haproxy: 1, its ring of three; nginx key files: slots - 2)")
	fs.IntVar(&o.maxPrevious, "max-previous", fleetcheck.DefaultMaxPrevious, "previous keys offered per round at most (the newest every round, the others rotating)")
	fs.StringVar(&o.jsonPath, "json", "", "write the JSON evidence report of each round to this file (replaced atomically; - for stdout)")
	fs.StringVar(&o.evidencePath, "evidence", "", "append each round's JSON report as one line to this file")
	fs.BoolVar(&o.table, "table", true, "print the table of each round to stdout")
	fs.BoolVar(&o.continuous, "continuous", false, "check every -interval and at the schedule's instants until SIGINT/SIGTERM")
	fs.DurationVar(&o.interval, "interval", 30*time.Second, "continuous mode: longest time between rounds")
	fs.StringVar(&o.listen, "listen", "", "continuous mode: serve /metrics and /report.json on this address (e.g. 127.0.0.1:9464)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	checker, vc, err := setup(o, logger)
	if err != nil {
		fmt.Fprintf(stderr, "ticketkeys-fleetcheck: %v\n", err)
		return 2
	}
	defer checker.Close()
	switch {
	case o.approleRoleIDFile != "":
		login, err := loginAppRole(ctx, vc, o, logger)
		if err != nil {
			fmt.Fprintf(stderr, "ticketkeys-fleetcheck: %v\n", err)
			return 1
		}
		defer login.Close()
	case o.tokenFile == "" && o.continuous:
		renewCtx, stopRenew := context.WithCancel(ctx)
		renewed := make(chan struct{})
		go func() { defer close(renewed); renewToken(renewCtx, vc, logger) }()
		defer func() { stopRenew(); <-renewed }()
	}

	out := &outputs{o: o, stdout: stdout}
	if !o.continuous {
		rep, err := checker.Check(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "ticketkeys-fleetcheck: %v\n", err)
			return 1
		}
		if err := out.write(rep); err != nil {
			fmt.Fprintf(stderr, "ticketkeys-fleetcheck: %v\n", err)
			return 1
		}
		if !rep.OK {
			return 1
		}
		return 0
	}

	if o.listen != "" {
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			fmt.Fprintf(stderr, "ticketkeys-fleetcheck: -listen: %v\n", err)
			return 2
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(fleetcheck.NewCollector(checker))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/report.json", func(w http.ResponseWriter, r *http.Request) {
			rep := checker.Last()
			if rep == nil {
				http.Error(w, "no round has finished yet", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = rep.WriteJSON(w)
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		logger.Info("serving metrics", "addr", ln.Addr().String())
	}
	err = checker.Run(ctx, o.interval, func(rep *fleetcheck.Report) {
		if err := out.write(rep); err != nil {
			logger.Error("writing the report", "err", err)
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "ticketkeys-fleetcheck: %v\n", err)
		return 1
	}
	return 0
}

// setup validates the options and builds the checker.
func setup(o options, logger *slog.Logger) (*fleetcheck.Checker, *api.Client, error) {
	read, vc, err := vaultReader(o, logger)
	if err != nil {
		return nil, nil, err
	}
	c, err := newChecker(o, read, logger)
	return c, vc, err
}

// newChecker validates the options other than Vault's and builds the checker.
func newChecker(o options, read fleetcheck.WindowReader, logger *slog.Logger) (*fleetcheck.Checker, error) {
	if o.keyring == "" {
		return nil, errors.New("-keyring: required, got \"\"")
	}
	if o.format == "" {
		return nil, fmt.Errorf("-format: required, one of %s", strings.Join(fleetcheck.Formats, ", "))
	}
	specs := append([]string(nil), o.nodes...)
	if o.nodesFile != "" {
		more, err := readNodesFile(o.nodesFile)
		if err != nil {
			return nil, err
		}
		specs = append(specs, more...)
	}
	if len(specs) == 0 {
		return nil, errors.New("-node or -nodes-file: at least one node is required")
	}
	pools := map[string]*x509.CertPool{}
	var nodes []fleetcheck.Node
	for _, spec := range specs {
		n, err := parseNode(spec, o.sni, o.ca, o.kind, pools)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	var versions []uint16
	for _, v := range strings.Split(o.tlsVersions, ",") {
		switch strings.TrimSpace(v) {
		case "1.2":
			versions = append(versions, tls.VersionTLS12)
		case "1.3":
			versions = append(versions, tls.VersionTLS13)
		default:
			return nil, fmt.Errorf("-tls: each version must be 1.2 or 1.3, got %q", v)
		}
	}
	if o.continuous && o.interval <= 0 {
		return nil, fmt.Errorf("-interval: must be positive, got %s", o.interval)
	}
	if !o.continuous && o.listen != "" {
		return nil, errors.New("-listen: only with -continuous")
	}
	return fleetcheck.New(fleetcheck.Config{
		Keyring: o.keyring, Format: o.format, UnnamedTickets: o.unnamedTickets, Read: read, Nodes: nodes, Versions: versions,
		Grace: o.grace, NextGrace: o.nextGrace, ReloadAllowance: o.reloadAllowance, MaxReadTTL: o.maxReadTTL, Timeout: o.timeout, RetiredFor: o.retiredFor,
		MatrixFull: o.matrixFull, MatrixSample: o.matrixSample, Concurrency: o.concurrency, MaxRetired: o.maxRetired,
		PreviousKeys: o.previousKeys, MaxPrevious: o.maxPrevious,
		Logger: logger,
	})
}

// vaultReader reads the window with the token from -token-file (re-read each round, so an Agent sink's
// renewed token is picked up), an AppRole login (made by run) or VAULT_TOKEN.
// The client comes from the flags alone (internal/vaultclient): no VAULT_SKIP_VERIFY, VAULT_CACERT or proxy
// from the environment; -vault-insecure-http is printed when set.
func vaultReader(o options, logger *slog.Logger) (fleetcheck.WindowReader, *api.Client, error) {
	addr := o.vaultAddr
	if addr == "" {
		addr = os.Getenv("VAULT_ADDR")
	}
	if o.vaultInsecureHTTP {
		logger.Warn("INSECURE: -vault-insecure-http allows plain http:// to a non-loopback Vault: the token and the keys travel in clear", "vault_addr", addr)
	}
	if ignored := vaultclient.EnvironmentIgnored(); len(ignored) > 0 {
		logger.Warn("ignoring Vault client settings from the environment; use -vault-addr and -vault-ca-cert", "variables", ignored)
	}
	vc, err := vaultclient.New(vaultclient.Config{Address: addr, AddressField: "-vault-addr", CACertFile: o.vaultCACert,
		AllowInsecureHTTP: o.vaultInsecureHTTP, MaxRetries: 2})
	if err != nil {
		return nil, nil, err
	}
	if (o.approleRoleIDFile == "") != (o.approleSecretIDFile == "") {
		return nil, nil, errors.New("-approle-role-id-file and -approle-secret-id-file: give both or neither")
	}
	if o.approleRoleIDFile != "" {
		if o.tokenFile != "" {
			return nil, nil, errors.New("-token-file and -approle-role-id-file: give one way to get a token, not both")
		}
		vc.ClearToken()
		return fleetcheck.VaultReader(vc, o.mount, o.keyring, o.format), vc, nil
	}
	if tok := os.Getenv("VAULT_TOKEN"); tok != "" {
		vc.SetToken(tok)
	}
	if o.tokenFile == "" {
		if vc.Token() == "" {
			return nil, nil, errors.New("no Vault token: set VAULT_TOKEN, -token-file or -approle-role-id-file and -approle-secret-id-file")
		}
		return fleetcheck.VaultReader(vc, o.mount, o.keyring, o.format), vc, nil
	}
	if _, err := readToken(o.tokenFile); err != nil {
		return nil, nil, err
	}
	inner := fleetcheck.VaultReader(vc, o.mount, o.keyring, o.format)
	return func(ctx context.Context) (*fleetcheck.Window, error) {
		tok, err := readToken(o.tokenFile)
		if err != nil {
			return nil, err
		}
		vc.SetToken(tok)
		return inner(ctx)
	}, vc, nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("-token-file: %s is empty", path)
	}
	return tok, nil
}

func readNodesFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-nodes-file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("-nodes-file %s: %w", path, err)
	}
	return out, nil
}

// parseNode parses host:port[,sni=NAME][,ca=FILE][,kind=local|agent][,domain=NAME]; pools caches CA files.
func parseNode(spec, defSNI, defCA, defKind string, pools map[string]*x509.CertPool) (fleetcheck.Node, error) {
	parts := strings.Split(spec, ",")
	n := fleetcheck.Node{Addr: strings.TrimSpace(parts[0]), ServerName: defSNI, Kind: defKind}
	if _, port, err := net.SplitHostPort(n.Addr); err != nil || port == "" {
		return n, fmt.Errorf("node %q: address must be host:port, got %q", spec, n.Addr)
	}
	ca := defCA
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		switch {
		case ok && k == "sni" && v != "":
			n.ServerName = v
		case ok && k == "ca" && v != "":
			ca = v
		case ok && k == "kind" && v != "":
			n.Kind = v
		case ok && k == "domain" && v != "":
			n.Domain = v
		default:
			return n, fmt.Errorf("node %q: option must be sni=NAME, ca=FILE, kind=local|agent or domain=NAME, got %q", spec, p)
		}
	}
	if ca != "" {
		pool, ok := pools[ca]
		if !ok {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return n, fmt.Errorf("node %q: ca: %w", spec, err)
			}
			pool = x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return n, fmt.Errorf("node %q: ca: %s holds no PEM certificate", spec, ca)
			}
			pools[ca] = pool
		}
		n.RootCAs = pool
	}
	return n, nil
}

// outputs writes each report where the flags say.
type outputs struct {
	o      options
	stdout io.Writer
}

func (w *outputs) write(rep *fleetcheck.Report) error {
	if w.o.table {
		if err := rep.WriteTable(w.stdout); err != nil {
			return err
		}
	}
	switch w.o.jsonPath {
	case "":
	case "-":
		if err := rep.WriteJSON(w.stdout); err != nil {
			return err
		}
	default:
		if err := writeAtomic(w.o.jsonPath, rep); err != nil {
			return fmt.Errorf("-json: %w", err)
		}
	}
	if w.o.evidencePath != "" {
		line, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(w.o.evidencePath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("-evidence: %w", err)
		}
		_, err = f.Write(append(line, '\n'))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("-evidence: %w", err)
		}
	}
	return nil
}

// writeAtomic writes the report to a temporary file beside path and renames it.
func writeAtomic(path string, rep *fleetcheck.Report) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := rep.WriteJSON(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
