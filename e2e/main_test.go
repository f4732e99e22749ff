//go:build e2e

// Package e2e holds the end-to-end tests: real Vault servers (the pinned
// binary, see scripts/vault-build.sh) with the plugin built from this
// checkout, real Vault Agents and real TLS servers, all on 127.0.0.1. Run
// them with `make test-e2e` or
//
//	VAULT_BIN=$(scripts/vault-build.sh) go test -tags e2e -count=1 ./e2e/
package e2e

import (
	"testing"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/vaulttest"
)

// TestMain removes the plugin build directory of internal/vaulttest after
// the tests.
func TestMain(m *testing.M) { vaulttest.Main(m) }
