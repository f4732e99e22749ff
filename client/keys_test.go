package client

import (
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// keyNumber maps a material returned by TicketKeys back to the fake engine's
// key number (-1 when it is no published key: the node-local key).
func keyNumber(k [32]byte) int64 {
	for n := int64(0); n < 64; n++ {
		if [32]byte(keyMaterial(n)) == k {
			return n
		}
	}
	return -1
}

// describeKeys names the keys of a list by number ("L" for the local key),
// never by material.
func describeKeys(keys [][32]byte) string {
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += ","
		}
		if n := keyNumber(k); n >= 0 {
			s += fmt.Sprint(n)
		} else {
			s += "L"
		}
	}
	return s
}

// TestTicketKeysOrderAndNotAfter walks a Source through three activations
// with the engine up, then an outage through exhaustion and past the
// not_after of every published key, then the recovery. At every step the
// list must be exactly the keys in use, current first, then next keys, then
// previous keys newest first, with no key at or past its not_after.
func TestTicketKeysOrderAndNotAfter(t *testing.T) {
	fv, fc, src, rec := newFakeSource(t, 10*time.Second)
	notAfter := func(n int64) time.Time { return t0.Add(time.Duration(n)*period + period + retain) }

	steps := []struct {
		name string
		step time.Duration
		down bool
		want string // key numbers, "L" for the local key
	}{
		{"start", 0, false, "0,1"},
		{"key 1 activates", 50 * time.Second, false, "1,2,0"},
		{"key 2 activates", 60 * time.Second, false, "2,3,1,0"},
		{"key 0 retires", 60 * time.Second, false, "3,4,2,1"},
		{"mid-period", 30 * time.Second, false, "3,4,2,1"},
		// Vault down from here: the held window (keys 1..4) keeps the schedule.
		{"key 4 activates without Vault", 30 * time.Second, true, "4,3,2"},
		{"exhausted: the local key encrypts", 60 * time.Second, true, "L,4,3"},
		{"key 3 retires while exhausted", 60 * time.Second, true, "L,4"},
		{"key 4 retires while exhausted", 60 * time.Second, true, "L"},
	}
	var local [32]byte
	for _, st := range steps {
		if st.down {
			fv.setMode("down")
		}
		fc.step(t, st.step)
		now := fc.Now()
		keys := src.TicketKeys()
		if got := describeKeys(keys); got != st.want {
			t.Fatalf("%s (t0+%s): keys %s, want %s", st.name, now.Sub(t0), got, st.want)
		}
		for _, k := range keys {
			if n := keyNumber(k); n >= 0 && !notAfter(n).After(now) {
				t.Fatalf("%s: key %d is past its not_after %s", st.name, n, notAfter(n))
			}
		}
		if keyNumber(keys[0]) < 0 {
			if local == ([32]byte{}) {
				local = keys[0]
			} else if local != keys[0] {
				t.Fatalf("%s: the local key changed within one exhaustion episode", st.name)
			}
		}
	}

	// Vault is back: the next read brings key 7 as current; the local key
	// stays decrypt-only after the published keys.
	fv.setMode("ok")
	fc.step(t, rec.lastRefresh(t).NextRefresh)
	keys := src.TicketKeys()
	if got := describeKeys(keys); got != "7,8,6,5,L" {
		t.Fatalf("recovered: keys %s, want 7,8,6,5,L", got)
	}
	if keys[len(keys)-1] != local {
		t.Fatal("recovered: the local key of the episode is not the one that encrypted during it")
	}
}

// TestTicketKeysChangeSignals: Updated and the Observer's Advance fire at
// each local activation, so a caller that re-reads TicketKeys on them always
// holds the list of the moment.
func TestTicketKeysChangeSignals(t *testing.T) {
	_, fc, src, rec := newFakeSource(t, 10*time.Second)
	select { // drain the signal of the first window
	case <-src.Updated():
	default:
	}
	rec.mu.Lock()
	advances := len(rec.advances)
	rec.mu.Unlock()

	before := describeKeys(src.TicketKeys())
	fc.step(t, 50*time.Second) // key 1 activates
	select {
	case <-src.Updated():
	case <-time.After(5 * time.Second):
		t.Fatal("no Updated signal at the activation")
	}
	rec.mu.Lock()
	got := len(rec.advances)
	rec.mu.Unlock()
	if got <= advances {
		t.Fatal("no Advance event at the activation")
	}
	if after := describeKeys(src.TicketKeys()); after == before || after != "1,2,0" {
		t.Fatalf("keys after the activation %s (before %s), want 1,2,0", after, before)
	}
}

// TestTicketKeysResumeAcrossServers: two crypto/tls servers that install
// TicketKeys with SetSessionTicketKeys resume each other's tickets; one with
// crypto/tls's own random keys does not (so the check can fail). Named
// tickets of a server wired with ConfigureServer do not resume on them;
// their unnamed tickets resume there only through the Source's legacy path,
// while WithLegacyTicketsUntil accepts them.
func TestTicketKeysResumeAcrossServers(t *testing.T) {
	_, _, src, _ := newFakeSource(t, 10*time.Second, WithLegacyTicketsUntil(t0.Add(time.Hour)))
	cert := testcert.New(t, testcert.ECDSAP256)
	serve := func(keys [][32]byte) string {
		cfg := cert.ServerConfig()
		if keys != nil {
			cfg.SetSessionTicketKeys(keys)
		}
		return serveTLSListen(t, cfg)
	}
	a, b, own := serve(src.TicketKeys()), serve(src.TicketKeys()), serve(nil)
	hooked := hookedServer(t, cert, src)
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			c := newCache()
			if get(t, cert, a, c, v) {
				t.Fatal("a first connection resumed")
			}
			if !get(t, cert, b, c, v) {
				t.Fatal("server b did not resume server a's ticket")
			}
			if get(t, cert, own, c, v) {
				t.Fatal("a server with its own keys resumed a shared-key ticket")
			}
			h := newCache()
			get(t, cert, hooked, h, v)
			if get(t, cert, a, h, v) {
				t.Fatal("a SetSessionTicketKeys server resumed a named ticket of a ConfigureServer server")
			}
			legacyBefore := src.Status().Tickets.Legacy
			u := newCache()
			get(t, cert, a, u, v)
			if !get(t, cert, hooked, u, v) || src.Status().Tickets.Legacy != legacyBefore+1 {
				t.Fatal("the ConfigureServer server did not resume an unnamed ticket through its legacy path")
			}
		})
	}
}

// TestTicketKeysWhenTheTimerIsLate: the list is computed at the call, so a
// caller gets the keys of the moment even when the Source's timer has not
// run yet (a busy machine): here time passes an activation and a not_after
// without waking the loop.
func TestTicketKeysWhenTheTimerIsLate(t *testing.T) {
	_, fc, src, _ := newFakeSource(t, 10*time.Second)
	fc.step(t, 50*time.Second) // key 1 activates; the loop reads key 2
	fc.step(t, 60*time.Second) // key 2 activates
	if got := describeKeys(src.TicketKeys()); got != "2,3,1,0" {
		t.Fatalf("t0+120s: keys %s, want 2,3,1,0", got)
	}
	fc.mu.Lock()
	fc.now = fc.now.Add(60 * time.Second) // t0+180s: key 3 activates, key 0 retires; no timer fires
	fc.mu.Unlock()
	if got := describeKeys(src.TicketKeys()); got != "3,2,1" {
		t.Fatalf("t0+180s with the timer late: keys %s, want 3,2,1 (no read of key 4 yet, key 0 retired)", got)
	}
}
