// Package vaulttest starts real Vault servers and Vault Agents for the
// end-to-end tests of the ticketkeys plugin.
//
// Start runs the pinned Vault binary (see VaultBinary) as a non-dev server:
// file storage in a temporary directory, a plain-HTTP listener on
// 127.0.0.1 at a free port, one unseal key. It initialises and unseals the
// server, registers the plugin built from this checkout by sha256 and
// version (ticketkeys.Version), and enables it at ticketkeys/. The server is
// real in every respect that matters to the plugin: the plugin runs as a
// separate process, multiplexed, with Vault's storage, audit and policy
// enforcement.
//
// Every process this package starts is stopped by its PID through
// t.Cleanup, and its log is written to a file in the test's temporary
// directory; the tail of that log is printed when the test fails. The
// engine never logs key material, so printing Vault's log is safe; a test
// must still never print key material itself.
//
// StartCluster (cluster.go) runs three such servers as a production-like
// cluster instead: Raft storage joined with retry_join, TLS listeners whose
// certificate clients verify, the plugin registered through
// bootstrap/register.sh, and per-node kill, stop, start, seal and unseal.
//
// What it does not do: anything that needs a network address other than
// 127.0.0.1.
package vaulttest
