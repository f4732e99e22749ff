package vaulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// ClusterSize is the number of Vault servers StartCluster runs: the smallest
// Raft cluster that survives the loss of one node.
const ClusterSize = 3

// Timeouts of the cluster's life cycle.
const (
	// healthyTimeout bounds the wait for autopilot to report every node a
	// healthy voter (server_stabilization_time is lowered to stabilization).
	healthyTimeout = 90 * time.Second
	// stabilization is the autopilot server_stabilization_time of the test
	// cluster: how long a joined node must be healthy before it votes.
	stabilization = "2s"
	// clientTimeout bounds one request of the clients Client returns, so a
	// killed node fails a read quickly instead of hanging it.
	clientTimeout = 5 * time.Second
)

// Cluster is a running 3-node Vault cluster started by StartCluster: integrated
// storage (Raft) joined with retry_join, a TLS listener on each node whose
// certificate clients verify against CAFile, the same plugin binary in every
// node's plugin_directory, registered once by sha256 and version through
// bootstrap/register.sh and mounted at MountPath, and a file audit device
// (bootstrap/audit.sh).
//
// The root token is for the harness and for administrative steps a test
// performs on purpose (registering a plugin, a snapshot); TLS servers and
// Agents log in with AppRole (NodeAppRole). A Cluster's methods are not safe
// for concurrent use; the clients it hands out are.
type Cluster struct {
	// Nodes are the servers, node0 first. node0 is initialised first and is
	// the first active node.
	Nodes []*Node
	// RootToken is the initial root token.
	RootToken string
	// Cert is the listener certificate (127.0.0.1 and localhost) of every
	// node; CAFile is its CA as a PEM file for VAULT_CACERT and Agent's ca_cert.
	Cert   *testcert.Cert
	CAFile string
	// Kind is the server: Vault (the default) or OpenBao (WithClusterServer).
	Kind Kind
	// VaultBin is the server binary (server, CLI and Agent): vault or bao.
	VaultBin string
	// Dir holds the cluster's files: certificates, one directory per node,
	// the audit log.
	Dir string
	// AuditLogPath is the file of the audit device at AuditDevice. Only the
	// active node writes audit entries (standbys forward), so every node's
	// device writes this one file.
	AuditLogPath string
	// PluginSHA256 is the hex sha256 of the plugin binary installed in every
	// node's plugin directory under PluginFile.
	PluginSHA256 string

	opts      clusterOptions
	root      string // module root, for bootstrap/ scripts
	unsealKey string
}

// Node is one Vault server of a Cluster.
type Node struct {
	// Name is the node's Raft node_id: node0, node1, node2.
	Name string
	// Addr is the node's API address, https://127.0.0.1:PORT.
	Addr string
	// Dir holds the node's config, Raft data, plugin directory and log.
	Dir string
	// PluginDir is the node's plugin_directory.
	PluginDir string
	// LogPath is the server log (every run of the node appends to it).
	LogPath string
	// Proc is the node's current server process; nil before the first start.
	// Start replaces it.
	Proc *Process

	c           *Cluster
	listenAddr  string // 127.0.0.1:PORT
	clusterAddr string // 127.0.0.1:PORT of the cluster listener
	configPath  string
}

type clusterOptions struct {
	kind       Kind
	logLevel   string
	rawStorage bool
	buildTags  []string
	nodeEnv    map[string][]string
}

// ClusterOption changes what StartCluster sets up.
type ClusterOption func(*clusterOptions)

// WithClusterLogLevel sets every node's log_level (default info). At debug,
// the plugin's own debug lines ("keyring maintained") reach the node logs.
func WithClusterLogLevel(level string) ClusterOption {
	return func(o *clusterOptions) { o.logLevel = level }
}

// WithClusterServer runs a cluster of kind k (Vault or OpenBao) instead of
// Vault. On OpenBao every node's configuration declares the file audit
// device (Kind.AuditDeclared), which bootstrap/audit.sh then finds enabled.
func WithClusterServer(k Kind) ClusterOption {
	return func(o *clusterOptions) { o.kind = k }
}

// WithRawStorageEndpoint sets raw_storage_endpoint = true, so a test can read
// what a mount stored (sys/raw) to prove what a restore or a maintenance pass
// did to key material. Never enable it in production: it exposes decrypted
// storage to root tokens.
func WithRawStorageEndpoint() ClusterOption {
	return func(o *clusterOptions) { o.rawStorage = true }
}

