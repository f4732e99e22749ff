package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/client"
)

// loginAppRole logs vc in with AppRole through the client package, as a Go
// node does: client.KeepLogin returns after the first login and then renews
// the token and logs in again whenever renewal ends. Close the returned
// login when done.
func loginAppRole(ctx context.Context, vc *api.Client, o options, logger *slog.Logger) (*client.Login, error) {
	b, err := os.ReadFile(o.approleRoleIDFile)
	if err != nil {
		return nil, fmt.Errorf("-approle-role-id-file: %w", err)
	}
	roleID := strings.TrimSpace(string(b))
	if roleID == "" {
		return nil, fmt.Errorf("-approle-role-id-file: %s is empty", o.approleRoleIDFile)
	}
	auth, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromFile: o.approleSecretIDFile}, approle.WithMountPath(o.approleMount))
	if err != nil {
		return nil, fmt.Errorf("-approle-secret-id-file: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	login, err := client.KeepLogin(ctx, vc, auth, client.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("AppRole login at auth/%s: %w", o.approleMount, err)
	}
	return login, nil
}

// renewToken keeps vc's own token (VAULT_TOKEN) alive until ctx ends: it
// looks the token up and, if it is renewable with a TTL, renews it with
// api.LifetimeWatcher (a periodic token is renewed forever; one with a
// maximum TTL until that). When renewal ends it logs an error naming what to
// do: the check cannot log in again with a bare token.
func renewToken(ctx context.Context, vc *api.Client, logger *slog.Logger) {
	self, err := vc.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		logger.Warn("cannot look up the Vault token (VAULT_TOKEN) to renew it; it will not be renewed", "error", err.Error())
		return
	}
	renewable, _ := self.TokenIsRenewable()
	ttl, _ := self.TokenTTL()
	if !renewable || ttl <= 0 {
		return // not renewable, or no TTL: nothing to do
	}
	secret := &api.Secret{Auth: &api.SecretAuth{ClientToken: vc.Token(), Renewable: true, LeaseDuration: int(ttl / time.Second)}}
	w, err := vc.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		logger.Warn("cannot renew the Vault token (VAULT_TOKEN)", "error", err.Error())
		return
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.DoneCh():
			if err == nil {
				err = errors.New("the token reached its maximum TTL")
			}
			logger.Error("the Vault token (VAULT_TOKEN) can no longer be renewed; reads will fail when it expires: use a periodic token, -approle-role-id-file/-approle-secret-id-file, or -token-file with a Vault Agent sink", "error", err.Error())
			return
		case r := <-w.RenewCh():
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				logger.Debug("Vault token renewed", "lease_seconds", r.Secret.Auth.LeaseDuration)
			}
		}
	}
}
