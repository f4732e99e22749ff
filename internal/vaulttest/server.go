package vaulttest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	ticketkeys "github.com/ticketkeys/vault-plugin-secrets-ticketkeys"
)

// Timeouts of the start sequence. They are generous because the machine is
// shared and Vault is a ~500 MB binary that may not be in the page cache.
const (
	listenTimeout = 90 * time.Second // process start until the API answers
	activeTimeout = 60 * time.Second // unseal until sys/health says active
	opTimeout     = 60 * time.Second // any single setup request
	startAttempts = 3                // tries with a new port if the port was taken
)

// AuditDevice is the path of the file audit device WithAuditFile enables.
const AuditDevice = "file"

// Server is a running Vault or OpenBao server started by Start.
type Server struct {
	// Kind is the server: Vault (the default) or OpenBao (WithServer).
	Kind Kind
	// Addr is the server's API address, http://127.0.0.1:PORT.
	Addr string
	// RootToken is the initial root token.
	RootToken string
	// Client is an API client for Addr authenticated with RootToken.
	Client *api.Client
	// VaultBin is the server binary (vault or bao); it is also the Agent
	// binary and the CLI.
	VaultBin string
	// Dir is the server's temporary directory: config, storage, plugins, logs.
	Dir string
	// LogPath is the server log (stdout and stderr of every run).
	LogPath string
	// AuditLogPath is the file of the audit device enabled by WithAuditFile
	// at AuditDevice; empty without that option.
	AuditLogPath string
	// ConfigPath is the server's configuration file; an OpenBao audit device
	// is declared there (Kind.AuditDeclared), and Reload applies a change.
	ConfigPath string
	// PluginDir is the server's plugin_directory, and PluginSHA256 the hex
	// sha256 of the plugin binary installed there under PluginFile.
	PluginDir    string
	PluginSHA256 string
	// Proc is the current server process; Restart replaces it.
	Proc *Process

	opts        options
	listenAddr  string // 127.0.0.1:PORT
	clusterAddr string // 127.0.0.1:PORT of the cluster listener
	unsealKey   string
}

type options struct {
	kind      Kind
	audit     bool
	logLevel  string
	register  bool
	pluginBin string
	buildTags []string
	env       []string
}

// Option changes what Start sets up.
type Option func(*options)

// WithAuditFile enables a file audit device at AuditDevice ("file/")
// writing to s.AuditLogPath (Dir/audit.log), before the plugin is mounted:
// through sys/audit on Vault, as an `audit` stanza of the configuration file
// on OpenBao, which refuses sys/audit over the API.
func WithAuditFile() Option { return func(o *options) { o.audit = true } }

// WithServer runs a server of kind k (Vault or OpenBao) instead of Vault.
func WithServer(k Kind) Option { return func(o *options) { o.kind = k } }

// WithLogLevel sets the server's log_level (trace, debug, info, warn,
// error). The default is info.
func WithLogLevel(level string) Option { return func(o *options) { o.logLevel = level } }

// WithoutPluginRegistration installs the plugin binary in PluginDir but
// neither registers nor mounts it, for tests of the registration itself
// (bootstrap/register.sh). PluginSHA256 is still set.
func WithoutPluginRegistration() Option { return func(o *options) { o.register = false } }

// WithPluginBinary installs the plugin binary at path (a release's, say) in PluginDir instead of building
// one from this checkout.
func WithPluginBinary(path string) Option { return func(o *options) { o.pluginBin = path } }

// WithBuildTags builds the plugin with these extra build tags (go build
// -tags), for example "ttljitterscale" (ttl_jitter_scale.go), instead of
// the shared build of this checkout.
func WithBuildTags(tags ...string) Option {
	return func(o *options) { o.buildTags = append(o.buildTags, tags...) }
}

// WithEnv adds environment variables (KEY=VALUE) to the `vault server`
// process on every start. Vault passes its environment to the plugin
// processes it starts, so this reaches the plugin too (a test build's
// knobs: TICKETKEYS_TEST_TTL_JITTER_SCALE).
func WithEnv(env ...string) Option { return func(o *options) { o.env = append(o.env, env...) } }

