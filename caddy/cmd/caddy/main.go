// Command caddy is Caddy v2 with its standard modules plus the ticketkeys
// session-ticket key source (tls.stek.ticketkeys): the equivalent of
// `xcaddy build --with github.com/ticketkeys/vault-plugin-secrets-ticketkeys/caddy`,
// pinned by this module's go.mod and go.sum. Build it with `make caddy`
// (scripts/caddy-build.sh).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/caddy"
)

func main() { caddycmd.Main() }
