package fleetcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is the outcome of one check.
type Status string

const (
	// StatusOK: the check passed.
	StatusOK Status = "ok"
	// StatusPending: not passed yet, but still inside its grace (a node
	// that has not fetched a just-published key, or still accepts a key
	// retired seconds ago).
	StatusPending Status = "pending"
	// StatusFail: the check failed.
	StatusFail Status = "fail"
	// StatusNone: nothing to check (no next key published, no retired key
	// known, no ticket from the source node).
	StatusNone Status = "none"
)

// rank orders statuses from best to worst for aggregation.
func (s Status) rank() int {
	switch s {
	case StatusNone:
		return 0
	case StatusOK:
		return 1
	case StatusPending:
		return 2
	default:
		return 3
	}
}

func worst(a, b Status) Status {
	if b.rank() > a.rank() {
		return b
	}
	return a
}

// Check is the outcome of one check with what it saw.
type Check struct {
	Status Status `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// Report is the evidence of one round: times, key ids and results, never
// key material.
type Report struct {
	Keyring  string    `json:"keyring"`
	Format   string    `json:"format"`
	Round    int       `json:"round"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// OK is true when no check failed (pending and none are not failures).
	OK bool `json:"ok"`
	// Settings are the tolerances the round judged with.
	Settings Settings `json:"settings"`
	// Window is the schedule the round compared against (ids and times).
	Window *WindowSummary `json:"window,omitempty"`
	// VaultError is set when the window could not be read.
	VaultError string `json:"vault_error,omitempty"`
	// WindowStale is true when the read failed and the round judged the
	// nodes against the last window read (Window.ReadAt says when).
	WindowStale bool `json:"window_stale,omitempty"`
	// Matrix says which pairs were offered.
	Matrix MatrixSummary `json:"matrix"`
	// NodesReadyNext counts nodes that resumed a ticket under the next key
	// in every TLS version.
	NodesReadyNext int `json:"nodes_ready_next"`
	// Retired follows each retired key still in memory (newest first);
	// at most Settings.MaxRetired of them were offered this round.
	Retired []RetiredSummary `json:"retired,omitempty"`
	// Purges groups the keys removed from the window at one instant.
	Purges []PurgeSummary `json:"purges,omitempty"`
	Nodes  []NodeReport   `json:"nodes"`
	// Failures lists every failed check in one line each.
	Failures []string `json:"failures,omitempty"`
	// Warnings lists what limits resumption without failing a check (a
	// ticket lifetime shorter than rotation_period).
	Warnings []string `json:"warnings,omitempty"`
}

// Settings records how a round judged: TLS versions, graces (seconds) and
// the matrix policy.
type Settings struct {
	Versions     []string `json:"versions"`
	Grace        float64  `json:"grace_seconds"`
	NextGrace    float64  `json:"next_grace_seconds"`
	MatrixFull   int      `json:"matrix_full"`
	MatrixSample int      `json:"matrix_sample"`
	MaxRetired   int      `json:"max_retired"`
	// ReloadAllowance (seconds) is part of an Agent-fed node's tolerance.
	ReloadAllowance float64 `json:"reload_allowance_seconds"`
}

// WindowSummary is the part of a window a report keeps: no material.
type WindowSummary struct {
	ReadAt         time.Time `json:"read_at"`
	RotationPeriod int64     `json:"rotation_period"`
	PublishAhead   int64     `json:"publish_ahead"`
	Current        string    `json:"current,omitempty"`
	Next           string    `json:"next,omitempty"`
	NextActivation time.Time `json:"next_activation,omitzero"`
	// ResumptionWindow (seconds) is the longest a ticket resumes as far as
	// the keyring goes: a key's not_after - not_before.
	ResumptionWindow float64      `json:"resumption_window_seconds,omitempty"`
	Keys             []KeySummary `json:"keys"`
}