// Start starts a Vault server for t and stops it when t ends. See the
// package documentation for what it sets up. Any failure fails the test
// with the tail of the server log.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := options{kind: Vault, logLevel: "info", register: true}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{Kind: o.kind, VaultBin: o.kind.Binary(t), opts: o}
	plugin := o.pluginBin
	if plugin == "" && len(o.buildTags) > 0 {
		plugin = buildPluginWith(t, "", o.buildTags)
	}
	if plugin == "" {
		plugin = pluginBinary(t)
	}

	s.Dir = t.TempDir()
	s.PluginDir = filepath.Join(s.Dir, "plugins")
	s.LogPath = filepath.Join(s.Dir, o.kind.CLI()+".log")
	s.ConfigPath = filepath.Join(s.Dir, o.kind.CLI()+".hcl")
	if o.audit {
		s.AuditLogPath = filepath.Join(s.Dir, "audit.log")
	}
	for _, d := range []string{s.PluginDir, filepath.Join(s.Dir, "data")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
	}
	sum, err := installPlugin(plugin, s.PluginDir)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	s.PluginSHA256 = sum

	// Cleanups run last-in first-out: stop first, then print the log tail,
	// then (registered by t.TempDir above) remove the directory.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- last %d lines of the %s server log (%s) ---\n%s", logTailLines, s.Kind.CLI(), s.LogPath, fileTail(s.LogPath, logTailLines))
		}
	})
	t.Cleanup(s.Stop)

	if err := s.startFresh(); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	if err := s.initUnseal(); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	if o.audit && !o.kind.AuditDeclared() {
		err := s.Client.Sys().EnableAuditWithOptions(AuditDevice, &api.EnableAuditOptions{
			Type:    "file",
			Options: map[string]string{"file_path": s.AuditLogPath},
		})
		if err != nil {
			t.Fatalf("vaulttest: enable file audit device at %s/: %v", AuditDevice, err)
		}
	}
	if o.register {
		if err := s.registerAndMount(); err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
	}
	return s
}

// startFresh picks a free port and starts the server, retrying with another
// port when the chosen one was taken between picking and binding.
func (s *Server) startFresh() error {
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		// Vault also listens for cluster traffic, by default on port+1,
		// which another test may hold: give it a free port of its own.
		clusterPort, err := freePort()
		for err == nil && clusterPort == port {
			clusterPort, err = freePort()
		}
		if err != nil {
			return err
		}
		s.listenAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.clusterAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(clusterPort))
		s.Addr = "http://" + s.listenAddr
		cfg := serverConfig(s.Dir, s.listenAddr, s.clusterAddr, s.opts.logLevel)
		if s.opts.audit && s.Kind.AuditDeclared() {
			cfg += AuditStanza(AuditDevice, s.AuditLogPath)
		}
		if err := os.WriteFile(s.ConfigPath, []byte(cfg), 0o600); err != nil {
			return fmt.Errorf("write server config: %w", err)
		}
		s.Client = nil // a client for this attempt's address
		lastErr = s.run()
		if lastErr == nil {
			return nil
		}
		if !strings.Contains(fileTail(s.LogPath, 20), "address already in use") {
			return lastErr
		}
	}
	return fmt.Errorf("%d attempts, every port was taken: %w", startAttempts, lastErr)
}

// run starts the server process with the current config and waits until
// its API answers.
func (s *Server) run() error {
	p, err := startProcess(s.Kind.CLI()+" server", s.VaultBin, []string{"server", "-config=" + s.ConfigPath}, s.opts.env, s.LogPath)
	if err != nil {
		return err
	}
	s.Proc = p
	if s.Client == nil {
		c, err := newClient(s.Addr)
		if err != nil {
			p.Stop()
			return err
		}
		s.Client = c
	}
	if err := s.waitAPI(); err != nil {
		p.Stop()
		return err
	}
	return nil
}

// serverConfig renders the server configuration for a server whose files
// live under dir, which serves its API on listenAddr and cluster traffic on
// clusterAddr (both host:port).
func serverConfig(dir, listenAddr, clusterAddr, logLevel string) string {
	return fmt.Sprintf(`storage "file" {
  path = %q
}

listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
}

plugin_directory = %q
disable_mlock    = true
api_addr         = %q
cluster_addr     = %q
log_level        = %q
ui               = false
`, filepath.Join(dir, "data"), listenAddr, clusterAddr, filepath.Join(dir, "plugins"), "http://"+listenAddr, "https://"+clusterAddr, logLevel)
}

