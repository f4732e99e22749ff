package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"slices"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// NginxSwitchResult is how closely the Lua module's workers switch the
// encrypting key at the published instants of a window whose file does not
// change (Vault Agent stopped): fresh TLS 1.2 handshakes probe the nodes in
// turn, and each ticket's key name says which key encrypted it.
type NginxSwitchResult struct {
	Label       string `json:"label"`
	Activations int    `json:"activations"`
	// Gap is the time between two activations.
	Gap    time.Duration `json:"gap_ns"`
	Probes int           `json:"probes"`
	// LateMax is a lower bound of the slowest switch: the longest a probe
	// that started after an activation still got a ticket under the key
	// before it.
	LateMax time.Duration `json:"late_max_ns"`
	// SwitchedBy is an upper bound of the slowest switch: over every node and
	// activation, the time from the activation to the end of the first probe
	// that got a ticket under the new key.
	SwitchedBy time.Duration `json:"switched_by_ns"`
	// Early counts tickets under a key that a probe got before that key's
	// not_before: the schedule broken (0 expected).
	Early int `json:"early"`
	// Unseen counts (node, activation) pairs no probe saw switched before
	// the next activation.
	Unseen int    `json:"unseen"`
	Err    string `json:"error,omitempty"`
}

// nginxSwitchProbe is one fresh handshake: which node, when, under which key.
type nginxSwitchProbe struct {
	luatest.Probe
	node int
	key  int // index in the window's keys, -1 for a key not in it
}

// RunNginxSwitch writes one timed window to c's nodes (a Lua set-up) with a
// key activating every gap, activations times, and probes the nodes in turn
// every 10 ms (bounded by count and time) until the last activation's gap
// has passed. The file is written once, so every switch is the workers'
// own.
func RunNginxSwitch(ctx context.Context, c *NginxCluster, activations int, gap time.Duration) NginxSwitchResult {
	res := NginxSwitchResult{Label: NginxSetupLabel(c.Spec.Setup), Activations: activations, Gap: gap}
	if c.Spec.Setup != NginxLua {
		res.Err = "the switch at published instants is the Lua module's; set-up " + c.Spec.Setup + " has no schedule"
		return res
	}
	if activations < 1 || gap < time.Second {
		res.Err = fmt.Sprintf("activations must be >= 1 and gap >= 1s (published times are whole seconds); got %d and %s", activations, gap)
		return res
	}
	keys := make([][]byte, activations+1)
	ids := make([]string, len(keys))
	for i := range keys {
		keys[i] = make([]byte, 80)
		if _, err := rand.Read(keys[i]); err != nil {
			res.Err = err.Error()
			return res
		}
		ids[i] = luatest.ID(keys[i])
	}
	// Key 0 encrypts until the first activation, 3 s after the next whole
	// second: time for every worker's once-a-second check to read the file.
	first := time.Now().Truncate(time.Second).Add(4 * time.Second)
	at := func(i int) time.Time { return first.Add(time.Duration(i-1) * gap) }
	end := at(activations).Add(gap)
	timed := make([]luatest.TimedKey, len(keys))
	for i, k := range keys {
		nb := at(i)
		if i == 0 {
			nb = first.Add(-time.Minute)
		}
		timed[i] = luatest.TimedKey{Key: k, NotBefore: nb, EncryptUntil: at(i + 1), NotAfter: end.Add(time.Minute)}
	}
	timed[len(timed)-1].EncryptUntil = end.Add(time.Minute)
	c.mu.Lock()
	err := writeAtomic(c.windowPath(), luatest.TimedWindowBytes(timed))
	c.mu.Unlock()
	if err != nil {
		res.Err = err.Error()
		return res
	}

	cfg := &tls.Config{ServerName: c.Spec.Cert.ServerName, RootCAs: c.Spec.Cert.Pool, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}
	var probes []nginxSwitchProbe
	maxProbes := int(time.Until(end)/(10*time.Millisecond)) + 100
	for n := 0; n < maxProbes && time.Now().Before(end) && ctx.Err() == nil; n++ {
		node := n % len(c.Addrs)
		p, err := luatest.ProbeWith(cfg, c.Addrs[node], "/")
		if err != nil {
			res.Err = fmt.Sprintf("probe of node %d: %v", node, err)
			return res
		}
		if time.Now().After(at(1).Add(-2 * time.Second)) { // the file was read by then
			probes = append(probes, nginxSwitchProbe{Probe: p, node: node, key: slices.Index(ids, p.Key)})
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ctx.Err() != nil {
		res.Err = ctx.Err().Error()
		return res
	}
	res.Probes = len(probes)
	for _, p := range probes {
		switch {
		case p.key < 0:
			res.Err = "a probe got a ticket under a key not in the window"
		case p.key > 0 && p.End.Before(at(p.key)):
			res.Early++
		}
	}
	for i := 1; i <= activations; i++ {
		for node := range c.Addrs {
			seen := false
			for _, p := range probes {
				if p.node != node || p.Start.Before(at(i)) || !p.Start.Before(at(i+1)) {
					continue
				}
				if p.key == i-1 {
					res.LateMax = max(res.LateMax, p.Start.Sub(at(i)))
				}
				if p.key == i && !seen {
					seen = true
					res.SwitchedBy = max(res.SwitchedBy, p.End.Sub(at(i)))
				}
			}
			if !seen {
				res.Unseen++
			}
		}
	}
	return res
}
