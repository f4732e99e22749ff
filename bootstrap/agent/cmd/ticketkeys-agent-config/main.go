// Command ticketkeys-agent-config prints the Vault Agent configuration (or the node policy) for one server
// kind, rendered by package bootstrap/agent. Every flag defaults to the documented default of agent.Params;
// bootstrap/agent/README.md lists the flags (a test keeps that list equal to this file's).
//
//	go run ./bootstrap/agent/cmd/ticketkeys-agent-config -kind nginx -keyring web -vault https://vault:8200 > agent.hcl
//	go run ./bootstrap/agent/cmd/ticketkeys-agent-config -policy -keyring web > ticketkeys-web.hcl
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/bootstrap/agent"
)

// request is what the flags ask for.
type request struct {
	params  agent.Params
	kind    string
	policy  bool
	command string
}

// newFlags declares the command's flags on a new FlagSet that fills req.
func newFlags(req *request, output io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ticketkeys-agent-config", flag.ContinueOnError)
	fs.SetOutput(output)
	p := &req.params
	fs.StringVar(&req.kind, "kind", "", "server kind: nginx, haproxy or envoy (required unless -policy)")
	fs.BoolVar(&req.policy, "policy", false, "print the node's Vault policy instead of the Agent configuration")
	fs.StringVar(&req.command, "command", "", "command run after a change, arguments separated by spaces; default by kind; \"none\" for no command")
	fs.StringVar(&p.VaultAddr, "vault", "", "Vault address (default https://vault.example.com:8200)")
	fs.BoolVar(&p.InsecureHTTP, "insecure-http", false, "allow a plain http:// -vault address that is not a loopback address (Agent's token and the keys travel in clear); printed at start")
	fs.StringVar(&p.CACert, "ca-cert", "", "PEM file to verify Vault's certificate (default: system roots)")
	fs.StringVar(&p.Mount, "mount", "", "engine mount path (default ticketkeys)")
	fs.StringVar(&p.Keyring, "keyring", "", "keyring name (default web)")
	fs.StringVar(&p.RoleIDFile, "role-id-file", "", "AppRole role_id file (default /etc/vault-agent/ticketkeys/role-id)")
	fs.StringVar(&p.SecretIDFile, "secret-id-file", "", "AppRole secret_id file (default /etc/vault-agent/ticketkeys/secret-id)")
	fs.StringVar(&p.SecretIDWrappingPath, "secret-id-wrapping-path", "", "the secret-id file holds a response-wrapping token of this path (node-approle.sh -w: auth/approle/role/ticketkeys-NODE/secret-id); default: a plain secret_id")
	fs.StringVar(&p.TokenSink, "token-sink", "", "file sink for Agent's token (default: none)")
	fs.StringVar(&p.PIDFile, "pid-file", "", "Agent pid file (default: none)")
	fs.StringVar(&p.Dir, "dir", "", "output directory (default /etc/<kind>/ticketkeys)")
	fs.IntVar(&p.Slots, "slots", 0, "nginx: number of key files (default 4)")
	fs.StringVar(&p.SecretName, "secret-name", "", "envoy: SDS secret name (default session_ticket_keys)")
	return fs
}

// run renders what args ask for into stdout; errors go to stderr with exit status 2.
func run(args []string, stdout, stderr io.Writer) int {
	var req request
	fs := newFlags(&req, stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ticketkeys-agent-config: unexpected argument %q (every setting is a flag; see -h)\n", fs.Arg(0))
		return 2
	}
	p := req.params
	if p.InsecureHTTP {
		fmt.Fprintf(stderr, "ticketkeys-agent-config: INSECURE (-insecure-http): Agent may talk to %s over plain http://\n", p.VaultAddr)
	}
	switch req.command {
	case "":
	case "none":
		p.Command = []string{}
	default:
		p.Command = strings.Fields(req.command)
	}
	var out string
	var err error
	if req.policy {
		out, err = agent.Policy(p)
	} else {
		out, err = agent.Render(agent.Kind(req.kind), p)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ticketkeys-agent-config: %v\n", err)
		return 2
	}
	fmt.Fprint(stdout, out)
	return 0
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
