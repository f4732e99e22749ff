package fleetcheck

import (
	"strings"
	"testing"
	"time"
)

// TestPreviousKeysChecked: the retain promise. Each node must still resume
// a ticket under each previous key the window says decrypts; a node that
// dropped them (a restarted node that loaded only the current and next
// keys) is named, by key, while its matrix and next key are green.
func TestPreviousKeysChecked(t *testing.T) {
	s, servers, cert := goFleet(t, 3)
	prev, cur, next := s.keys[0], s.keys[1], s.keys[2]
	forgetful := servers[2]
	forgetful.set(cur, next)
	r := check(t, newChecker(t, s, cert, addrs(servers), nil))
	if r.OK {
		t.Fatalf("a node without the previous key %s passes:\n%s", prev.ID, table(t, r))
	}
	for _, f := range r.Failures {
		if !strings.HasPrefix(f, forgetful.addr+" ") || !strings.Contains(f, "previous key") || !strings.Contains(f, prev.ID) {
			t.Errorf("failure not about the forgetful node's previous key %s: %s", prev.ID, f)
		}
	}
}

// TestPreviousKeysRotate: at 1 h / 12 h, 12 previous keys decrypt; a round
// offers MaxPrevious (2) of them, the newest every time, and every one is
// offered within 11 rounds. Keys within Grace + Timeout of not_after are not
// expected; haproxy expects one (its ring of three).
func TestPreviousKeysRotate(t *testing.T) {
	now := time.Now()
	s := newSchedule(t, FormatGo, 80, 14, now.Add(-12*time.Hour-30*time.Minute), time.Hour, 12*time.Hour)
	w := s.window(now)
	c := &Checker{cfg: Config{Format: FormatGo, Grace: DefaultGrace, Timeout: DefaultTimeout, MaxPrevious: 2}}
	all := c.expectedPrevious(w, now)
	if len(all) != 12 || all[0] != w.Keys[11] {
		t.Fatalf("expected previous keys: %d, newest %v; want 12, newest %s", len(all), all[0], w.Keys[11].ID)
	}
	seen := map[string]bool{}
	for round := 1; round <= 11; round++ {
		got := c.previousToOffer(w, now, round)
		if len(got) != 2 || got[0] != all[0] {
			t.Fatalf("round %d offers %v; want 2, the newest first", round, got)
		}
		for _, k := range got {
			seen[k.ID] = true
		}
	}
	if len(seen) != 12 {
		t.Errorf("11 rounds offered %d of 12 previous keys", len(seen))
	}
	if near := c.expectedPrevious(w, w.Keys[0].NotAfter.Add(-DefaultGrace)); len(near) != 11 {
		t.Errorf("%d previous keys expected 5 s before the oldest one's not_after; want 11 (not that one)", len(near))
	}
	c.cfg.Format = FormatHAProxy
	if got := c.expectedPrevious(w, now); len(got) != 1 || got[0] != all[0] {
		t.Errorf("haproxy expects %v; want only the newest previous key", got)
	}
}
