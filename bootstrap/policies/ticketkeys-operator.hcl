# ticketkeys-operator: manage the ticketkeys engine mounted at ticketkeys/.
#
# Covers the mount's config, creating, changing, reading, listing and
# deleting keyrings, rotating them (including mode=now and purge_previous,
# which cut off outstanding tickets on purpose) and reading their history.
# Reading a keyring returns its key material: an operator token is as
# sensitive as any reader token. Nothing under sys/ is granted: registering
# or upgrading the plugin (bootstrap/register.sh) and audit devices
# (bootstrap/audit.sh) need a more privileged token.
path "ticketkeys/config" {
  capabilities = ["read", "update"]
}

path "ticketkeys/keys/" {
  capabilities = ["list"]
}

path "ticketkeys/keys/+" {
  capabilities = ["create", "read", "update", "delete"]
}

path "ticketkeys/keys/+/rotate" {
  capabilities = ["update"]
}

path "ticketkeys/keys/+/history" {
  capabilities = ["read"]
}
