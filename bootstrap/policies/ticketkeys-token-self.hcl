# ticketkeys-token-self: what a node does with its own token, for node tokens
# issued without Vault's `default` policy (bootstrap/node-approle.sh issues
# them so: Vault re-parses the templated paths of `default` on every request,
# about a third of the Vault CPU of a keyring read). Vault Agent looks its
# token up and renews it; client.KeepLogin renews it; both may revoke it on
# shutdown. Nothing else of `default` (cubbyhole, wrapping, sys/tools, ...)
# is granted.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}
