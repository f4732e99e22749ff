package fleetcheck

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// purgeFleet is a keyring at production settings (1 h periods, 12 h
// retain: 14 keys in the window) served by three Go nodes holding all of
// it.
func purgeFleet(t *testing.T) (*schedule, []*goServer, *Key, *testcert.Cert) {
	t.Helper()
	cert := testcert.New(t, testcert.ECDSAP256)
	s := newSchedule(t, FormatGo, 80, 14, time.Now().Add(-12*time.Hour-30*time.Minute), time.Hour, 12*time.Hour)
	cur := s.keys[12]
	var servers []*goServer
	for range 3 {
		servers = append(servers, startGoServer(t, cert, cur, s.keys...))
	}
	return s, servers, cur, cert
}

// TestPurgeOffersEveryRetiredKey: rotate mode=now purge_previous=true
// retires every key at one instant (14 at 1 h / 12 h). Whatever purged key
// a stale node still holds, the check names it: the newest purged keys
// (former next and current, the likely compromised one) are offered in the
// first round after the purge, the others within ceil(14/2) more rounds
// (MaxRetired 4: the two newest every round, two more rotating), and no key
// is ever reported refused everywhere before every node refused it. Random
// histories: which key the stale node keeps is drawn each trial.
func TestPurgeOffersEveryRetiredKey(t *testing.T) {
	for trial := range 3 {
		s, servers, cur, cert := purgeFleet(t)
		c := newChecker(t, s, cert, addrs(servers), func(c *Config) { c.Grace = time.Millisecond })
		if r := check(t, c); !r.OK {
			t.Fatalf("trial %d: before the purge:\n%s", trial, table(t, r))
		}
		purged := slices.Clone(s.keys)
		formerNext := purged[len(purged)-1]
		fresh := newKey(t, 80, time.Now().Add(-time.Second), time.Now().Add(13*time.Hour))
		s.mu.Lock()
		s.keys = []*Key{fresh}
		s.mu.Unlock()
		kept := purged[rand.IntN(len(purged))]
		servers[0].set(fresh)
		servers[1].set(fresh)
		servers[2].set(fresh, kept) // stale: still resumes one purged key
		time.Sleep(2 * time.Millisecond)

		offered := map[string]map[string]bool{} // key -> nodes offered it
		named := false
		maxRounds := 2 + (len(purged)+1)/2
		for round := 1; round <= maxRounds; round++ {
			r := check(t, c)
			for _, n := range r.Nodes {
				for _, v := range n.Versions {
					if len(v.Retired) > c.cfg.MaxRetired {
						t.Fatalf("trial %d round %d: %s offered %d retired keys; MaxRetired is %d", trial, round, n.Addr, len(v.Retired), c.cfg.MaxRetired)
					}
					for _, rc := range v.Retired {
						if offered[rc.KeyID] == nil {
							offered[rc.KeyID] = map[string]bool{}
						}
						offered[rc.KeyID][n.Addr] = true
					}
				}
			}
			if round == 1 {
				for what, k := range map[string]*Key{"next": formerNext, "current": cur} {
					if len(offered[k.ID]) != len(servers) {
						t.Errorf("trial %d: first round after the purge offered the former %s key %s to %d of %d nodes", trial, what, k.ID, len(offered[k.ID]), len(servers))
					}
				}
			}
			for _, rs := range r.Retired {
				if slices.Contains(rs.AcceptedBy, servers[2].addr) && rs.ID == kept.ID {
					named = true
				}
				if !rs.RefusedEverywhereSince.IsZero() && (rs.ID == kept.ID || len(offered[rs.ID]) < len(servers)) {
					t.Fatalf("trial %d round %d: key %s reported refused everywhere since %s, but it was offered to %d of %d nodes (stale node keeps %s)",
						trial, round, rs.ID, rs.RefusedEverywhereSince.Format(time.RFC3339Nano), len(offered[rs.ID]), len(servers), kept.ID)
				}
			}
		}
		for _, k := range purged {
			if len(offered[k.ID]) != len(servers) {
				t.Errorf("trial %d: purged key %s (activated %s) offered to %d of %d nodes in %d rounds", trial, k.ID, k.NotBefore.Format(time.TimeOnly), len(offered[k.ID]), len(servers), maxRounds)
			}
		}
		if !named {
			t.Errorf("trial %d: the stale node still resumes purged key %s (activated %s), but no round named it", trial, kept.ID, kept.NotBefore.Format(time.TimeOnly))
		}

		// The stale node drops the key: the purge is refused everywhere from a round after that, and only once
		// the dropped key was offered to it again.
		servers[2].set(fresh)
		dropped := time.Now()
		var done *PurgeSummary
		for round := 1; round <= maxRounds && done == nil; round++ {
			r := check(t, c)
			if len(r.Purges) != 1 || len(r.Purges[0].Keys) != len(purged) {
				t.Fatalf("trial %d: purges %+v; want one of %d keys", trial, r.Purges, len(purged))
			}
			if p := r.Purges[0]; !p.RefusedEverywhereSince.IsZero() {
				done = &p
			} else if p.NotYetRefusedEverywhere == 0 {
				t.Fatalf("trial %d: purge not refused everywhere, yet no key is open: %+v", trial, p)
			}
		}
		if done == nil || done.RefusedEverywhereSince.Before(dropped) {
			t.Fatalf("trial %d: purge summary %+v; want refused everywhere since a round after %s", trial, done, dropped.Format(time.RFC3339Nano))
		}
	}
}

// TestPurgedKeyToleratedUntilReadersReread: after rotate mode=now
// purge_previous=true a reader following ttl drops the purged keys within
// max_read_ttl (default 5m) + its read delay (docs/api.md, emergency
// propagation). A healthy node still resuming a purged key 30 s after the
// purge is pending (named as still accepting it: the exposure), not failing;
// after max_read_ttl + delays it fails.
func TestPurgedKeyToleratedUntilReadersReread(t *testing.T) {
	s, servers, cert := goFleet(t, 2)
	prev := s.keys[0]
	c := newChecker(t, s, cert, addrs(servers), nil)
	check(t, c)
	s.remove(prev.ID)
	check(t, c)
	for _, tc := range []struct {
		ago  time.Duration
		want Status
	}{{30 * time.Second, StatusPending}, {5*time.Minute + 5*time.Second + 12*time.Second, StatusFail}} {
		c.retired[0].at = time.Now().Add(-tc.ago)
		r := check(t, c)
		for _, n := range r.Nodes {
			if n.Retired != tc.want {
				t.Errorf("node still resuming a key purged %s ago: retired %s; want %s:\n%s", tc.ago, n.Retired, tc.want, table(t, r))
			}
		}
		if len(r.Retired) != 1 || len(r.Retired[0].AcceptedBy) != 2 {
			t.Errorf("purged %s ago: retired summary %+v; want both nodes named as still accepting it", tc.ago, r.Retired)
		}
	}
}
