package client

import "time"

// Observer holds optional hooks for metrics. Nil fields are skipped. Events
// carry states, counts and times only: never key material or key ids.
type Observer struct {
	// Refresh is called after every read of the keyring, good or bad.
	Refresh func(RefreshEvent)
	// Ticket is called for every non-empty session ticket the server tried
	// to decrypt, on the handshake path.
	Ticket func(TicketEvent)
	// Advance is called when the keys in use change: a new window was
	// swapped in, or a key activated or retired locally on its timer.
	Advance func(AdvanceEvent)
}

// RefreshEvent describes one read of the keyring.
type RefreshEvent struct {
	// Time is when the read finished.
	Time time.Time
	// Duration is how long the read took.
	Duration time.Duration
	// Err is nil for a good, valid window; otherwise the read or validation
	// error (the last good window stays in use).
	Err error
	// Changed is true when a good read brought different keys and the window
	// was swapped; false when it changed nothing (the swap was skipped).
	Changed bool
	// NextRefresh is the wait until the next read.
	NextRefresh time.Duration
}

// TicketEvent describes one ticket decryption attempt.
type TicketEvent struct {
	// Hit is true when a key decrypted the ticket.
	Hit bool
	// State is the state of that key (empty on a miss).
	State KeyState
	// Legacy is true when the ticket was in the previous release's format
	// (no key name; see WithLegacyTicketsUntil).
	Legacy bool
}

// AdvanceEvent describes a change of the keys in use.
type AdvanceEvent struct {
	// Time is when the change took effect.
	Time time.Time
	// Reason is "refresh" (a new window), "schedule" (a key activated or
	// retired at its time), "exhausted" (no published key may encrypt) or
	// "recovered" (published keys encrypt again).
	Reason string
	// Exhausted is true while no published key may encrypt.
	Exhausted bool
	// Keys is the number of keys that decrypt, by state.
	Keys map[KeyState]int
}

// Status is a snapshot of a Source, for health checks and metrics.
type Status struct {
	// Now is when the snapshot was taken.
	Now time.Time
	// Exhausted is true while no published key may encrypt (Vault could not
	// be read for longer than the published schedule covers).
	Exhausted bool
	// TicketsDisabled is true while tickets are off (Exhausted with
	// WithDisableTicketsOnExhaustion).
	TicketsDisabled bool
	// CurrentID is the id of the published key that encrypts now, empty when
	// exhausted. Ids are not secret, but keep them out of logs and labels.
	CurrentID string
	// CurrentNotBefore is when the current key activated (zero when exhausted).
	CurrentNotBefore time.Time
	// EncryptUntil is when the current key stops encrypting as far as the
	// held window knows (zero when exhausted).
	EncryptUntil time.Time
	// NextActivation is the activation time of the earliest published key
	// that is not active yet (zero when none is known).
	NextActivation time.Time
	// Keys is the number of keys that decrypt now, by state.
	Keys map[KeyState]int
	// LastRefresh is when the keyring was last read successfully.
	LastRefresh time.Time
	// LastChange is when the held window last changed.
	LastChange time.Time
	// LastError is the error of the latest read if it failed, else nil.
	LastError error
	// LastErrorTime is when LastError happened.
	LastErrorTime time.Time
	// Refreshes and RefreshErrors count good and failed reads.
	Refreshes, RefreshErrors uint64
	// Tickets counts ticket decryption outcomes since the Source started.
	Tickets TicketCounts
	// LegacyUntil is when tickets of the previous release's format (no key
	// name) stop being accepted: WithLegacyTicketsUntil's deadline while it
	// is ahead, zero when they are not accepted (the default).
	LegacyUntil time.Time
}

// TicketCounts counts ticket decryption outcomes by key state, and misses
// (tickets no key decrypted: unknown, retired or forged).
type TicketCounts struct {
	Current, Next, Previous, Local, Miss uint64
	// Issued counts tickets the server encrypted.
	Issued uint64
	// Legacy counts the decrypted tickets (included above by state) that
	// were in the previous release's format: while it grows, nodes of the
	// previous release still issue tickets.
	Legacy uint64
}
