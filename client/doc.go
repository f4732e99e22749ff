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
// Each key has a not_before (when it starts encrypting), an encrypt_until
// (when it stops; the next key's not_before, as the engine stored it when it
// published the key) and a not_after (when it stops decrypting). An engine
// older than v0.2.0 does not publish encrypt_until; the Source then takes the
// next key's not_before, or for the last published key one rotation_period
// after its not_before. A key whose encrypt_until equals its not_before (cut
// by `rotate mode=now` in the second it activated, by engines before the
// fix of issue 18) never encrypts; it shares its not_before with the rotated
// key and only decrypts. These rules, and the window's validation, are the
// schedule package's, which every reader of this project uses. The keys in
// use are derived from the held window and
// the local clock at every handshake and on a timer, so every node activates
// a pre-published next key at the same instant without reading Vault at that
// moment, and no key is used at or after its not_after. The key set a
// handshake sees never moves backwards: once a set is in use, a handshake
// that read the clock a moment earlier gets that set too. Nodes need
// synchronised clocks (NTP); a node whose clock is behind Vault's keeps
// encrypting with the key Vault called current.
//
// # Refresh and the publish-ahead rule
//
// The engine publishes each key publish_ahead before it activates and says,
// in the read's ttl, when the window next changes. The Source reads again:
//
//   - at the ttl plus a jitter of ttl/20 (at least 100ms, at most 5s): the
//     window changes only after the ttl;
//   - whatever the ttl, half a publish_ahead before the last published key's
//     encrypt_until (minus a jitter), when its successor is already readable,
//     so that a node holds the next key before it activates even if a ttl is
//     long or a read at the ttl fails (one or more retries fit in the other
//     half);
//   - at least every WithMaxRefreshInterval (default 1h; minus a jitter of
//     1/20, at most 5s, so nodes started together do not read in lockstep);
//   - when the caller calls Refresh.
//
// A failed or invalid read keeps the last good window and is retried with
// capped exponential backoff and jitter (WithRetryBackoff: 500ms to 30s). A
// read that changes nothing swaps nothing. So the next key reaches a node
// before it activates unless every read attempt between its publication and
// its activation fails: there is one at the ttl (which points at the
// publication), one half a publish_ahead before the activation, and retries.
//
// # Emergency rotation
//
// After `rotate mode=now purge_previous=true` the purged keys stop being used
// by a node at its next read: within the ttl of its previous read (which the
// engine caps; see docs/api.md) and WithMaxRefreshInterval. Call Refresh on
// every node to drop them at once; Refresh returns when the new window is in
// use (the end-to-end test TestGoClientFleet logs both times). Tickets made
// under a purged key never resume after that.
//
// # Exhaustion
//
// If Vault stays unreachable past the end of the last published key's
// encryption period, no published key may encrypt. By default the Source
// then encrypts with one node-local random key (one per outage; it is never
// replaced while the outage lasts): handshakes never fail and resumption
// keeps working on this node only; an error is logged and Status().Exhausted
// reports it. The choice favours availability and a bounded cost (one full
// handshake per user per node) over a fleet-wide hard failure. With
// WithDisableTicketsOnExhaustion the server instead accepts no ticket and
// issues only an inert one (it names no key and never resumes: crypto/tls
// ends the handshake if WrapSession fails), without replacing the config
// crypto/tls serves, so certificates loaded by ServeTLS(certFile, keyFile),
// ALPN protocols and a caller's GetConfigForClient are untouched. Either way,
// when Vault returns the Source recovers by itself; the local key then keeps
// decrypting for the keyring's retain (never more than 168h after it was
// made), even if a later outage makes another one.
//
// # Errors
//
// NewSource fails at once when the keyring or mount does not exist
// (ErrKeyringNotFound) or Vault refuses the request (HTTP 400). A 403
// (ErrPermissionDenied) is retried until NewSource's context ends, because a
// Vault Agent sidecar often starts after the server and answers 403 until it
// has logged in; give the context a deadline. Errors from a Vault response
// wrap Vault's *api.ResponseError (errors.As). Refresh and ConfigureServer
// return ErrClosed after Close. Logs and observer callbacks run without the
// Source's lock held, so they may call Status.
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
