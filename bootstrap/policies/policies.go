// Package policies embeds the fixed Vault policies of bootstrap/policies, so
// that tests and the benchmark grant exactly what the bootstrap scripts grant.
package policies

import _ "embed"

// TokenSelfName is the name bootstrap/node-approle.sh writes TokenSelf under.
const TokenSelfName = "ticketkeys-token-self"

// TokenSelf lets a token look itself up, renew and revoke itself: what a
// node token issued without Vault's `default` policy needs of it.
//
//go:embed ticketkeys-token-self.hcl
var TokenSelf string