// AuditStanza is the server configuration's declaration of a file audit
// device at path device writing to file (mode 0600): how OpenBao enables
// audit devices. It is what bootstrap/audit.sh adds to an OpenBao server's
// configuration.
func AuditStanza(device, file string) string {
	return fmt.Sprintf(`
audit "file" %q {
  options {
    file_path = %q
    mode      = "0600"
  }
}
`, device, file)
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// newClient returns an API client for addr that ignores the caller's
// VAULT_* environment (token, namespace).
func newClient(addr string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault api config: %w", cfg.Error)
	}
	cfg.Address = addr
	cfg.Timeout = opTimeout
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault api client for %s: %w", addr, err)
	}
	c.ClearToken()
	c.ClearNamespace()
	return c, nil
}

// waitAPI polls sys/seal-status until the server answers, the process
// exits, or listenTimeout passes.
func (s *Server) waitAPI() error {
	deadline := time.Now().Add(listenTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := s.Client.Sys().SealStatusWithContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if s.Proc.Exited() {
			return fmt.Errorf("%s (pid %d) exited before its API answered at %s: %v", s.Proc.Name, s.Proc.PID, s.Addr, s.Proc.ExitError())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) API at %s did not answer within %s: %w", s.Proc.Name, s.Proc.PID, s.Addr, listenTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// initUnseal initialises the server with one key share, unseals it and
// waits until it is active.
func (s *Server) initUnseal() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := s.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("sys/init: %w", err)
	}
	if len(resp.Keys) != 1 || resp.RootToken == "" {
		return fmt.Errorf("sys/init: got %d unseal keys and root token set=%t, want 1 key and a root token", len(resp.Keys), resp.RootToken != "")
	}
	s.unsealKey = resp.Keys[0]
	s.RootToken = resp.RootToken
	s.Client.SetToken(s.RootToken)
	return s.unseal()
}

// unseal submits the unseal key and waits until sys/health reports an
// active, unsealed node.
func (s *Server) unseal() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := s.Client.Sys().UnsealWithContext(ctx, s.unsealKey); err != nil {
		return fmt.Errorf("sys/unseal: %w", err)
	}
	deadline := time.Now().Add(activeTimeout)
	for {
		h, err := s.Client.Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			return nil
		}
		if s.Proc.Exited() {
			return fmt.Errorf("%s (pid %d) exited while unsealing: %v", s.Proc.Name, s.Proc.PID, s.Proc.ExitError())
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("initialized=%t sealed=%t standby=%t", h.Initialized, h.Sealed, h.Standby)
			}
			return fmt.Errorf("%s (pid %d) not active within %s of unseal: %w", s.Proc.Name, s.Proc.PID, activeTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// registerAndMount registers the plugin in the catalog by sha256 and
// version and enables it at MountPath.
func (s *Server) registerAndMount() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := s.Client.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name:    PluginName,
		Type:    api.PluginTypeSecrets,
		Command: PluginFile,
		SHA256:  s.PluginSHA256,
		Version: ticketkeys.Version,
	})
	if err != nil {
		return fmt.Errorf("register plugin %s %s (sha256 %s): %w", PluginName, ticketkeys.Version, s.PluginSHA256, err)
	}
	err = s.Client.Sys().MountWithContext(ctx, MountPath, &api.MountInput{
		Type: PluginName,
		// As bootstrap/register.sh mounts it: fields without key material in clear in audit logs.
		Config: api.MountConfigInput{PluginVersion: ticketkeys.Version, AuditNonHMACResponseKeys: ticketkeys.AuditNonHMACResponseKeys},
	})
	if err != nil {
		return fmt.Errorf("enable plugin %s %s at %s/: %w", PluginName, ticketkeys.Version, MountPath, err)
	}
	return nil
}

// Stop stops the server (SIGTERM to its PID, SIGKILL after a grace period)
// and waits for it. It is safe to call more than once; Start registers it
// as a cleanup.
func (s *Server) Stop() {
	if s.Proc != nil {
		s.Proc.Stop()
	}
}

// Restart stops the server if it runs and starts it again on the same
// address and storage, then unseals it with the same key and waits until
// it is active. Tokens, policies, mounts and the plugin registration
// persist; the plugin process starts fresh.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.run(); err != nil {
		t.Fatalf("vaulttest: restart on %s: %v\n%s", s.Addr, err, fileTail(s.LogPath, logTailLines))
	}
	if err := s.unseal(); err != nil {
		t.Fatalf("vaulttest: restart on %s: %v\n%s", s.Addr, err, fileTail(s.LogPath, logTailLines))
	}
}

