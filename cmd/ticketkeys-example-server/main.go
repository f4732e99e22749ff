// Command ticketkeys-example-server serves HTTPS with session-ticket keys
// taken from a ticketkeys keyring in Vault, so that every instance of it
// behind a load balancer resumes the others' TLS sessions.
//
// Vault is reached at -vault-addr (default: VAULT_ADDR, else VAULT_AGENT_ADDR
// for a local Vault Agent or Proxy that adds the token), verified with
// -vault-ca-cert (default: the system roots), with the token of VAULT_TOKEN.
// No other VAULT_* variable changes the client (VAULT_SKIP_VERIFY,
// VAULT_CACERT, proxies: internal/vaultclient), and plain http:// is refused
// except to a loopback address unless -vault-insecure-http, which is
// printed at start. With -approle-role-id and -approle-secret-id-file it
// logs in with AppRole instead and keeps the login renewed.
//
//	VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=... \
//	  ticketkeys-example-server -addr 127.0.0.1:8443 -cert cert.pem -key key.pem -keyring web
//
// GET / answers "hello" on the HTTPS address. With -admin-addr (a loopback
// address; off by default) a separate plain-HTTP listener serves
// GET /ticketkeys/status, the source's state as JSON (times, counts and
// states; never keys or key ids), and GET /metrics, the client/promcollector
// metrics. Neither is served on the public TLS port.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client/promcollector"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaultclient"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-example-server:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8443", "HTTPS listen address")
	adminAddr := flag.String("admin-addr", "", "loopback address of a plain-HTTP listener for /ticketkeys/status and /metrics (off when empty)")
	certFile := flag.String("cert", "", "PEM certificate chain file (required)")
	keyFile := flag.String("key", "", "PEM private key file (required)")
	mount := flag.String("mount", "ticketkeys", "mount path of the ticketkeys engine")
	keyring := flag.String("keyring", "web", "keyring name")
	roleID := flag.String("approle-role-id", "", "log in with this AppRole role_id (optional)")
	secretIDFile := flag.String("approle-secret-id-file", "", "file holding the AppRole secret_id (with -approle-role-id)")
	vaultAddr := flag.String("vault-addr", firstEnv("VAULT_ADDR", "VAULT_AGENT_ADDR"), "Vault (or local Agent) address: https://, unix://, or http:// to a loopback address")
	vaultCACert := flag.String("vault-ca-cert", "", "PEM file of the CAs that verify Vault's certificate (default: the system roots)")
	insecureHTTP := flag.Bool("vault-insecure-http", false, "allow plain http:// to a non-loopback Vault address: the token and the keys travel in clear")
	startTimeout := flag.Duration("start-timeout", 30*time.Second, "how long to wait for the first key window")
	disable := flag.Bool("disable-tickets-on-exhaustion", false, "turn tickets off, instead of a node-local key, when Vault stays unreachable past the schedule")
	flag.Parse()
	if *certFile == "" || *keyFile == "" {
		return errors.New("-cert and -key: required, got empty")
	}
	if err := checkAdminAddr(*adminAddr); err != nil {
		return err
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	vc, err := vaultClient(*vaultAddr, *vaultCACert, *insecureHTTP, logger)
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, *startTimeout)
	defer cancel()
	if *roleID != "" {
		auth, err := approle.NewAppRoleAuth(*roleID, &approle.SecretID{FromFile: *secretIDFile})
		if err != nil {
			return fmt.Errorf("approle: %w", err)
		}
		login, err := client.KeepLogin(startCtx, vc, auth, client.WithLogger(logger))
		if err != nil {
			return err
		}
		defer login.Close()
	}

	opts := []client.Option{client.WithLogger(logger)}
	if *disable {
		opts = append(opts, client.WithDisableTicketsOnExhaustion())
	}
	src, err := client.NewSource(startCtx, vc, *mount, *keyring, opts...)
	if err != nil {
		return err
	}
	defer src.Close()

	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("-cert/-key: %w", err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if err := src.ConfigureServer(tlsCfg); err != nil {
		return err
	}

	srv := &http.Server{Handler: publicHandler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	logger.Info("serving HTTPS", slog.String("addr", ln.Addr().String()))
	errc := make(chan error, 2)
	go func() { errc <- srv.ServeTLS(ln, "", "") }() // ServeTLS clones tlsCfg: the hook survives
	servers := []*http.Server{srv}
	if *adminAddr != "" {
		adminLn, err := net.Listen("tcp", *adminAddr)
		if err != nil {
			return fmt.Errorf("-admin-addr: %w", err)
		}
		admin := &http.Server{Handler: adminHandler(src, *keyring), ReadHeaderTimeout: 10 * time.Second}
		logger.Info("serving status and metrics over HTTP", slog.String("admin_addr", adminLn.Addr().String()))
		go func() { errc <- admin.Serve(adminLn) }()
		servers = append(servers, admin)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Shutdown(shutdown))
	}
	return errors.Join(errs...)
}

// publicHandler is what the HTTPS port serves: the application only.
func publicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	return mux
}

// adminHandler serves the source's status and Prometheus metrics, on the
// loopback admin listener only.
func adminHandler(src promcollector.StatusSource, keyring string) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(promcollector.New(src, prometheus.Labels{"keyring": keyring}))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ticketkeys/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(statusJSON(src.Status()))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// checkAdminAddr accepts "" (no admin listener) or a loopback host:port:
// the status page and metrics are for the node's own monitoring agent.
func checkAdminAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-admin-addr: must be host:port, got %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-admin-addr: must be a loopback address (127.0.0.1, ::1 or localhost), got %q", addr)
	}
	return nil
}

// statusJSON keeps the status free of key ids.
func statusJSON(st client.Status) map[string]any {
	errText := ""
	if st.LastError != nil {
		errText = st.LastError.Error()
	}
	return map[string]any{
		"now":                st.Now,
		"exhausted":          st.Exhausted,
		"tickets_disabled":   st.TicketsDisabled,
		"current_not_before": st.CurrentNotBefore,
		"encrypt_until":      st.EncryptUntil,
		"legacy_until":       st.LegacyUntil,
		"next_activation":    st.NextActivation,
		"keys":               st.Keys,
		"last_refresh":       st.LastRefresh,
		"last_change":        st.LastChange,
		"last_error":         errText,
		"refreshes":          st.Refreshes,
		"refresh_errors":     st.RefreshErrors,
		"tickets":            st.Tickets,
	}
}

// firstEnv returns the first of the named environment variables that is set and not empty.
func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// vaultClient builds the Vault client from the flags alone (internal/vaultclient), with VAULT_TOKEN's token.
// It logs the insecure setting when given and the VAULT_* variables it ignores.
func vaultClient(addr, caFile string, insecureHTTP bool, logger *slog.Logger) (*api.Client, error) {
	if insecureHTTP {
		logger.Warn("INSECURE: -vault-insecure-http allows plain http:// to a non-loopback Vault: the token and the keys travel in clear", slog.String("vault_addr", addr))
	}
	if ignored := vaultclient.EnvironmentIgnored(); len(ignored) > 0 {
		logger.Warn("ignoring Vault client settings from the environment; use -vault-addr and -vault-ca-cert", slog.Any("variables", ignored))
	}
	vc, err := vaultclient.New(vaultclient.Config{Address: addr, AddressField: "-vault-addr", CACertFile: caFile, AllowInsecureHTTP: insecureHTTP, MaxRetries: 2})
	if err != nil {
		return nil, err
	}
	if tok := os.Getenv("VAULT_TOKEN"); tok != "" {
		vc.SetToken(tok)
	}
	return vc, nil
}
