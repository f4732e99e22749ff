# ticketkeys-auditor: evidence without material, for auditors and monitoring.
#
# Lists the keyrings of the engine mounted at ticketkeys/ and reads each one's
# history (live keys and the last 100 destroyed keys: ids, times, reasons) and
# the mount's config. Never a keyring itself: that read returns key material.
path "ticketkeys/config" {
  capabilities = ["read"]
}

path "ticketkeys/keys/" {
  capabilities = ["list"]
}

path "ticketkeys/keys/+/history" {
  capabilities = ["read"]
}