// NewToken creates a token with the given policies (plus "default") and a
// one-hour TTL, and returns it.
func (s *Server) NewToken(t testing.TB, policies ...string) string {
	t.Helper()
	secret, err := s.Client.Auth().Token().Create(&api.TokenCreateRequest{
		Policies: policies,
		TTL:      "1h",
	})
	if err != nil {
		t.Fatalf("vaulttest: create token with policies %q: %v", policies, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		t.Fatalf("vaulttest: create token with policies %q: no token in the response", policies)
	}
	return secret.Auth.ClientToken
}

// ClientWithToken returns a new API client for the server that uses token.
func (s *Server) ClientWithToken(t testing.TB, token string) *api.Client {
	t.Helper()
	c, err := newClient(s.Addr)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	c.SetToken(token)
	return c
}

// WritePolicy writes the ACL policy name with the given HCL.
func (s *Server) WritePolicy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := s.Client.Sys().PutPolicy(name, hcl); err != nil {
		t.Fatalf("vaulttest: write policy %q: %v", name, err)
	}
}

// EnableAppRole enables the approle auth method at approle/ (once), creates
// role with the given token policies (token TTL 1h, secret ids without
// expiry) and returns its role id and a new secret id.
func (s *Server) EnableAppRole(t testing.TB, role string, policies ...string) (roleID, secretID string) {
	t.Helper()
	auths, err := s.Client.Sys().ListAuth()
	if err != nil {
		t.Fatalf("vaulttest: list auth methods: %v", err)
	}
	if _, ok := auths["approle/"]; !ok {
		if err := s.Client.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			t.Fatalf("vaulttest: enable approle auth: %v", err)
		}
	}
	rolePath := "auth/approle/role/" + role
	_, err = s.Client.Logical().Write(rolePath, map[string]any{
		"token_policies": policies,
		"token_ttl":      "1h",
		"token_max_ttl":  "4h",
		"secret_id_ttl":  "0",
	})
	if err != nil {
		t.Fatalf("vaulttest: write approle role %q: %v", role, err)
	}
	r, err := s.Client.Logical().Read(rolePath + "/role-id")
	if err != nil || r == nil {
		t.Fatalf("vaulttest: read role id of approle role %q: %v", role, err)
	}
	roleID, _ = r.Data["role_id"].(string)
	w, err := s.Client.Logical().Write(rolePath+"/secret-id", nil)
	if err != nil || w == nil {
		t.Fatalf("vaulttest: create secret id of approle role %q: %v", role, err)
	}
	secretID, _ = w.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatalf("vaulttest: approle role %q: empty role id (%t) or secret id (%t)", role, roleID == "", secretID == "")
	}
	return roleID, secretID
}

// AuditHash returns the HMAC that the audit device AuditDevice writes for
// value (sys/audit-hash/file), the proof that a value was audited hashed.
// It needs WithAuditFile.
func (s *Server) AuditHash(t testing.TB, value string) string {
	t.Helper()
	if s.AuditLogPath == "" {
		t.Fatalf("vaulttest: AuditHash needs Start(t, vaulttest.WithAuditFile())")
	}
	h, err := s.Client.Sys().AuditHash(AuditDevice, value)
	if err != nil {
		t.Fatalf("vaulttest: sys/audit-hash/%s: %v", AuditDevice, err)
	}
	return h
}

// Reload sends SIGHUP to the server process, which rereads its
// configuration file: on OpenBao that applies the declared audit devices
// (Kind.AuditDeclared), added or removed.
func (s *Server) Reload(t testing.TB) {
	t.Helper()
	if s.Proc == nil || s.Proc.Exited() {
		t.Fatalf("vaulttest: reload: the %s server is not running", s.Kind.CLI())
	}
	if err := s.Proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("vaulttest: reload: SIGHUP to %s (pid %d): %v", s.Proc.Name, s.Proc.PID, err)
	}
}

// WaitAuditDevice waits until sys/audit lists an audit device at path
// (without the trailing slash), for example after Reload applied a declared
// one, and fails the test with the server log if none appears within
// opTimeout.
func (s *Server) WaitAuditDevice(t testing.TB, path string) {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for {
		devices, err := s.Client.Sys().ListAudit()
		if err == nil {
			if _, ok := devices[path+"/"]; ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: no audit device at %s/ on the %s server within %s (last error: %v)\n%s", path, s.Kind.CLI(), opTimeout, err, fileTail(s.LogPath, logTailLines))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