// WithPluginBuildTags builds the plugin installed on every node with these
// extra build tags (go build -tags), for example "clockskew" (clock_skew.go).
func WithPluginBuildTags(tags ...string) ClusterOption {
	return func(o *clusterOptions) { o.buildTags = append(o.buildTags, tags...) }
}

// WithNodeEnv adds environment variables (KEY=VALUE) to the `vault server`
// process of the node named name (node0, node1, node2) on every start. Vault
// passes its environment to the plugin processes it starts, so this reaches
// that node's plugin too.
func WithNodeEnv(name string, env ...string) ClusterOption {
	return func(o *clusterOptions) {
		if o.nodeEnv == nil {
			o.nodeEnv = map[string][]string{}
		}
		o.nodeEnv[name] = append(o.nodeEnv[name], env...)
	}
}

// StartCluster starts a 3-node Vault cluster for t and stops every node by
// PID when t ends. Setup, in the order an operator follows docs/production.md:
// start three servers, `vault operator init -key-shares=1 -key-threshold=1` on
// node0, unseal node0, unseal node1 and node2 (which completes their
// retry_join), lower autopilot's server_stabilization_time, wait until
// sys/storage/raft/autopilot/state reports three healthy voters, then
// bootstrap/audit.sh and bootstrap/register.sh against the cluster. Any
// failure fails the test with the tails of the node logs.
func StartCluster(t testing.TB, opts ...ClusterOption) *Cluster {
	t.Helper()
	o := clusterOptions{kind: Vault, logLevel: "info"}
	for _, opt := range opts {
		opt(&o)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	c := &Cluster{Kind: o.kind, VaultBin: o.kind.Binary(t), opts: o, root: root, Dir: t.TempDir()}
	plugin := pluginBinary(t)
	if len(o.buildTags) > 0 {
		plugin = buildPluginWith(t, "", o.buildTags)
	}

	tlsDir := filepath.Join(c.Dir, "tls")
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	c.Cert = testcert.New(t, testcert.ECDSAP256)
	certFile, keyFile, caFile := c.Cert.WritePEM(tlsDir)
	c.CAFile = caFile
	c.AuditLogPath = filepath.Join(c.Dir, "audit.log")

	for i := 0; i < ClusterSize; i++ {
		n := &Node{Name: fmt.Sprintf("node%d", i), c: c}
		n.Dir = filepath.Join(c.Dir, n.Name)
		n.PluginDir = filepath.Join(n.Dir, "plugins")
		n.LogPath = filepath.Join(n.Dir, o.kind.CLI()+".log")
		n.configPath = filepath.Join(n.Dir, o.kind.CLI()+".hcl")
		for _, d := range []string{n.Dir, n.PluginDir, filepath.Join(n.Dir, "raft")} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatalf("vaulttest: %v", err)
			}
		}
		sum, err := installPlugin(plugin, n.PluginDir)
		if err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
		c.PluginSHA256 = sum
		c.Nodes = append(c.Nodes, n)
	}
	// Cleanups run last-in first-out: stop every node, then print the log
	// tails of a failed test.
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- last %d lines of the %s log (%s) ---\n%s", logTailLines, n.Name, n.LogPath, fileTail(n.LogPath, logTailLines))
			}
		}
	})
	t.Cleanup(c.Stop)

	if err := c.startAll(certFile, keyFile); err != nil {
		t.Fatalf("vaulttest: start cluster: %v", err)
	}
	c.initialize(t)
	c.Nodes[0].Unseal(t)
	for _, n := range c.Nodes[1:] {
		n.Unseal(t)
	}
	c.Vault(t, c.Nodes[0], c.RootToken, "operator", "raft", "autopilot", "set-config", "-server-stabilization-time="+stabilization)
	c.WaitHealthy(t, healthyTimeout)

	c.Script(t, c.Nodes[0], c.RootToken, "audit.sh", c.AuditLogPath)
	c.Script(t, c.Nodes[0], c.RootToken, "register.sh", filepath.Join(c.Nodes[0].PluginDir, PluginFile))
	return c
}

