// Package caddyticketkeys is a Caddy session-ticket key source
// (tls.stek.ticketkeys) fed by a ticketkeys keyring in Vault.
//
// Caddy installs the keys it is given with tls.Config.SetSessionTicketKeys
// on every TLS configuration it manages. This module gives it the keyring's
// window through the ticketkeys client package: the current key first, then
// the next key (decrypt-only until its activation), then previous keys until
// their not_after. Keys activate and retire at the times Vault published, on
// a local timer, so every Caddy node switches at the same instant even while
// Vault is unreachable; see docs/caddy.md for configuration and outages.
//
// Tickets are in crypto/tls's own format, so Caddy nodes resume each other's
// sessions; they share tickets with Go servers using the client package's
// ConfigureServer only if both produce the same ticket format.
package caddyticketkeys

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/hashicorp/vault/api/auth/approle"
	"go.uber.org/zap"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaultclient"
)

func init() {
	caddy.RegisterModule(KeySource{})
}

// KeySource is the tls.stek.ticketkeys module: Caddy's session-ticket keys
// come from a ticketkeys keyring in Vault.
//
// Exactly one way to authenticate must be configured: token_file, approle,
// or agent_address (a local Vault Agent or Proxy that adds its auto-auth
// token). String fields accept Caddy's global placeholders, for example
// {env.VAULT_ADDR}.
type KeySource struct {
	// Address is the Vault server's address, for example
	// "https://vault.example.com:8200". Required unless AgentAddress is set.
	// Plain http:// is refused except to a loopback address. Only this JSON
	// configures the Vault client: VAULT_SKIP_VERIFY, VAULT_CACERT,
	// VAULT_CLIENT_CERT, VAULT_TLS_SERVER_NAME and the proxy variables in
	// Caddy's environment are ignored (and logged as ignored).
	Address string `json:"address,omitempty"`

	// AgentAddress is the address of a local Vault Agent or Vault Proxy with
	// auto_auth and use_auto_auth_token, for example "http://127.0.0.1:8100"
	// (http:// only to a loopback address) or "unix:///run/vault-agent.sock".
	// Requests carry no token of their own. Mutually exclusive with Address,
	// TokenFile and AppRole.
	AgentAddress string `json:"agent_address,omitempty"`

	// Mount is the path the ticketkeys engine is mounted at. If empty,
	// "ticketkeys".
	Mount string `json:"mount,omitempty"`

	// Keyring is the name of the keyring to read. Required.
	Keyring string `json:"keyring,omitempty"`

	// TokenFile is a file holding a Vault token with the reader policy of
	// the keyring (bootstrap/policies). It is read when the module starts
	// and at every config load; a token that expires needs approle or
	// agent_address instead.
	TokenFile string `json:"token_file,omitempty"`

	// AppRole logs in with AppRole and keeps the token renewed, logging in
	// again when it cannot be renewed.
	AppRole *AppRole `json:"approle,omitempty"`

	// CAFile is a PEM file of the CA certificates that verify Vault's TLS
	// certificate. If empty, the system roots.
	CAFile string `json:"ca_file,omitempty"`

	// FirstWindowTimeout bounds how long loading the config waits for the
	// first login and the first valid window; loading fails after it (a
	// reload then keeps the running config). If zero, 1 minute.
	FirstWindowTimeout caddy.Duration `json:"first_window_timeout,omitempty"`

	// RetryBackoffMin and RetryBackoffMax bound the capped exponential
	// backoff (with jitter) between failed reads and logins. If zero, 500ms
	// and 30s.
	RetryBackoffMin caddy.Duration `json:"retry_backoff_min,omitempty"`
	RetryBackoffMax caddy.Duration `json:"retry_backoff_max,omitempty"`

	logger  *zap.Logger
	ctx     caddy.Context
	poolKey string        // set while this instance holds a reference
	shared  *sharedSource // the Source this instance uses
	sub     chan struct{} // signalled when the keys in use change
	initial [][32]byte    // keys returned by Initialize
}

