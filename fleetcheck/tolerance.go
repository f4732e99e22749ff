package fleetcheck

import (
	"fmt"
	"slices"
	"time"

	sched "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// Node kinds: how a node learns that the window changed, which sets how
// long after an instant of the schedule it may still show the old window.
const (
	// KindLocal nodes hold the window and switch keys themselves at the
	// instant: Go servers with package client (client.Source), nginx with the
	// Lua module, Caddy with the ticketkeys module. Tolerance: Grace (clock
	// skew).
	KindLocal = "local"
	// KindAgent nodes are fed by Vault Agent: nginx key files, HAProxy
	// (file or push), Envoy (SDS file). They switch when Agent re-reads the
	// window after its ttl and the file is rendered and reloaded or pushed.
	// Tolerance: Grace + AgentLag of the window.
	KindAgent = "agent"
)

// Kinds lists the node kinds.
var Kinds = []string{KindLocal, KindAgent}

// DefaultKind is the kind of a node whose Kind is empty: local for format
// go (package client), agent for the OpenSSL formats (nginx key files,
// HAProxy, Envoy). An nginx node with the Lua module is local: say so per
// node, or it is judged with the wider Agent tolerance.
func DefaultKind(format string) string {
	if format == FormatGo {
		return KindLocal
	}
	return KindAgent
}

// DefaultReloadAllowance is Config.ReloadAllowance's default: the time an
// Agent-fed node takes, after Agent rendered the new window, to use it
// (nginx reload, HAProxy push, Envoy's SDS file watch).
const DefaultReloadAllowance = 2 * time.Second

// The engine's ttl rule (ttl.go in the engine: ttlJitterMax, readerLag),
// the production rule Agent follows: a reader re-reads ttl + 1 s after a
// read, the ttl runs to the window's next change rounded up to whole seconds
// plus a jitter of up to min(rotation_period/20, publish_ahead/10, 30s).
const (
	agentTTLRounding = time.Second
	agentReadDelay   = time.Second // consul-template re-reads 1 s after the ttl
	agentReadTime    = time.Second // the read itself
)

// AgentJitter is the largest jitter the engine adds to a window's ttl:
// min(rotation_period/20, publish_ahead/10, 30s), in whole seconds: the
// engine's own rule (schedule.TTLJitterMax).
func AgentJitter(rotationPeriod, publishAhead time.Duration) time.Duration {
	return sched.TTLJitterMax(rotationPeriod, publishAhead)
}

// AgentLag is the longest an Agent-fed node takes, after the window changed
// (a key published, activated, retired or purged), to hold and use the new
// window: ttl rounding, the ttl jitter, Agent's 1 s delay, the read and
// reload (the reload or push after rendering).
func AgentLag(rotationPeriod, publishAhead, reload time.Duration) time.Duration {
	return agentTTLRounding + AgentJitter(rotationPeriod, publishAhead) + agentReadDelay + agentReadTime + reload
}

// kindOf is n's kind, or the format's default.
func (c *Checker) kindOf(n Node) string {
	if n.Kind != "" {
		return n.Kind
	}
	return DefaultKind(c.cfg.Format)
}

// switchLag is how long after an instant of w's schedule node n may still
// show the window before it: Grace (clock skew) for local nodes, plus
// AgentLag for Agent-fed ones.
func (c *Checker) switchLag(n Node, rotationPeriod, publishAhead time.Duration) time.Duration {
	if c.kindOf(n) == KindAgent {
		k := time.Duration(max(c.cfg.TestJitterScale, 1)) // 1 but against a test build (Config.TestJitterScale)
		return c.cfg.Grace + AgentLag(rotationPeriod*k, publishAhead*k, c.cfg.ReloadAllowance)
	}
	return c.cfg.Grace
}

// readyLag is how long after a key's publication node n may still lack it.
// Every kind fetches the window following ttl, whatever way it switches:
// the Go client and Caddy's module read Vault themselves, the Lua module
// reads the file its Vault Agent renders, Agent-fed servers get the file
// Agent renders. So every node may fetch a published key as late as the
// engine's reader lag (schedule.ReaderLag: ttl rounding, the ttl jitter, the
// reader's delay, the read) plus Grace; an Agent-fed node also needs its
// reload (switchLag). The jitter is the production rule of the settings
// (scaled like the engine's in a test: Config.TestJitterScale).
func (c *Checker) readyLag(n Node, rotationPeriod, publishAhead time.Duration) time.Duration {
	k := time.Duration(max(c.cfg.TestJitterScale, 1))
	jitter := sched.TTLJitterMax(rotationPeriod*k, publishAhead*k)
	reader := sched.TTLRounding + jitter + sched.ReaderDelay(rotationPeriod, publishAhead) + sched.ReadAllowance
	return max(c.cfg.Grace+reader, c.switchLag(n, rotationPeriod, publishAhead))
}

// maxReadyLag is the largest readyLag of the fleet.
func (c *Checker) maxReadyLag(rotationPeriod, publishAhead time.Duration) time.Duration {
	lag := c.cfg.Grace
	for _, n := range c.cfg.Nodes {
		lag = max(lag, c.readyLag(n, rotationPeriod, publishAhead))
	}
	return lag
}

// maxSwitchLag is the largest switchLag of the fleet.
func (c *Checker) maxSwitchLag(rotationPeriod, publishAhead time.Duration) time.Duration {
	lag := c.cfg.Grace
	for _, n := range c.cfg.Nodes {
		lag = max(lag, c.switchLag(n, rotationPeriod, publishAhead))
	}
	return lag
}

// onSchedule judges a fresh ticket under keyID, issued at at, against w: on
// schedule when keyID is the key w says encrypts at at; also when it is the
// key before it less than lag after the activation (the node has not
// switched yet), or the key after it less than skew before its activation
// (the node's clock is ahead). Nodes never switch early by more than skew,
// whatever their kind.
func onSchedule(w *Window, keyID string, at time.Time, lag, skew time.Duration, state string) Check {
	expected := w.KeyAt(at)
	if expected == nil {
		return Check{Status: StatusFail, Detail: fmt.Sprintf("the window has no key for %s; the node encrypts with %s (%s)", at.UTC().Format(time.RFC3339), keyID, state)}
	}
	if keyID == expected.ID {
		return Check{Status: StatusOK}
	}
	if i := slices.Index(w.Keys, expected); i > 0 && w.Keys[i-1].ID == keyID && at.Sub(expected.NotBefore) < lag {
		return Check{Status: StatusOK, Detail: fmt.Sprintf("still on the previous key %s, %s after the activation of %s (tolerance %s)", keyID, at.Sub(expected.NotBefore).Round(time.Millisecond), expected.ID, lag)}
	}
	if n := w.NextAfter(at); n != nil && n.ID == keyID && n.NotBefore.Sub(at) < skew {
		return Check{Status: StatusOK, Detail: fmt.Sprintf("already on the next key %s, %s before its activation (grace %s)", keyID, n.NotBefore.Sub(at).Round(time.Millisecond), skew)}
	}
	return Check{Status: StatusFail, Detail: fmt.Sprintf("encrypts with key %s (%s); the schedule says %s", keyID, state, expected.ID)}
}

// DefaultMaxReadTTL is Config.MaxReadTTL's default: the engine's default
// max_read_ttl, the longest ttl of any read.
const DefaultMaxReadTTL = 5 * time.Minute

// goClientMaxDelay is the longest the Go client (client.Source) waits after
// a ttl before it re-reads.
const goClientMaxDelay = 5 * time.Second

// retiredLag is how long after rk left the window node n may still resume
// it without failing. A key past its not_after: local nodes drop it at that
// instant, Agent-fed ones after their lag (the window changes then, so
// Agent's ttl ends there). A key removed early (a purge, a next key
// discarded by rotate mode=now) is news to every reader: it drops the key at
// its next read, within max_read_ttl + its read delay (docs/api.md,
// emergency propagation), plus the reload for Agent-fed nodes.
func (c *Checker) retiredLag(n Node, rk *retiredKey, rotationPeriod, publishAhead time.Duration) time.Duration {
	if rk.reason != "removed" {
		return c.switchLag(n, rotationPeriod, publishAhead)
	}
	if c.kindOf(n) == KindAgent {
		return c.cfg.Grace + c.cfg.MaxReadTTL + agentReadDelay + agentReadTime + c.cfg.ReloadAllowance
	}
	return c.cfg.Grace + c.cfg.MaxReadTTL + goClientMaxDelay + agentReadTime
}