// startAll picks free loopback ports for every node's API and cluster
// listeners, writes the configs and starts the servers, retrying with new
// ports when one was taken between picking and binding.
func (c *Cluster) startAll(certFile, keyFile string) error {
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		ports, err := freePorts(2 * ClusterSize)
		if err != nil {
			return err
		}
		for i, n := range c.Nodes {
			n.listenAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i]))
			n.clusterAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i+1]))
			n.Addr = "https://" + n.listenAddr
		}
		for _, n := range c.Nodes {
			if err := os.WriteFile(n.configPath, []byte(c.nodeConfig(n, certFile, keyFile)), 0o600); err != nil {
				return fmt.Errorf("write %s config: %w", n.Name, err)
			}
		}
		lastErr = nil
		for _, n := range c.Nodes {
			if err := n.run(); err != nil {
				lastErr = err
				break
			}
		}
		if lastErr == nil {
			return nil
		}
		taken := false
		for _, n := range c.Nodes {
			taken = taken || strings.Contains(fileTail(n.LogPath, 20), "address already in use")
			if n.Proc != nil {
				n.Proc.Stop()
			}
		}
		if !taken {
			return lastErr
		}
	}
	return fmt.Errorf("%d attempts, a port was taken each time: %w", startAttempts, lastErr)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// nodeConfig renders the server configuration of n: Raft storage that
// retry-joins the other nodes (verifying their certificate against the CA), a
// TLS listener, and the node's own plugin directory. This is the
// configuration docs/production.md describes, with loopback addresses.
func (c *Cluster) nodeConfig(n *Node, certFile, keyFile string) string {
	var joins strings.Builder
	for _, o := range c.Nodes {
		if o == n {
			continue
		}
		fmt.Fprintf(&joins, `
  retry_join {
    leader_api_addr     = %q
    leader_ca_cert_file = %q
  }
`, o.Addr, c.CAFile)
	}
	raw := ""
	if c.opts.rawStorage {
		raw = "\n# Test only: lets the harness read what the engine stored.\nraw_storage_endpoint = true\n"
	}
	if c.Kind.AuditDeclared() {
		raw += AuditStanza(AuditDevice, c.AuditLogPath)
	}
	return fmt.Sprintf(`storage "raft" {
  path    = %q
  node_id = %q
  # Fast leader election (1 is also HashiCorp's production recommendation).
  performance_multiplier = 1
%s}

listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_cert_file   = %q
  tls_key_file    = %q
  tls_min_version = "tls12"
}

api_addr         = %q
cluster_addr     = %q
plugin_directory = %q
disable_mlock    = true
log_level        = %q
ui               = false
%s`, filepath.Join(n.Dir, "raft"), n.Name, joins.String(), n.listenAddr, n.clusterAddr, certFile, keyFile,
		n.Addr, "https://"+n.clusterAddr, n.PluginDir, c.opts.logLevel, raw)
}

// run starts the node's server process with its config and waits until its
// API answers (sealed or not).
func (n *Node) run() error {
	p, err := startProcess(n.c.Kind.CLI()+" server "+n.Name, n.c.VaultBin, []string{"server", "-config=" + n.configPath}, n.c.opts.nodeEnv[n.Name], n.LogPath)
	if err != nil {
		return err
	}
	n.Proc = p
	cl, err := n.c.newNodeClient(n, "")
	if err != nil {
		p.Stop()
		return err
	}
	deadline := time.Now().Add(listenTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cl.Sys().SealStatusWithContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s (pid %d) exited before its API answered at %s: %v", n.Name, p.PID, n.Addr, p.ExitError())
		}
		if time.Now().After(deadline) {
			p.Stop()
			return fmt.Errorf("%s (pid %d) API at %s did not answer within %s: %w", n.Name, p.PID, n.Addr, listenTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// initialize runs `vault operator init -key-shares=1 -key-threshold=1` on
// node0 and keeps the unseal key and root token (never logged).
func (c *Cluster) initialize(t testing.TB) {
	t.Helper()
	out := c.Vault(t, c.Nodes[0], "", "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
	var init struct {
		Keys      []string `json:"unseal_keys_b64"`
		RootToken string   `json:"root_token"`
	}
	if err := json.Unmarshal([]byte(out), &init); err != nil || len(init.Keys) != 1 || init.RootToken == "" {
		t.Fatalf("vaulttest: operator init on %s: want one unseal key and a root token (decode error: %v, keys: %d)", c.Nodes[0].Name, err, len(init.Keys))
	}
	c.unsealKey, c.RootToken = init.Keys[0], init.RootToken
}

// newNodeClient returns an API client for node n that verifies the node's
// certificate against the cluster CA, uses token, ignores the caller's VAULT_*
// environment and does not retry, so a test sees every failure.
func (c *Cluster) newNodeClient(n *Node, token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault api config: %w", cfg.Error)
	}
	cfg.Address = n.Addr
	cfg.Timeout = clientTimeout
	cfg.MaxRetries = 0
	if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: c.CAFile, TLSServerName: testcert.ServerName}); err != nil {
		return nil, fmt.Errorf("vault api TLS config for %s: %w", n.Addr, err)
	}
	cl, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault api client for %s: %w", n.Addr, err)
	}
	cl.ClearNamespace()
	cl.SetToken(token)
	return cl, nil
}

