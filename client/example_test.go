package client_test

import (
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

// A server that takes its session-ticket keys from the keyring "web" of the
// engine mounted at ticketkeys/, with VAULT_ADDR and VAULT_TOKEN (or
// VAULT_AGENT_ADDR) from the environment.
func ExampleSource_ConfigureServer() {
	vc, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := client.NewSource(ctx, vc, "ticketkeys", "web", client.WithLogger(slog.Default()))
	if err != nil {
		log.Fatal(err) // no such keyring, no permission, or no valid window in 30s
	}
	defer src.Close()

	cert, err := tls.LoadX509KeyPair("cert.pem", "key.pem")
	if err != nil {
		log.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if err := src.ConfigureServer(cfg); err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: ":8443", TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	// ListenAndServeTLS clones cfg; the Source's hooks survive the clone.
	log.Fatal(srv.ListenAndServeTLS("", ""))
}

// Logging in with AppRole and keeping the token renewed, before reading.
func ExampleKeepLogin() {
	vc, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		log.Fatal(err)
	}
	auth, err := approle.NewAppRoleAuth(os.Getenv("ROLE_ID"), &approle.SecretID{FromFile: "/run/secrets/secret_id"})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	login, err := client.KeepLogin(ctx, vc, auth)
	if err != nil {
		log.Fatal(err)
	}
	defer login.Close()
	src, err := client.NewSource(ctx, vc, "ticketkeys", "web")
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
}
