# Vault policy for a node that feeds keyring "web" to its TLS servers through Vault Agent.
# Read only: the window in any format. No update (that path's write changes the keyring's settings),
# no rotate, no history, no list.
path "ticketkeys/keys/web" {
  capabilities = ["read"]
}