// KeySummary is a key's id, state and times.
type KeySummary struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// PublishAt is when the key became readable (its publish_at, or
	// not_before - publish_ahead from an engine that does not send it).
	PublishAt time.Time `json:"publish_at"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// MatrixSummary describes the cross-node matrix of the round.
type MatrixSummary struct {
	// Sampled is true when the fleet is larger than Config.MatrixFull and
	// each node's ticket went to a rotating sample of the others.
	Sampled bool `json:"sampled"`
	// Domains is the number of resumption domains the matrix ran in (each
	// node's ticket is offered only inside its domain).
	Domains int `json:"domains"`
	// Pairs is the number of (source, target, version) offers.
	Pairs int `json:"pairs"`
	// Failures is the number of offers that did not resume.
	Failures int `json:"failures"`
	// NotOffered counts pairs whose ticket the TLS client did not send
	// (certificates that do not verify across the two nodes): neither
	// resumed nor failed, and not in Pairs.
	NotOffered int `json:"not_offered,omitempty"`
	// Pending counts offers refused during an emergency propagation (the
	// issuer still on a key a rotation outside the schedule removed, or the
	// target not yet holding that rotation's new key; Checker's
	// propagation tolerance): neither resumed nor failed, and not in Pairs.
	Pending int `json:"pending,omitempty"`
}

// RetiredSummary follows one retired key across rounds.
type RetiredSummary struct {
	ID string `json:"id"`
	// Reason is "expired" (past not_after) or "removed" (gone from the
	// window before its not_after: purged, or a next key discarded by a
	// rotation with mode=now).
	Reason    string    `json:"reason"`
	RetiredAt time.Time `json:"retired_at"`
	// AcceptedBy lists the nodes that resumed a ticket under it this round.
	AcceptedBy []string `json:"accepted_by,omitempty"`
	// OfferedThisRound is false when the round offered other retired keys
	// (more are held than MaxRetired); AcceptedBy is then empty.
	OfferedThisRound bool `json:"offered_this_round"`
	// LastAcceptedAt and LastAcceptedBy: the last round in which a node
	// still resumed it, and the nodes that did.
	LastAcceptedAt time.Time `json:"last_accepted_at,omitzero"`
	LastAcceptedBy []string  `json:"last_accepted_by,omitempty"`
	// RefusedEverywhereSince is the start of the round in which the last
	// node (in the last TLS version) refused it, once every node has
	// refused it since any last resumed it; zero until then.
	RefusedEverywhereSince time.Time `json:"refused_everywhere_since,omitzero"`
	// NotYetRefusedBy lists the nodes that have not refused it in every TLS
	// version yet: not offered it yet, unreachable, or still resuming it.
	NotYetRefusedBy []string `json:"not_yet_refused_by,omitempty"`
}

// PurgeSummary is the keys removed from the window at one instant (rotate
// purge_previous=true, or a next key discarded by mode=now).
type PurgeSummary struct {
	RemovedAt time.Time `json:"removed_at"`
	Keys      []string  `json:"keys"`
	// RefusedEverywhereSince is the latest RefusedEverywhereSince of its
	// keys once every one of them is refused by every node; zero until then.
	RefusedEverywhereSince time.Time `json:"refused_everywhere_since,omitzero"`
	// NotYetRefusedEverywhere counts its keys some node has not refused yet.
	NotYetRefusedEverywhere int `json:"not_yet_refused_everywhere"`
}

// NodeReport is one node's results; the Current/Next/Retired statuses
// aggregate its TLS versions (the worst wins).
type NodeReport struct {
	Addr       string `json:"addr"`
	ServerName string `json:"server_name"`
	Domain     string `json:"domain,omitempty"`
	Reachable  bool   `json:"reachable"`
	// Kind is how the node follows the window (local or agent) and
	// Tolerance (seconds) how long after an instant of the schedule it may
	// still show the window before it.
	Kind      string  `json:"kind"`
	Tolerance float64 `json:"tolerance_seconds"`
	Current   Status  `json:"current"`
	Next      Status  `json:"next"`
	// Previous: whether it resumed tickets under the previous keys offered.
	Previous Status `json:"previous"`
	Retired  Status `json:"retired"`
	// TicketLifetime (seconds) is the shortest ticket lifetime the node sent
	// in its TLS versions (0: none sent), and EffectiveResumption that
	// lifetime capped by the keyring's resumption window: how long its users
	// can resume.
	TicketLifetime      float64 `json:"ticket_lifetime_seconds,omitempty"`
	EffectiveResumption float64 `json:"effective_resumption_seconds,omitempty"`
	// MatrixRow counts this node's tickets resumed by the targets they were
	// offered to; MatrixColumn counts other nodes' tickets this node resumed.
	MatrixRowOK      int             `json:"matrix_row_ok"`
	MatrixRowTotal   int             `json:"matrix_row_total"`
	MatrixColOK      int             `json:"matrix_column_ok"`
	MatrixColTotal   int             `json:"matrix_column_total"`
	Versions         []VersionReport `json:"versions"`
	Errors           []string        `json:"errors,omitempty"`
	matrixRowFails   int
	matrixColFails   int
	retiredAccepted  int
	previousFailures int
}

// VersionReport is one node's results in one TLS version.
type VersionReport struct {
	Version        string    `json:"version"`
	HandshakeError string    `json:"handshake_error,omitempty"`
	HandshakeAt    time.Time `json:"handshake_at,omitzero"`
	// TicketKeyID is the key id at the front of the node's fresh ticket.
	TicketKeyID string `json:"ticket_key_id,omitempty"`
	// TicketLifetime (seconds) is the lifetime the node sent with the
	// ticket (TLS 1.3 ticket_lifetime, TLS 1.2 ticket_lifetime_hint); absent
	// when none.
	TicketLifetime float64 `json:"ticket_lifetime_seconds,omitempty"`
	// TicketKeyState is that key's state at the handshake: current, next,
	// previous, retired or unknown.
	TicketKeyState string `json:"ticket_key_state,omitempty"`
	Current        Check  `json:"current"`
	Next           Check  `json:"next"`
	NextKeyID      string `json:"next_key_id,omitempty"`
	// Previous are tickets under previous keys (still decrypting) offered.
	Previous []KeyCheck     `json:"previous,omitempty"`
	Retired  []RetiredCheck `json:"retired,omitempty"`
	// Matrix is this node's row: its ticket offered to each target.
	Matrix []Cell `json:"matrix,omitempty"`
}

// RetiredCheck is a ticket under a retired key offered to the node.
type RetiredCheck struct {
	KeyID   string `json:"key_id"`
	Resumed bool   `json:"resumed"`
	Check
}

// KeyCheck is a ticket under a key of the window offered to the node.
type KeyCheck struct {
	KeyID   string `json:"key_id"`
	Resumed bool   `json:"resumed"`
	Check
}

// Cell is a ticket from the row's node offered to target.
type Cell struct {
	To      string `json:"to"`
	Resumed bool   `json:"resumed"`
	// NotOffered is true when the TLS client did not send the ticket.
	NotOffered bool `json:"not_offered,omitempty"`
	// Pending is true when the offer was refused within an emergency
	// propagation's tolerance (MatrixSummary.Pending).
	Pending bool   `json:"pending,omitempty"`
	Error   string `json:"error,omitempty"`
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes one line per node: reachability, current key, next
// key, retired keys, matrix row and column, errors; then the fleet summary.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREACHABLE\tCURRENT KEY\tNEXT KEY\tPREVIOUS KEYS\tRETIRED KEYS\tMATRIX ROW\tMATRIX COLUMN\tERRORS")
	for _, n := range r.Nodes {
		errs := "-"
		if len(n.Errors) > 0 {
			errs = n.Errors[0]
			if len(errs) > 100 {
				errs = errs[:97] + "..."
			}
			if len(n.Errors) > 1 {
				errs += fmt.Sprintf(" (+%d more, below)", len(n.Errors)-1)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Addr, yesNo(n.Reachable), n.Current, n.Next, n.Previous, n.Retired,
			ratio(n.MatrixRowOK, n.MatrixRowTotal), ratio(n.MatrixColOK, n.MatrixColTotal), errs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "OK"
	if !r.OK {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s: keyring %s (%s), round %d at %s, %d nodes, %d ready for the next key",
		verdict, r.Keyring, r.Format, r.Round, r.Started.UTC().Format(time.RFC3339), len(r.Nodes), r.NodesReadyNext)
	if r.Window != nil {
		fmt.Fprintf(w, ", current key %s", short(r.Window.Current))
		if r.Window.Next != "" {
			fmt.Fprintf(w, ", next key %s activates %s (in %s)", short(r.Window.Next),
				r.Window.NextActivation.UTC().Format(time.RFC3339), r.Window.NextActivation.Sub(r.Started).Round(time.Second))
		} else {
			fmt.Fprint(w, ", no next key published")
		}
	}
	sampled := ""
	if r.Matrix.Sampled {
		sampled = " (sampled)"
	}
	if r.Matrix.NotOffered > 0 {
		sampled += fmt.Sprintf(", %d not offered (the client did not send the ticket)", r.Matrix.NotOffered)
	}
	fmt.Fprintf(w, "; matrix %d/%d resumed%s\n", r.Matrix.Pairs-r.Matrix.Failures, r.Matrix.Pairs, sampled)
	if r.VaultError != "" {
		fmt.Fprintf(w, "vault: %s\n", r.VaultError)
	}
	if r.WindowStale && r.Window != nil {
		fmt.Fprintf(w, "window stale: judged against the last window read, at %s\n", r.Window.ReadAt.UTC().Format(time.RFC3339))
	}
	for _, rs := range r.Retired {
		switch {
		case len(rs.AcceptedBy) > 0:
			fmt.Fprintf(w, "retired key %s (%s at %s): still accepted by %s\n", short(rs.ID), rs.Reason,
				rs.RetiredAt.UTC().Format(time.RFC3339), strings.Join(rs.AcceptedBy, ", "))
		case !rs.RefusedEverywhereSince.IsZero() && !rs.LastAcceptedAt.IsZero():
			fmt.Fprintf(w, "retired key %s (%s at %s): refused everywhere since %s; last accepted at %s by %s\n", short(rs.ID), rs.Reason,
				rs.RetiredAt.UTC().Format(time.RFC3339), rs.RefusedEverywhereSince.UTC().Format(time.RFC3339Nano),
				rs.LastAcceptedAt.UTC().Format(time.RFC3339Nano), strings.Join(rs.LastAcceptedBy, ", "))
		case !rs.RefusedEverywhereSince.IsZero():
			fmt.Fprintf(w, "retired key %s (%s at %s): refused everywhere since %s\n", short(rs.ID), rs.Reason,
				rs.RetiredAt.UTC().Format(time.RFC3339), rs.RefusedEverywhereSince.UTC().Format(time.RFC3339Nano))
		default:
			fmt.Fprintf(w, "retired key %s (%s at %s): not yet refused by %s\n", short(rs.ID), rs.Reason,
				rs.RetiredAt.UTC().Format(time.RFC3339), strings.Join(rs.NotYetRefusedBy, ", "))
		}
	}
	for _, p := range r.Purges {
		if p.RefusedEverywhereSince.IsZero() {
			fmt.Fprintf(w, "purge at %s (%d keys): %d keys not yet refused by every node\n", p.RemovedAt.UTC().Format(time.RFC3339),
				len(p.Keys), p.NotYetRefusedEverywhere)
			continue
		}
		fmt.Fprintf(w, "purge at %s (%d keys): every key refused everywhere since %s\n", p.RemovedAt.UTC().Format(time.RFC3339),
			len(p.Keys), p.RefusedEverywhereSince.UTC().Format(time.RFC3339Nano))
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "FAIL %s\n", f)
	}
	for _, x := range r.Warnings {
		fmt.Fprintf(w, "WARN %s\n", x)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func ratio(ok, total int) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", ok, total)
}

// short abbreviates a key id for the table.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
