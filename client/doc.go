// Package client keeps live Go TLS servers on the ticket-key window that the
// ticketkeys Vault secrets engine publishes, so that a session ticket issued
// by any server of a fleet resumes on every other one.
//
// A Source reads one keyring in the `go` format through a caller-configured
// vault/api client, validates the window fully, and keeps the last good one.
// ConfigureServer wires it into a server's tls.Config through WrapSession and
// UnwrapSession, which survive tls.Config.Clone (http.Server.ServeTLS and
// tls.Listen clone the config, so tls.Config.SetSessionTicketKeys on the
// original would silently do nothing).
//
// # Why WrapSession/UnwrapSession
//
// crypto/tls's SetSessionTicketKeys encrypts with the first key and tries all
// of them to decrypt, per Config, and is lost by Clone. Instead every key of
// the window gets a private tls.Config holding only that key; WrapSession
// encrypts with the current key's EncryptTicket and UnwrapSession decrypts
// with exactly the key the ticket names. The function fields survive Clone,
// and each decryption is attributed to a key state for metrics.
//
// # Ticket format
//
// A ticket is the 16-byte name of the key that made it (the raw bytes whose
// hex is the key's id in the window) followed by crypto/tls's own ticket
// (tls.Config.EncryptTicket with that key's 32-byte `go` ticket_key alone):
//
//	ticket = name[16] || iv[16] || AES-CTR(session state) || HMAC-SHA256[32]
//
// UnwrapSession looks the name up among the keys in use and tries that key
// only, so a forged or stale ticket costs one decryption attempt at most, not
// one per key of the window. SealTicket, OpenTicket and TicketKeyID build and
// read this format for tools.
//
// Release v0.1.0 issued tickets without the name. During a rolling upgrade
// the Source still accepts those: a ticket whose first 16 bytes name no key in
// use is tried against every published key, as v0.1.0 did, until
// WithLegacyTickets' period (default 168h, the longest key lifetime; renewed
// by every such ticket that decrypts) has passed without one; Status reports
// LegacyUntil and counts them in Tickets.Legacy. Meanwhile a forged ticket
// naming no key costs one attempt per published key (as in v0.1.0), and
// afterwards a map lookup. Tickets issued by upgraded nodes do not resume on
// nodes still running v0.1.0 (one full handshake there), so upgrade the
// fleet within a short time.
//
// # Time, not reads, moves the keys
//
// Each key has a not_before (when it starts encrypting) and a not_after (when
// it stops decrypting); a key encrypts until the next key's not_before (the
// last published key: for one rotation_period). The keys in use are derived
// from the held window and the local clock at every handshake and on a
// timer, so every node activates a pre-published next key at the same
// instant without reading Vault at that moment, and no key is used at or
// after its not_after. Nodes therefore need synchronised clocks (NTP); a
// node whose clock is behind Vault's keeps encrypting with the key Vault
// called current.
//
// # Refresh
//
// The Source reads again when the window says it will change (its ttl), plus
// a small jitter, and at least every WithMaxRefreshInterval. A failed or
// invalid read keeps the last good window and is retried with capped
// exponential backoff and jitter. A read that changes nothing swaps nothing.
//
// # Exhaustion
//
// If Vault stays unreachable past the end of the last published key's
// encryption period, no published key may encrypt. By default the Source
// then encrypts with a node-local random key: handshakes never fail and
// resumption keeps working on this node only; an error is logged and
// Status().Exhausted reports it. The choice favours availability and a
// bounded cost (one full handshake per user per node) over a fleet-wide hard
// failure. With WithDisableTicketsOnExhaustion the server instead issues and
// accepts no tickets until a window is read again. Either way, when Vault
// returns the Source recovers by itself; the local key then keeps decrypting
// for the keyring's retain (never more than 168h after it was made).
//
// # Authentication
//
// Authentication stays with the caller: set a token on the api.Client, log in
// with an auth method from vault/api/auth/... and keep the token alive with
// KeepLogin (renewal through api.LifetimeWatcher, a new login when it ends),
// or point the client at a local Vault Agent or Proxy (VAULT_AGENT_ADDR).
//
// # Observability
//
// WithLogger takes a log/slog logger; WithObserver takes hooks for refresh
// results, key changes and ticket decryption outcomes; Status returns
// counters and times. The promcollector sub-package turns Status into
// Prometheus metrics, so the Prometheus dependency is optional. Nothing in
// logs, errors, events or metrics carries key material or key ids.
//
// # What it does not promise
//
// It does not make tickets portable between Go and OpenSSL-based servers (each
// format derives its own key), does not synchronise clocks, and cannot make
// tickets made under a key purged with purge_previous resume.
package client