// Client returns a new API client for node n with token (empty: none). It
// verifies the node's TLS certificate, times out after 5 s and never retries.
func (c *Cluster) Client(t testing.TB, n *Node, token string) *api.Client {
	t.Helper()
	cl, err := c.newNodeClient(n, token)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return cl
}

// Env is the environment of the Vault CLI and the bootstrap scripts against
// node n with token: VAULT_ADDR, VAULT_CACERT, VAULT_TOKEN and VAULT (the
// binary the scripts run); on OpenBao also BAO_ADDR, BAO_CACERT and
// BAO_TOKEN, which `bao` reads first.
func (c *Cluster) Env(n *Node, token string) []string {
	env := append([]string{"VAULT=" + c.VaultBin, "VAULT_CACERT=" + c.CAFile}, c.Kind.CLIEnv(n.Addr, token)...)
	if c.Kind == OpenBao {
		env = append(env, "BAO_CACERT="+c.CAFile)
	}
	return env
}

// VaultErr runs the Vault CLI (`vault ARGS...`) against node n with token and
// returns its stdout; the error carries stderr. Arguments and output may hold
// secrets: the caller decides what to log.
func (c *Cluster) VaultErr(n *Node, token string, args ...string) (string, error) {
	return c.command(n, token, c.VaultBin, args...)
}

// Vault is VaultErr that fails the test on error (with the command's stderr,
// which the CLI never fills with secrets).
func (c *Cluster) Vault(t testing.TB, n *Node, token string, args ...string) string {
	t.Helper()
	out, err := c.VaultErr(n, token, args...)
	if err != nil {
		t.Fatalf("vaulttest: vault %s (against %s): %v", strings.Join(args, " "), n.Name, err)
	}
	return out
}

// Script runs bootstrap/NAME ARGS... against node n with token (the script
// drives the Vault CLI) and returns its stdout, failing the test on error.
func (c *Cluster) Script(t testing.TB, n *Node, token, name string, args ...string) string {
	t.Helper()
	out, err := c.command(n, token, filepath.Join(c.root, "bootstrap", name), args...)
	if err != nil {
		t.Fatalf("vaulttest: bootstrap/%s %s (against %s): %v", name, strings.Join(args, " "), n.Name, err)
	}
	return out
}

// ScriptPath is the path of a file of this checkout, relative to the module
// root (for example "scripts/dev-cluster.sh").
func (c *Cluster) ScriptPath(rel string) string { return filepath.Join(c.root, rel) }

