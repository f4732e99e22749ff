// Package vaultclient builds the Vault API client of this project's programs (the Caddy module, the example
// server, the fleet check) from explicit settings only.
//
// vault/api's DefaultConfig reads the environment: VAULT_SKIP_VERIFY turns certificate checks off,
// VAULT_CACERT and VAULT_CAPATH change the trusted roots, VAULT_CLIENT_CERT and VAULT_TLS_SERVER_NAME change
// the handshake, VAULT_HTTP_PROXY and VAULT_PROXY_ADDR route every request elsewhere. Any of them in a
// server's environment would silently change how the keys are fetched (VAULT_SKIP_VERIFY=true even with a
// CA file configured). New builds the transport itself, reads none of them, and drops what api.NewClient
// still takes from the environment (VAULT_TOKEN, VAULT_NAMESPACE, VAULT_HEADERS).
//
// Plain HTTP is allowed only to a loopback address (a local Vault Agent or Proxy, a test server): anywhere
// else it would carry the token and the keys in clear. A caller that must allow it sets AllowInsecureHTTP
// from an explicit flag and says so at start.
package vaultclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/vault/api"
)

// Config is everything that decides how a program talks to Vault.
type Config struct {
	// Address is Vault's (or a local Agent's) address: https://HOST:PORT, http://LOOPBACK:PORT or
	// unix:///PATH. Required.
	Address string
	// AddressField names Address in the caller's configuration ("address", "-vault-addr") for errors.
	// If empty, "address".
	AddressField string
	// CACertFile is a PEM file of the CA certificates that verify Vault's certificate. If empty, the
	// system roots.
	CACertFile string
	// AllowInsecureHTTP allows http:// to a non-loopback address. Set it only from an explicit setting
	// whose name says so, and print it at start.
	AllowInsecureHTTP bool
	// MaxRetries is vault/api's own retry count. If zero, none (the callers retry with their own backoff).
	MaxRetries int
	// Timeout bounds each request. If zero, 60 seconds.
	Timeout time.Duration
}

// IgnoredEnvironment lists the variables vault/api would read to change TLS or routing. New ignores them;
// EnvironmentIgnored reports which are set, so a program can say it ignores them.
var IgnoredEnvironment = []string{
	"VAULT_SKIP_VERIFY", "VAULT_CACERT", "VAULT_CACERT_BYTES", "VAULT_CAPATH", "VAULT_CLIENT_CERT",
	"VAULT_CLIENT_KEY", "VAULT_TLS_SERVER_NAME", "VAULT_HTTP_PROXY", "VAULT_PROXY_ADDR", "VAULT_DISABLE_REDIRECTS",
	"VAULT_SRV_LOOKUP", "VAULT_HEADERS", "VAULT_NAMESPACE",
}

// EnvironmentIgnored returns the variables of IgnoredEnvironment that are set in this process.
func EnvironmentIgnored() []string {
	var set []string
	for _, name := range IgnoredEnvironment {
		if _, ok := os.LookupEnv(name); ok {
			set = append(set, name)
		}
	}
	return set
}

// CheckAddress checks a Vault address: https://, unix://, or http:// to a loopback host (127.0.0.0/8, ::1,
// localhost) unless allowInsecureHTTP. field names the setting in errors.
func CheckAddress(field, addr string, allowInsecureHTTP bool) error {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "unix" && u.Host == "" {
		return fmt.Errorf("%s: must start with https://, http:// (loopback only) or unix:// and name a host, got %q", field, addr)
	}
	switch u.Scheme {
	case "https", "unix":
		return nil
	case "http":
		if allowInsecureHTTP || IsLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%s: plain http:// only to a loopback address (a local Vault Agent or Proxy); "+
			"%q would send the token and the keys in clear: use https://", field, addr)
	default:
		return fmt.Errorf("%s: must start with https://, http:// (loopback only) or unix://, got %q", field, addr)
	}
}

// IsLoopback reports whether host is a loopback IP address or "localhost".
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// New builds a Vault client from c alone, with no token.
func New(c Config) (*api.Client, error) {
	field := c.AddressField
	if field == "" {
		field = "address"
	}
	if err := CheckAddress(field, c.Address, c.AllowInsecureHTTP); err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACertFile != "" {
		pem, err := os.ReadFile(c.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", c.CACertFile)
		}
		tlsCfg.RootCAs = pool
	}
	transport := cleanhttp.DefaultPooledTransport()
	transport.Proxy = nil // no proxy from the environment either: requests go where Address says
	transport.TLSClientConfig = tlsCfg
	transport.TLSHandshakeTimeout = 10 * time.Second
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	cfg := &api.Config{
		Address: c.Address,
		HttpClient: &http.Client{
			Transport: transport,
			// vault/api follows Vault's redirects itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Timeout:    timeout,
		MaxRetries: c.MaxRetries,
	}
	vc, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	// api.NewClient still takes these from the environment.
	vc.ClearToken()
	vc.ClearNamespace()
	vc.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	return vc, nil
}
