// Command ticketkeys-example-server serves HTTPS with session-ticket keys
// taken from a ticketkeys keyring in Vault, so that every instance of it
// behind a load balancer resumes the others' TLS sessions.
//
// Vault is reached as vault/api's DefaultConfig reads the environment:
// VAULT_ADDR and VAULT_TOKEN, or VAULT_AGENT_ADDR for a local Vault Agent or
// Proxy that adds the token. With -approle-role-id and
// -approle-secret-id-file it logs in with AppRole instead and keeps the login
// renewed.
//
//	VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=... \
//	  ticketkeys-example-server -addr 127.0.0.1:8443 -cert cert.pem -key key.pem -keyring web
//
// GET / answers "hello"; GET /ticketkeys/status answers the source's state as
// JSON (times, counts and states; never keys or key ids).
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

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ticketkeys-example-server:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8443", "HTTPS listen address")
	certFile := flag.String("cert", "", "PEM certificate chain file (required)")
	keyFile := flag.String("key", "", "PEM private key file (required)")
	mount := flag.String("mount", "ticketkeys", "mount path of the ticketkeys engine")
	keyring := flag.String("keyring", "web", "keyring name")
	roleID := flag.String("approle-role-id", "", "log in with this AppRole role_id (optional)")
	secretIDFile := flag.String("approle-secret-id-file", "", "file holding the AppRole secret_id (with -approle-role-id)")
	startTimeout := flag.Duration("start-timeout", 30*time.Second, "how long to wait for the first key window")
	disable := flag.Bool("disable-tickets-on-exhaustion", false, "turn tickets off, instead of a node-local key, when Vault stays unreachable past the schedule")
	flag.Parse()
	if *certFile == "" || *keyFile == "" {
		return errors.New("-cert and -key: required, got empty")
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	vc, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		return fmt.Errorf("vault client: %w", err)
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

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	mux.HandleFunc("/ticketkeys/status", func(w http.ResponseWriter, r *http.Request) {
		st := src.Status()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(statusJSON(st))
	})
	srv := &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	logger.Info("serving HTTPS", slog.String("addr", ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }() // ServeTLS clones tlsCfg: the hook survives
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	return srv.Shutdown(shutdown)
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