// command runs bin with args and the cluster environment for node n.
func (c *Cluster) command(n *Node, token, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(baseEnv(), c.Env(n, token)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// NodeAppRole runs bootstrap/node-approle.sh for keyring and node name (the
// reader policy of that keyring, auth/approle, role ticketkeys-NAME) and
// returns the directory holding its role-id and secret-id files.
func (c *Cluster) NodeAppRole(t testing.TB, keyring, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "approle-"+name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	c.Script(t, c.Nodes[0], c.RootToken, "node-approle.sh", keyring, name, dir)
	return dir
}

// StartAgent runs a Vault Agent with configHCL whose VAULT_ADDR is node n and
// VAULT_CACERT the cluster CA (the config's vault stanza takes precedence).
// It is stopped by PID when t ends; see StartAgent for the rest.
func (c *Cluster) StartAgent(t testing.TB, n *Node, configHCL string) *Process {
	t.Helper()
	env := []string{"VAULT_ADDR=" + n.Addr, "VAULT_CACERT=" + c.CAFile}
	if c.Kind == OpenBao {
		env = append(env, "BAO_ADDR="+n.Addr, "BAO_CACERT="+c.CAFile)
	}
	return startAgent(t, c.VaultBin, configHCL, env)
}

// Stop stops every node (SIGTERM, then SIGKILL after a grace period) and waits
// for it. StartCluster registers it as a cleanup.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// Health is node n's sys/health, or an error when it cannot be reached.
func (c *Cluster) Health(n *Node) (*api.HealthResponse, error) {
	cl, err := c.newNodeClient(n, "")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cl.Sys().HealthWithContext(ctx)
}

// Active returns the node that reports itself active (sys/health), or nil.
func (c *Cluster) Active() *Node {
	for _, n := range c.Nodes {
		if n.Running() {
			if h, err := c.Health(n); err == nil && h.Initialized && !h.Sealed && !h.Standby {
				return n
			}
		}
	}
	return nil
}

// WaitActive waits until a node other than those in except is active and
// every running unsealed node names it as leader, and returns it.
func (c *Cluster) WaitActive(t testing.TB, timeout time.Duration, except ...*Node) *Node {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if a := c.Active(); a != nil && !containsNode(except, a) && c.allFollow(a) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: no active node (other than %s) within %s", nodeNames(except), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// allFollow reports whether every running, unsealed node names a as leader.
func (c *Cluster) allFollow(a *Node) bool {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		cl, err := c.newNodeClient(n, "")
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l, err := cl.Sys().LeaderWithContext(ctx)
		cancel()
		if err != nil {
			if h, herr := c.Health(n); herr == nil && h.Sealed {
				continue // a sealed node has no leader to report
			}
			return false
		}
		if l.LeaderAddress != a.Addr {
			return false
		}
	}
	return true
}

// Autopilot returns sys/storage/raft/autopilot/state as seen by node n.
func (c *Cluster) Autopilot(n *Node) (*api.AutopilotState, error) {
	cl, err := c.newNodeClient(n, c.RootToken)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := cl.Sys().RaftAutopilotStateWithContext(ctx)
	if err == nil && st == nil {
		err = errors.New("autopilot state: 404 (not a raft cluster?)")
	}
	return st, err
}

// WaitHealthy waits until the active node's autopilot state is healthy with
// every node a healthy voter and a failure tolerance of one.
func (c *Cluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if a := c.Active(); a != nil {
			st, err := c.Autopilot(a)
			switch {
			case err != nil:
				last = err.Error()
			case healthyVoters(st) == ClusterSize && st.Healthy && st.FailureTolerance >= 1:
				return
			default:
				last = fmt.Sprintf("healthy=%t failure_tolerance=%d voters=%v healthy voters=%d", st.Healthy, st.FailureTolerance, st.Voters, healthyVoters(st))
			}
		} else {
			last = "no active node"
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: cluster not healthy within %s: %s", timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// healthyVoters counts the servers autopilot reports as healthy voters.
func healthyVoters(st *api.AutopilotState) int {
	n := 0
	for _, s := range st.Servers {
		if s.Status == "voter" || s.Status == "leader" {
			if s.Healthy {
				n++
			}
		}
	}
	return n
}

// InstallPlugin puts the plugin binary src into every node's plugin
// directory under file name file and returns its hex sha256: what an
// operator does on each node before registering a new version.
func (c *Cluster) InstallPlugin(t testing.TB, src, file string) string {
	t.Helper()
	var sum string
	for _, n := range c.Nodes {
		dst := filepath.Join(n.PluginDir, file)
		if err := copyFile(src, dst); err != nil {
			t.Fatalf("vaulttest: install %s into %s: %v", file, n.Name, err)
		}
		s, err := fileSHA256(dst)
		if err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
		sum = s
	}
	return sum
}

// BuildPluginVersion builds the plugin from this checkout with its Version
// stamped to version (go build -ldflags -X, see version.go) into a temporary
// directory and returns the binary's path.
func BuildPluginVersion(t testing.TB, version string) string {
	t.Helper()
	return buildPluginWith(t, version, nil)
}

// buildPluginWith builds the plugin from this checkout into a temporary
// directory with its Version stamped to version (unless empty) and the extra
// build tags, and returns the binary's path.
func buildPluginWith(t testing.TB, version string, tags []string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	args := []string{"build"}
	name := PluginFile
	if version != "" {
		args = append(args, "-ldflags", "-X github.com/ticketkeys/vault-plugin-secrets-ticketkeys.Version="+version)
		name += "-" + version
	}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	out := filepath.Join(t.TempDir(), name)
	args = append(args, "-o", out, "./cmd/"+PluginFile)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vaulttest: go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// Running reports whether the node's server process runs.
func (n *Node) Running() bool { return n.Proc != nil && !n.Proc.Exited() }

// Kill sends SIGKILL to the node's process group (the server and the plugin
// processes it started), as a crash or a power loss would, and waits for the
// server to exit.
func (n *Node) Kill(t testing.TB) {
	t.Helper()
	if !n.Running() {
		t.Fatalf("vaulttest: kill %s: not running", n.Name)
	}
	_ = syscall.Kill(-n.Proc.PID, syscall.SIGKILL)
	select {
	case <-n.Proc.Done():
	case <-time.After(stopGrace):
		t.Fatalf("vaulttest: %s (pid %d) did not exit after SIGKILL", n.Name, n.Proc.PID)
	}
	n.Proc.Stop() // reaps what is left of the group; a no-op otherwise
}

// Stop stops the node gracefully (SIGTERM, SIGKILL after a grace period). A
// stopped active node steps down; the others elect a new leader.
func (n *Node) Stop() {
	if n.Proc != nil {
		n.Proc.Stop()
	}
}

// Start starts a stopped or killed node again with the same config, address
// and Raft data, and waits until its API answers. The node is sealed.
func (n *Node) Start(t testing.TB) {
	t.Helper()
	if n.Running() {
		t.Fatalf("vaulttest: start %s: already running (pid %d)", n.Name, n.Proc.PID)
	}
	if err := n.run(); err != nil {
		t.Fatalf("vaulttest: start %s: %v\n%s", n.Name, err, fileTail(n.LogPath, logTailLines))
	}
}

// Unseal submits the unseal key to the node (SubmitUnsealKey) and waits
// until the node is either active or a standby that knows the leader. A
// cluster with every node sealed elects no leader until a quorum is unsealed:
// call SubmitUnsealKey on each node there, then Cluster.WaitActive.
func (n *Node) Unseal(t testing.TB) {
	t.Helper()
	n.SubmitUnsealKey(t)
	deadline := time.Now().Add(activeTimeout)
	for {
		h, err := n.c.Health(n)
		if err == nil && !h.Sealed && (!h.Standby || n.knowsLeader()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: %s unsealed but neither active nor a standby with a leader within %s (health %+v, %v)", n.Name, activeTimeout, h, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// SubmitUnsealKey submits the unseal key to the node, retrying while a
// joining node has not fetched its join challenge yet, until the node reports
// itself unsealed.
func (n *Node) SubmitUnsealKey(t testing.TB) {
	t.Helper()
	cl := n.c.Client(t, n, "")
	deadline := time.Now().Add(activeTimeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cl.Sys().UnsealWithContext(ctx, n.c.unsealKey)
		cancel()
		if err == nil && !st.Sealed {
			break
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("still sealed (initialized=%t progress=%d/%d)", st.Initialized, st.Progress, st.T)
		}
		if !n.Running() {
			t.Fatalf("vaulttest: %s (pid %d) exited while unsealing: %v\n%s", n.Name, n.Proc.PID, n.Proc.ExitError(), fileTail(n.LogPath, logTailLines))
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: unseal %s within %s: %v\n%s", n.Name, activeTimeout, last, fileTail(n.LogPath, logTailLines))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// knowsLeader reports whether the node names a leader other than itself.
func (n *Node) knowsLeader() bool {
	cl, err := n.c.newNodeClient(n, "")
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l, err := cl.Sys().LeaderWithContext(ctx)
	return err == nil && l.LeaderAddress != "" && l.LeaderAddress != n.Addr
}

// Restart stops the node gracefully, starts it and unseals it.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Stop()
	n.Start(t)
	n.Unseal(t)
}

// RestartSealed stops the node and starts it again without unsealing it: a
// sealed node. (Vault seals only an active node through sys/seal; a standby
// is sealed by restarting it.)
func (n *Node) RestartSealed(t testing.TB) {
	t.Helper()
	n.Stop()
	n.Start(t)
}

// Seal seals the node through `vault operator seal` with the root token. Only
// an active node can be sealed this way: it steps down first, and another
// node takes over.
func (n *Node) Seal(t testing.TB) {
	t.Helper()
	n.c.Vault(t, n, n.c.RootToken, "operator", "seal")
}

func containsNode(list []*Node, n *Node) bool {
	for _, m := range list {
		if m == n {
			return true
		}
	}
	return false
}

func nodeNames(list []*Node) string {
	var names []string
	for _, n := range list {
		names = append(names, n.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
