package client

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeWindow feeds arbitrary response data to the window decoder. It
// checks that decoding never panics, that errors never echo a ticket_key
// value, and that every accepted window satisfies the documented invariants:
// one current key, unique 32-hex ids, sane times, keys sorted by activation,
// and that the keys derived from it at any instant never include a key at or
// past its not_after. The seed corpus is in testdata/fuzz/FuzzDecodeWindow.
func FuzzDecodeWindow(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := decodeWindow(data)
		if err != nil {
			for _, v := range ticketKeyValues(data) {
				if strings.Contains(err.Error(), v) {
					t.Fatalf("error echoes a ticket_key value: %v", err)
				}
			}
			return
		}
		current := 0
		ids := map[string]bool{}
		for i, k := range w.Keys {
			if k.State == StateCurrent {
				current++
			}
			if len(k.ID) != idHexLen || ids[k.ID] {
				t.Fatalf("keys[%d]: bad or duplicate id accepted", i)
			}
			ids[k.ID] = true
			if !k.NotAfter.After(k.NotBefore) || k.NotAfter.Sub(k.NotBefore) > maxKeyLifetime {
				t.Fatalf("keys[%d]: insane times accepted: %v .. %v", i, k.NotBefore, k.NotAfter)
			}
			if i > 0 && !w.Keys[i-1].NotBefore.Before(k.NotBefore) {
				t.Fatalf("keys not sorted by activation at %d", i)
			}
			if k.material == ([goKeySize]byte{}) {
				t.Fatalf("keys[%d]: zero key accepted", i)
			}
		}
		if current != 1 || w.TTL < time.Second || w.RotationPeriod < time.Second {
			t.Fatalf("accepted window with %d current keys, ttl %s, period %s", current, w.TTL, w.RotationPeriod)
		}

		// Derive the keys in use at every boundary of every key.
		s := &Source{o: defaultOptions(), keyCfgs: map[keyCfgID]*tls.Config{}, updated: make(chan struct{}, 1),
			log: slog.New(slog.NewTextHandler(io.Discard, nil)), window: w}
		s.o.logger = s.log
		var instants []time.Time
		for i, k := range w.Keys {
			if i >= 8 {
				break
			}
			for _, at := range []time.Time{k.NotBefore, k.NotAfter, w.encryptEnd(i)} {
				instants = append(instants, at.Add(-time.Second), at, at.Add(time.Second))
			}
		}
		for _, now := range instants {
			ks := s.recomputeLocked(now, "schedule")
			if ks.current == nil {
				t.Fatalf("no encrypting key at %v", now)
			}
			if !ks.validUntil.After(now) {
				t.Fatalf("key set valid until %v, not after %v", ks.validUntil, now)
			}
			for _, k := range ks.decrypt {
				if !now.Before(k.notAfter) {
					t.Fatalf("a %s key is used at %v, at or past its not_after %v", k.state, now, k.notAfter)
				}
			}
			if !ks.exhausted && ks.current.state != StateCurrent {
				t.Fatalf("not exhausted but encrypting with a %s key", ks.current.state)
			}
		}
	})
}

// ticketKeyValues returns the ticket_key strings of data, if it parses.
func ticketKeyValues(data []byte) []string {
	var v struct {
		Keys []struct {
			TicketKey any `json:"ticket_key"`
		} `json:"keys"`
	}
	if json.Unmarshal(data, &v) != nil {
		return nil
	}
	var out []string
	for _, k := range v.Keys {
		if s, ok := k.TicketKey.(string); ok && len(s) >= 8 {
			out = append(out, s)
		}
	}
	return out
}