// AppRole is the AppRole login of a KeySource.
type AppRole struct {
	// RoleID is the role's role_id. Set it or RoleIDFile.
	RoleID string `json:"role_id,omitempty"`
	// RoleIDFile is a file holding the role_id (bootstrap/node-approle.sh
	// writes one). Set it or RoleID.
	RoleIDFile string `json:"role_id_file,omitempty"`
	// SecretIDFile is a file holding the secret_id; it is read again at
	// every login. Required.
	SecretIDFile string `json:"secret_id_file,omitempty"`
	// MountPath is the path the AppRole auth method is enabled at. If empty,
	// "approle".
	MountPath string `json:"mount_path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (KeySource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.stek.ticketkeys",
		New: func() caddy.Module { return new(KeySource) },
	}
}

const (
	defaultMount              = "ticketkeys"
	defaultAppRoleMount       = "approle"
	defaultFirstWindowTimeout = time.Minute
	defaultBackoffMin         = 500 * time.Millisecond
	defaultBackoffMax         = 30 * time.Second
)

// Provision fills in defaults and placeholders. It does no I/O: Vault is
// first contacted in Initialize, after Validate.
func (k *KeySource) Provision(ctx caddy.Context) error {
	k.ctx = ctx
	k.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	for _, f := range []*string{&k.Address, &k.AgentAddress, &k.Mount, &k.Keyring, &k.TokenFile, &k.CAFile} {
		*f = strings.TrimSpace(repl.ReplaceKnown(*f, ""))
	}
	if k.AppRole != nil {
		for _, f := range []*string{&k.AppRole.RoleID, &k.AppRole.RoleIDFile, &k.AppRole.SecretIDFile, &k.AppRole.MountPath} {
			*f = strings.TrimSpace(repl.ReplaceKnown(*f, ""))
		}
		if k.AppRole.MountPath == "" {
			k.AppRole.MountPath = defaultAppRoleMount
		}
	}
	k.Mount = strings.Trim(k.Mount, "/")
	if k.Mount == "" {
		k.Mount = defaultMount
	}
	if k.FirstWindowTimeout == 0 {
		k.FirstWindowTimeout = caddy.Duration(defaultFirstWindowTimeout)
	}
	if k.RetryBackoffMin == 0 {
		k.RetryBackoffMin = caddy.Duration(defaultBackoffMin)
	}
	if k.RetryBackoffMax == 0 {
		k.RetryBackoffMax = caddy.Duration(max(defaultBackoffMax, time.Duration(k.RetryBackoffMin)))
	}
	return nil
}

var keyringNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Validate checks the configuration; errors name the field, the rule and
// the value (never a secret).
func (k *KeySource) Validate() error {
	const p = "tls.stek.ticketkeys: "
	if !keyringNameRE.MatchString(k.Keyring) {
		return fmt.Errorf(p+"keyring: must be 1-128 characters of A-Z a-z 0-9 _ - . starting with a letter or digit, got %q", k.Keyring)
	}
	auths := 0
	for _, set := range []bool{k.TokenFile != "", k.AppRole != nil, k.AgentAddress != ""} {
		if set {
			auths++
		}
	}
	if auths != 1 {
		return fmt.Errorf(p+"auth: set exactly one of token_file, approle and agent_address, got %d", auths)
	}
	switch {
	case k.AgentAddress != "" && k.Address != "":
		return fmt.Errorf(p+"address: must be empty with agent_address (requests go to the Agent), got %q", k.Address)
	case k.AgentAddress == "" && k.Address == "":
		return errors.New(p + `address: required (the Vault server, for example "https://vault.example.com:8200"), got ""`)
	}
	if err := checkURL("address", k.Address); err != nil {
		return err
	}
	if err := checkURL("agent_address", k.AgentAddress); err != nil {
		return err
	}
	if a := k.AppRole; a != nil {
		if (a.RoleID == "") == (a.RoleIDFile == "") {
			return errors.New(p + "approle: set exactly one of role_id and role_id_file")
		}
		if a.SecretIDFile == "" {
			return errors.New(p + `approle.secret_id_file: required, got ""`)
		}
	}
	if k.RetryBackoffMin <= 0 || k.RetryBackoffMax < k.RetryBackoffMin {
		return fmt.Errorf(p+"retry_backoff_min, retry_backoff_max: must be > 0 and max >= min, got %s and %s",
			time.Duration(k.RetryBackoffMin), time.Duration(k.RetryBackoffMax))
	}
	if k.FirstWindowTimeout < 0 {
		return fmt.Errorf(p+"first_window_timeout: must be > 0, got %s", time.Duration(k.FirstWindowTimeout))
	}
	return nil
}

// checkURL: https:// or unix:// anywhere, plain http:// only to a loopback address (a local Agent or
// Proxy); there is no setting that allows more.
func checkURL(field, v string) error {
	if v == "" {
		return nil
	}
	return vaultclient.CheckAddress("tls.stek.ticketkeys: "+field, v, false)
}

// Initialize returns the keys in use, blocking until the first login and
// the first valid window (at most first_window_timeout). A Source is shared
// by every loaded config with the same settings, so a config reload keeps
// the running Source and its window without asking Vault, which also makes
// reloads work while Vault is unreachable.
func (k *KeySource) Initialize(*caddytls.SessionTicketService) ([][32]byte, error) {
	key, err := k.poolKeyOf()
	if err != nil {
		return nil, err
	}
	val, loaded, err := sources.LoadOrNew(key, func() (caddy.Destructor, error) { return k.newShared() })
	if err != nil {
		// A failed constructor leaves no entry in the pool: nothing to release.
		return nil, err
	}
	k.poolKey, k.shared = key, val.(*sharedSource)
	k.shared.setLogger(k.slogHandler())
	k.sub = k.shared.subscribe()
	k.initial = k.shared.src.TicketKeys()
	if len(k.initial) == 0 {
		// Only a Source with tickets disabled returns no keys, and this module never asks for that;
		// crypto/tls panics on an empty list, so refuse it here.
		_ = k.Cleanup()
		return nil, errors.New("tls.stek.ticketkeys: the Source returned no session ticket keys")
	}
	if loaded {
		k.logger.Info("reusing the running ticket-key source of a previous config", zap.String("keyring", k.Mount+"/"+k.Keyring), zap.Int("keys", len(k.initial)))
	} else {
		k.logger.Info("session ticket keys from Vault", zap.String("keyring", k.Mount+"/"+k.Keyring), zap.Int("keys", len(k.initial)))
	}
	return k.initial, nil
}

// Next sends the keys in use on the returned channel whenever they change:
// at each local activation and retirement and whenever a read changes the
// window. It stops when done is closed.
func (k *KeySource) Next(done <-chan struct{}) <-chan [][32]byte {
	out := make(chan [][32]byte)
	go func() {
		last := k.initial
		for {
			select {
			case <-done:
				return
			case <-k.sub:
			}
			keys := k.shared.src.TicketKeys()
			if len(keys) == 0 || sameKeys(keys, last) {
				clear(keys)
				continue
			}
			select {
			case out <- keys:
				last = keys
				k.logger.Info("session ticket keys changed", zap.Int("keys", len(keys)))
			case <-done:
				return
			}
		}
	}()
	return out
}

// Cleanup releases this config's reference to the shared Source; the last
// reference closes it (and its login).
func (k *KeySource) Cleanup() error {
	if k.shared != nil {
		k.shared.unsubscribe(k.sub)
	}
	if k.poolKey != "" {
		_, err := sources.Delete(k.poolKey)
		k.poolKey = ""
		return err
	}
	return nil
}

func sameKeys(a, b [][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sources holds one sharedSource per distinct configuration, across config
// reloads.
var sources = caddy.NewUsagePool()

// poolKeyOf identifies the Source this config needs: every setting, plus a
// digest of the token file's content (a reload after the token file changed
// starts a Source with the new token). It holds no secret.
func (k *KeySource) poolKeyOf() (string, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return "", fmt.Errorf("tls.stek.ticketkeys: encoding the config: %v", err)
	}
	key := string(b)
	if k.TokenFile != "" {
		tok, err := readSecretFile("token_file", k.TokenFile)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256([]byte(tok))
		key += " token:" + hex.EncodeToString(sum[:])
	}
	return key, nil
}

// readSecretFile reads a one-line credential file. Errors never include
// its content.
func readSecretFile(field, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("tls.stek.ticketkeys: %s: %v", field, err)
	}
	v := strings.TrimSpace(string(b))
	clear(b)
	if v == "" {
		return "", fmt.Errorf("tls.stek.ticketkeys: %s: %s is empty", field, path)
	}
	return v, nil
}

// newShared logs in (if configured) and starts the Source, blocking until
// the first valid window or first_window_timeout.
func (k *KeySource) newShared() (*sharedSource, error) {
	s := &sharedSource{subs: map[chan struct{}]struct{}{}}
	s.setLogger(k.slogHandler())
	logger := slog.New(s.handler())

	// Only the module's JSON decides how Vault is reached: vault/api's DefaultConfig would take
	// VAULT_SKIP_VERIFY, VAULT_CACERT, proxies and more from Caddy's environment.
	if ignored := vaultclient.EnvironmentIgnored(); len(ignored) > 0 {
		logger.Warn("ignoring Vault client settings from the environment: the module's JSON alone configures its Vault client",
			slog.Any("variables", ignored))
	}
	addr, field := k.Address, "address"
	if k.AgentAddress != "" {
		addr, field = k.AgentAddress, "agent_address"
	}
	vc, err := vaultclient.New(vaultclient.Config{Address: addr, AddressField: "tls.stek.ticketkeys: " + field, CACertFile: k.CAFile})
	if err != nil {
		return nil, fmt.Errorf("tls.stek.ticketkeys: %w", err)
	}
	ctx, cancel := context.WithTimeout(k.ctx, time.Duration(k.FirstWindowTimeout))
	defer cancel()
	opts := []client.Option{
		client.WithLogger(logger),
		client.WithRetryBackoff(time.Duration(k.RetryBackoffMin), time.Duration(k.RetryBackoffMax)),
		client.WithObserver(client.Observer{Advance: func(client.AdvanceEvent) { s.notify() }}),
	}
	switch {
	case k.TokenFile != "":
		tok, err := readSecretFile("token_file", k.TokenFile)
		if err != nil {
			return nil, err
		}
		vc.SetToken(tok)
	case k.AppRole != nil:
		roleID := k.AppRole.RoleID
		if k.AppRole.RoleIDFile != "" {
			if roleID, err = readSecretFile("approle.role_id_file", k.AppRole.RoleIDFile); err != nil {
				return nil, err
			}
		}
		if _, err := os.Stat(k.AppRole.SecretIDFile); err != nil {
			return nil, fmt.Errorf("tls.stek.ticketkeys: approle.secret_id_file: %v", err)
		}
		auth, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromFile: k.AppRole.SecretIDFile}, approle.WithMountPath(k.AppRole.MountPath))
		if err != nil {
			return nil, fmt.Errorf("tls.stek.ticketkeys: approle: %v", err)
		}
		if s.login, err = client.KeepLogin(ctx, vc, auth, opts[:2]...); err != nil {
			return nil, fmt.Errorf("tls.stek.ticketkeys: approle login at %s: %w", addr, err)
		}
	}
	if s.src, err = client.NewSource(ctx, vc, k.Mount, k.Keyring, opts...); err != nil {
		if s.login != nil {
			_ = s.login.Close()
		}
		return nil, fmt.Errorf("tls.stek.ticketkeys: %w", err)
	}
	return s, nil
}

// slogHandler sends the client package's logs to this config's zap logger.
func (k *KeySource) slogHandler() slog.Handler {
	return zapHandler(k.logger)
}

// sharedSource is one Source (and its login) used by every loaded config
// with the same settings.
type sharedSource struct {
	src   *client.Source
	login *client.Login // nil unless AppRole
	log   liveLogger

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// subscribe returns a channel signalled (coalesced) whenever the keys in
// use change.
func (s *sharedSource) subscribe() chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch
}

func (s *sharedSource) unsubscribe(ch chan struct{}) {
	s.mu.Lock()
	delete(s.subs, ch)
	s.mu.Unlock()
}

// notify is the Source's Advance hook: it runs at every change of the keys
// in use (a new window, a local activation or retirement, exhaustion,
// recovery) and must not block.
func (s *sharedSource) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *sharedSource) setLogger(h slog.Handler) { s.log.set(h) }
func (s *sharedSource) handler() slog.Handler    { return s.log.handler() }

// Destruct stops the Source and the login when the last config using them
// is unloaded.
func (s *sharedSource) Destruct() error {
	if s.src != nil {
		_ = s.src.Close()
	}
	if s.login != nil {
		_ = s.login.Close()
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Module          = (*KeySource)(nil)
	_ caddy.Provisioner     = (*KeySource)(nil)
	_ caddy.Validator       = (*KeySource)(nil)
	_ caddy.CleanerUpper    = (*KeySource)(nil)
	_ caddytls.STEKProvider = (*KeySource)(nil)
	_ caddy.Destructor      = (*sharedSource)(nil)
)
