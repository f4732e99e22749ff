package bench

import (
	"context"
	"time"
)

// HookSide is what one server configuration measured over all rounds of
// the hook-cost comparison.
type HookSide struct {
	// Config names the configuration.
	Config      string        `json:"config"`
	Connections int           `json:"connections"`
	Offered     int           `json:"offered"`
	Resumed     int           `json:"resumed"`
	Errors      int           `json:"errors"`
	CPU         time.Duration `json:"cpu_ns"`
	// WindowKeys is the number of keys the server could decrypt with (the
	// hook's window at the end of the last round; 1 for the plain config).
	WindowKeys int `json:"window_keys"`
	// HitCurrent and HitOther count tickets the hook decrypted with the
	// current key and with any other key of the window.
	HitCurrent uint64 `json:"hit_current"`
	HitOther   uint64 `json:"hit_other"`
}

// CPUPerConn is CPU divided by connections (0 if none).
func (h HookSide) CPUPerConn() time.Duration {
	if h.Connections == 0 {
		return 0
	}
	return h.CPU / time.Duration(h.Connections)
}

// ResumedShare is Resumed/Connections: the share of connections that were
// resumed handshakes (0 if none).
func (h HookSide) ResumedShare() float64 {
	if h.Connections == 0 {
		return 0
	}
	return float64(h.Resumed) / float64(h.Connections)
}

// HookCost compares one node with the client hook on a keyring window
// against one node with a plain single-key tls.Config, for one TLS version.
type HookCost struct {
	TLS   string   `json:"tls"`
	Cert  string   `json:"cert"`
	Plain HookSide `json:"plain"`
	Hook  HookSide `json:"hook"`
	Err   string   `json:"error,omitempty"`
}

// Ratio is the hook's CPU per connection over the plain config's (0 when
// unknown).
func (h HookCost) Ratio() float64 {
	p := h.Plain.CPUPerConn()
	if p == 0 {
		return 0
	}
	return float64(h.Hook.CPUPerConn()) / float64(p)
}

// HookSpec describes the hook-cost comparison for one TLS version.
type HookSpec struct {
	TLS  uint16
	Cert CertSet
	// Keyring is the hook's keyring (its window should hold MaxWindow keys).
	Keyring string
	// Load should use few users, so that nearly every connection resumes.
	Load Load
	// Warmup precedes each segment (see RunSpec.Warmup).
	Warmup time.Duration
	// Segment is the measured length of one round's run of each
	// configuration.
	Segment time.Duration
	// Rounds is the number of plain, hook pairs (alternated, so both see
	// the same machine load).
	Rounds int
	Seed   int64
}

// RunHookCost runs a one-node child with a plain single-key config and one
// with the client hook, alternately, and adds up their CPU and
// connections. Each side's CPU comes from its child's own accounting.
func (rn *Runner) RunHookCost(ctx context.Context, spec HookSpec) (HookCost, error) {
	hc := HookCost{TLS: TLSName(spec.TLS), Cert: spec.Cert.Kind,
		Plain: HookSide{Config: "plain tls.Config, 1 key (SetSessionTicketKeys)", WindowKeys: 1},
		Hook:  HookSide{Config: "client hook (ConfigureServer)"}}
	plain := Scenario{ID: "hook-plain", Label: hc.Plain.Config, Nodes: 1, Mode: ModeStatic}
	hook := Scenario{ID: "hook", Label: hc.Hook.Config, Nodes: 1, Mode: ModeTicketkeys}
	for i := 0; i < spec.Rounds && ctx.Err() == nil; i++ {
		for _, sc := range []Scenario{plain, hook} {
			r, err := rn.Run(ctx, RunSpec{Scenario: sc, TLS: spec.TLS, Cert: spec.Cert, Warmup: spec.Warmup, Duration: spec.Segment,
				Keyring: spec.Keyring, Load: spec.Load, Seed: spec.Seed + int64(i)})
			if err != nil {
				hc.Err = err.Error()
				return hc, err
			}
			side := &hc.Plain
			if sc.Mode == ModeTicketkeys {
				side = &hc.Hook
				side.WindowKeys = 0
				for j, s := range r.Sources {
					if j == 0 {
						side.WindowKeys = s.WindowKeys
					}
					side.HitCurrent += s.HitCurrent
					side.HitOther += s.HitNext + s.HitPrevious
				}
			}
			side.Connections += r.Connections
			side.Offered += r.Offered
			side.Resumed += r.Resumed
			side.Errors += r.HandshakeFailures + r.RequestFailures
			side.CPU += r.ServerCPU
		}
	}
	return hc, ctx.Err()
}
