package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/policies"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// ReaderPolicy is the policy of the token the server children and the read
// benchmark use: read keyrings and KV v2 data, nothing else.
const ReaderPolicy = `
path "ticketkeys/keys/*" {
  capabilities = ["read"]
}
path "kv/data/*" {
  capabilities = ["read"]
}
path "kvx/data/*" {
  capabilities = ["read"]
}
`

// Vault is a real Vault server with the plugin at ticketkeys/ (started by
// internal/vaulttest), a file audit device (as production Vaults have: every
// read is audited, which is part of its cost) and a KV v2 mount at kv/.
type Vault struct {
	// Server is the running server; its Client has the root token.
	Server *vaulttest.Server
	// ReaderToken has only ReaderPolicy, as a server node's token would.
	ReaderToken string
	// Reader is an API client with ReaderToken.
	Reader *api.Client
}

// StartVault starts the server through vaulttest (stopped by PID when t is
// closed) with a file audit device, mounts KV v2 at kv/ and makes the
// reader token.
func StartVault(t *TB) (*Vault, error) {
	v := &Vault{}
	err := t.Do(func() {
		v.Server = vaulttest.Start(t, vaulttest.WithAuditFile())
		v.Server.WritePolicy(t, "bench-reader", ReaderPolicy)
		v.ReaderToken = v.Server.NewToken(t, "bench-reader")
		v.Reader = v.Server.ClientWithToken(t, v.ReaderToken)
	})
	if err != nil {
		return nil, fmt.Errorf("start vault: %w", err)
	}
	err = v.Server.Client.Sys().Mount("kv", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
	if err != nil {
		return nil, fmt.Errorf("enable kv v2 at kv/: %w", err)
	}
	return v, nil
}

// ExternalKVPlugin is the catalog name under which MountExternalKV
// registers HashiCorp's KV engine built as an external plugin
// (tools/kvplugin/build.sh), and ExternalKVMount where it mounts it.
const (
	ExternalKVPlugin = "kv-external"
	ExternalKVMount  = "kvx"
)

// MountExternalKV installs the KV engine binary bin into the server's
// plugin directory, registers it by sha256 as ExternalKVPlugin and mounts
// it as KV v2 at ExternalKVMount, so that the same engine as kv/ runs
// behind the plugin gRPC hop. The reader policy covers it.
func (v *Vault) MountExternalKV(ctx context.Context, bin string) error {
	dst := filepath.Join(v.Server.PluginDir, ExternalKVPlugin)
	sum, err := vaulttest.InstallExecutable(bin, dst)
	if err != nil {
		return fmt.Errorf("install the external kv plugin: %w", err)
	}
	err = v.Server.Client.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name: ExternalKVPlugin, Type: api.PluginTypeSecrets, Command: ExternalKVPlugin, SHA256: sum,
	})
	if err != nil {
		return fmt.Errorf("register plugin %s (sha256 %s, from %s): %w", ExternalKVPlugin, sum, bin, err)
	}
	// Vault accepts the version option at enable time only for its own
	// kv type: enable (KV v1), then tune to v2, which upgrades the mount.
	err = v.Server.Client.Sys().MountWithContext(ctx, ExternalKVMount, &api.MountInput{Type: ExternalKVPlugin})
	if err != nil {
		return fmt.Errorf("enable %s at %s/: %w", ExternalKVPlugin, ExternalKVMount, err)
	}
	err = v.Server.Client.Sys().TuneMountWithContext(ctx, ExternalKVMount, api.MountConfigInput{Options: map[string]string{"version": "2"}})
	if err != nil {
		return fmt.Errorf("tune %s/ to kv v2: %w", ExternalKVMount, err)
	}
	return nil
}

// CreateNodeTokens creates n tokens shaped like those of a node's AppRole
// from bootstrap/node-approle.sh: ReaderPolicy and ticketkeys-token-self,
// without Vault's `default` policy (whose templated paths Vault re-parses on
// every request of a token that carries it), one-hour TTL, with at most
// concurrency requests in flight: one distinct token per simulated node.
func (v *Vault) CreateNodeTokens(ctx context.Context, n, concurrency int) ([]string, error) {
	if err := v.Server.Client.Sys().PutPolicyWithContext(ctx, policies.TokenSelfName, policies.TokenSelf); err != nil {
		return nil, fmt.Errorf("write policy %s: %w", policies.TokenSelfName, err)
	}
	return v.createTokens(ctx, n, concurrency, &api.TokenCreateRequest{
		Policies: []string{"bench-reader", policies.TokenSelfName}, TTL: "1h", NoDefaultPolicy: true,
	})
}

// createTokens creates n tokens from req, with at most concurrency requests
// in flight.
func (v *Vault) createTokens(ctx context.Context, n, concurrency int, req *api.TokenCreateRequest) ([]string, error) {
	tokens := make([]string, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, max(concurrency, 1))
	var wg sync.WaitGroup
	for i := range tokens {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := v.Server.Client.Auth().Token().CreateWithContext(ctx, req)
			if err != nil || s == nil || s.Auth == nil {
				errs <- fmt.Errorf("create token %d of %d (policies %v): %v", i+1, n, req.Policies, err)
				return
			}
			tokens[i] = s.Auth.ClientToken
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return tokens, nil
}

// CreateKeyring creates keyring name with the given rotation period and
// retain (publish_ahead stays at its default, the rotation period).
func (v *Vault) CreateKeyring(ctx context.Context, name string, period, retain time.Duration) error {
	_, err := v.Server.Client.Logical().WriteWithContext(ctx, "ticketkeys/keys/"+name, map[string]any{
		"rotation_period": int(period / time.Second),
		"retain":          int(retain / time.Second),
	})
	if err != nil {
		return fmt.Errorf("create keyring %s (rotation_period=%s retain=%s): %w", name, period, retain, err)
	}
	return nil
}

// Activations returns the activation instants (not_before) of the keys of
// keyring that activated in [from, to], from the engine's history endpoint
// (metadata only, never key material). Keys discarded before activating are
// left out. Times have the engine's one-second precision.
func (v *Vault) Activations(ctx context.Context, keyring string, from, to time.Time) ([]time.Time, error) {
	s, err := v.Server.Client.Logical().ReadWithContext(ctx, "ticketkeys/keys/"+keyring+"/history")
	if err != nil {
		return nil, fmt.Errorf("read ticketkeys/keys/%s/history: %w", keyring, err)
	}
	if s == nil {
		return nil, fmt.Errorf("read ticketkeys/keys/%s/history: no data", keyring)
	}
	return activations(s.Data, from, to)
}

// activations extracts the not_before instants in [from, to] from a history
// response's keys and destroyed lists.
func activations(data map[string]any, from, to time.Time) ([]time.Time, error) {
	seen := map[time.Time]bool{}
	var out []time.Time
	for _, field := range []string{"keys", "destroyed"} {
		list, _ := data[field].([]any)
		for i, item := range list {
			m, ok := item.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("history %s[%d]: want an object, got %T", field, i, item)
			}
			if reason, _ := m["reason"].(string); reason == "discarded" {
				continue
			}
			nb, _ := m["not_before"].(string)
			t, err := time.Parse(time.RFC3339, nb)
			if err != nil {
				return nil, fmt.Errorf("history %s[%d].not_before: want RFC 3339, got %q", field, i, nb)
			}
			// The first key activates when the keyring is created, before
			// the load starts: only activations during the load are rotations.
			if t.Before(from) || t.After(to) || seen[t] {
				continue
			}
			seen[t] = true
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out, nil
}
