// Command ticketkeys-agent-config prints the Vault Agent configuration (or the node policy) for one server
// kind, rendered by package bootstrap/agent. Every flag defaults to the documented default of agent.Params.
//
//	go run ./bootstrap/agent/cmd/ticketkeys-agent-config -kind nginx -keyring web -vault https://vault:8200 > agent.hcl
//	go run ./bootstrap/agent/cmd/ticketkeys-agent-config -policy -keyring web > ticketkeys-web.hcl
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
)

func main() {
	var p agent.Params
	kind := flag.String("kind", "", "server kind: nginx, haproxy or envoy (required unless -policy)")
	policy := flag.Bool("policy", false, "print the node's Vault policy instead of the Agent configuration")
	command := flag.String("command", "", "command run after a change, arguments separated by spaces; default by kind; \"none\" for no command")
	flag.StringVar(&p.VaultAddr, "vault", "", "Vault address (default https://vault.example.com:8200)")
	flag.StringVar(&p.CACert, "ca-cert", "", "PEM file to verify Vault's certificate (default: system roots)")
	flag.StringVar(&p.Mount, "mount", "", "engine mount path (default ticketkeys)")
	flag.StringVar(&p.Keyring, "keyring", "", "keyring name (default web)")
	flag.StringVar(&p.RoleIDFile, "role-id-file", "", "AppRole role_id file (default /etc/vault-agent/ticketkeys/role-id)")
	flag.StringVar(&p.SecretIDFile, "secret-id-file", "", "AppRole secret_id file (default /etc/vault-agent/ticketkeys/secret-id)")
	flag.StringVar(&p.TokenSink, "token-sink", "", "file sink for Agent's token (default: none)")
	flag.StringVar(&p.PIDFile, "pid-file", "", "Agent pid file (default: none)")
	flag.StringVar(&p.Dir, "dir", "", "output directory (default /etc/<kind>/ticketkeys)")
	flag.IntVar(&p.Slots, "slots", 0, "nginx: number of key files (default 4)")
	flag.StringVar(&p.SecretName, "secret-name", "", "envoy: SDS secret name (default session_ticket_keys)")
	flag.Parse()
	switch *command {
	case "":
	case "none":
		p.Command = []string{}
	default:
		p.Command = strings.Fields(*command)
	}
	var out string
	var err error
	if *policy {
		out, err = agent.Policy(p)
	} else {
		out, err = agent.Render(agent.Kind(*kind), p)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ticketkeys-agent-config: %v\n", err)
		os.Exit(2)
	}
	fmt.Print(out)
}
