package ticketkeys

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRotateScheduledPublishesAtOnceAndActivatesAfterPublishAhead(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "publish_ahead": "20m"})
	tb.clock.Advance(10 * time.Minute)
	_, before := readWindow(t, tb, "web", "go")

	resp := tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", nil) // mode defaults to scheduled
	if _, ok := resp.Data["keys"].([]map[string]interface{})[0][keyMaterialField]; ok {
		t.Fatal("rotate response carries key material")
	}
	_, after := readWindow(t, tb, "web", "go")
	if states(after) != "current,next" || after[0].ID != before[0].ID {
		t.Fatalf("after a scheduled rotation the window is %s; want the same current key and a new next", states(after))
	}
	if want := testStart.Add(30 * time.Minute); !after[1].NotBefore.Equal(want) {
		t.Fatalf("new key activates at %v, want now + publish_ahead = %v", after[1].NotBefore, want)
	}
	if resp.Data["rotated_key_id"] != after[1].ID {
		t.Fatal("rotate response does not name the new key")
	}
	// It activates on time, and the schedule continues every rotation_period after it.
	tb.clock.Set(testStart.Add(30 * time.Minute))
	_, at := readWindow(t, tb, "web", "go")
	if at[0].ID != after[1].ID || at[0].State != stateCurrent {
		t.Fatal("the scheduled key did not activate at its not_before")
	}
	tb.clock.Set(testStart.Add(70 * time.Minute)) // publish time of the following key: 90m - 20m
	_, later := readWindow(t, tb, "web", "go")
	if len(later) < 2 || later[1].State != stateNext || !later[1].NotBefore.Equal(testStart.Add(90*time.Minute)) {
		t.Fatalf("the schedule does not continue a rotation_period after the rotated key: %s", states(later))
	}
}

func TestRotateNowEncryptsAtOnceAndDiscardsPendingKeys(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", nil)
	_, before := readWindow(t, tb, "web", "nginx") // current + published next
	tb.clock.Advance(5 * time.Minute)

	tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now"})
	_, after := readWindow(t, tb, "web", "nginx")
	if states(after) != "current,next,previous" {
		t.Fatalf("window after rotate now: %s, want current,next,previous", states(after))
	}
	if after[0].ID == before[0].ID || after[0].ID == before[1].ID || !after[0].NotBefore.Equal(testStart.Add(5*time.Minute)) {
		t.Fatal("rotate now did not make a fresh key current at once")
	}
	if after[1].ID == before[1].ID {
		t.Fatal("the next key published before rotate now was kept")
	}
	if !after[1].NotBefore.Equal(after[0].NotBefore.Add(time.Hour)) {
		t.Fatal("the schedule does not restart from the new key")
	}
	if after[2].ID != before[0].ID || !after[2].NotAfter.Equal(before[0].NotAfter) {
		t.Fatal("the old current key must keep decrypting until its published not_after")
	}
	hist := tb.mustRequest(t, logical.ReadOperation, "keys/web/history", nil)
	destroyed := hist.Data["destroyed"].([]map[string]interface{})
	if len(destroyed) != 1 || destroyed[0]["id"] != before[1].ID || destroyed[0]["reason"] != reasonDiscarded {
		t.Fatalf("history does not record the discarded next key: %v", destroyed)
	}
}

func TestRotatePurgePrevious(t *testing.T) {
	for _, mode := range []string{"now", "scheduled"} {
		t.Run(mode, func(t *testing.T) {
			tb := getBackend(t)
			tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "10m"})
			tb.clock.Advance(35 * time.Minute) // three previous keys
			tb.tick(t)
			_, before := readWindow(t, tb, "web", "nginx")
			if states(before) != "current,next,previous,previous,previous" {
				t.Fatalf("setup: %s", states(before))
			}
			tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": mode, "purge_previous": true})
			_, after := readWindow(t, tb, "web", "nginx")
			for _, k := range after {
				if k.State == statePrevious {
					t.Fatalf("purge_previous left previous key %s", k.ID)
				}
			}
			kr, _ := loadKeyring(t.Context(), tb.storage, "web")
			for _, old := range before[2:] {
				for _, k := range kr.Keys {
					if k.ID() == old.ID {
						t.Fatalf("purged key %s still has material in storage", old.ID)
					}
				}
			}
			purged := 0
			for _, d := range kr.Destroyed {
				if d.Reason == reasonPurged {
					purged++
				}
			}
			want := 3
			if mode == "now" {
				want = 4 // the key that was current until now goes too
				if after[0].ID == before[0].ID {
					t.Fatal("mode=now kept the old current key encrypting")
				}
			} else if after[0].ID != before[0].ID {
				t.Fatal("scheduled purge must keep the current key encrypting")
			}
			if purged != want {
				t.Fatalf("%d keys recorded as purged, want %d", purged, want)
			}
		})
	}
}

func TestRotateValidation(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", nil)
	_, before := readWindow(t, tb, "web", "nginx")
	for _, tc := range []struct {
		data map[string]interface{}
		frag []string
	}{
		{map[string]interface{}{"mode": "later"}, []string{"mode", `"scheduled" or "now"`, `"later"`}},
		{map[string]interface{}{"purge_previous": "perhaps"}, []string{"purge_previous", "perhaps"}},
	} {
		resp, err := tb.request(t, logical.UpdateOperation, "keys/web/rotate", tc.data)
		assertStatus(t, resp, err, 400, tc.frag...)
	}
	if _, after := readWindow(t, tb, "web", "nginx"); ids(after) != ids(before) {
		t.Fatal("a rejected rotation changed the window")
	}
}

func TestSettingsChangeNeverMovesPublishedKeys(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "retain": "2h"})
	tb.clock.Advance(90 * time.Minute)
	_, before := readWindow(t, tb, "web", "nginx")

	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "15m", "retain": "30m"})
	resp, after := readWindow(t, tb, "web", "nginx")
	if ids(after) != ids(before) {
		t.Fatalf("published keys changed: %s -> %s", ids(before), ids(after))
	}
	for i := range before {
		if !before[i].NotBefore.Equal(after[i].NotBefore) || !before[i].NotAfter.Equal(after[i].NotAfter) {
			t.Fatalf("key %s moved", before[i].ID)
		}
	}
	if resp.Data["publish_ahead"] != int64(900) {
		t.Fatalf("publish_ahead did not follow rotation_period while unset: %v", resp.Data["publish_ahead"])
	}
	// The next key published before the change (2h to 3h) keeps its times; the
	// first key not yet published (from 3h) gets the new period and retain.
	tb.clock.Set(testStart.Add(2*time.Hour - 15*time.Minute))
	_, later := readWindow(t, tb, "web", "nginx")
	nexts := 0
	for _, k := range later {
		if k.State == stateNext {
			nexts++
		}
	}
	tb.clock.Set(testStart.Add(2*time.Hour + 44*time.Minute))
	if _, k := readWindow(t, tb, "web", "nginx"); states(k) != "current,previous,previous" {
		t.Fatalf("a key became readable more than the new publish_ahead before activation: %s", states(k))
	}
	tb.clock.Set(testStart.Add(2*time.Hour + 45*time.Minute))
	_, at2h := readWindow(t, tb, "web", "nginx")
	if at2h[1].State != stateNext || !at2h[1].NotBefore.Equal(testStart.Add(3*time.Hour)) {
		t.Fatalf("new rotation_period does not apply from the first unpublished key: %s", states(at2h))
	}
	if at2h[0].NotBefore != testStart.Add(2*time.Hour) || at2h[0].NotAfter != testStart.Add(5*time.Hour) {
		t.Fatal("the key published before the change lost its times")
	}
	if want := at2h[1].NotBefore.Add(45 * time.Minute); !at2h[1].NotAfter.Equal(want) {
		t.Fatalf("new key not_after %v, want %v (15m + 30m)", at2h[1].NotAfter, want)
	}
	if nexts != 1 {
		t.Fatalf("%d next keys before 2h, want 1", nexts)
	}
	// An explicit publish_ahead stops following rotation_period.
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"publish_ahead": "5m"})
	r2 := tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "20m"})
	if r2.Data["publish_ahead"] != int64(300) {
		t.Fatalf("explicit publish_ahead changed with rotation_period: %v", r2.Data["publish_ahead"])
	}
	resp3, err := tb.request(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "5s"})
	assertStatus(t, resp3, err, 400, "publish_ahead must not exceed rotation_period (5s)", "got 5m")
}

func TestScheduleRepairedAfterLongOutage(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "10m", "retain": "1h"})
	tb.clock.Advance(5*time.Hour + 3*time.Minute) // sealed: no ticks, no reads
	_, keys := readWindow(t, tb, "web", "nginx")
	if states(keys) != "current,next" {
		t.Fatalf("after an outage the read must repair the schedule: %s", states(keys))
	}
	if want := testStart.Add(5 * time.Hour); !keys[0].NotBefore.Equal(want) {
		t.Fatalf("repaired key activates %v, want the rotation grid slot %v", keys[0].NotBefore, want)
	}
	if !keys[1].NotBefore.Equal(keys[0].NotBefore.Add(10 * time.Minute)) {
		t.Fatal("repaired schedule does not continue every rotation_period")
	}
	kr, _ := loadKeyring(t.Context(), tb.storage, "web")
	for _, k := range kr.Keys {
		if !tb.clock.Now().Before(k.NotAfter) {
			t.Fatal("the repairing read left expired material in storage")
		}
	}
}

// TestWindowPublishesEncryptUntil: every key of a read carries the stored
// encrypt_until, which a scheduled rotation brings forward (so it cannot be
// derived from not_before + rotation_period).
func TestWindowPublishesEncryptUntil(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "1h", "publish_ahead": "20m"})
	tb.clock.Advance(10 * time.Minute)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", nil)
	stored := map[string]time.Time{}
	for _, k := range tb.cached(t, "web").Keys {
		stored[k.ID()] = k.EncryptUntil
	}
	for _, f := range formats {
		resp, keys := readWindow(t, tb, "web", f)
		raw := resp.Data["keys"].([]map[string]interface{})
		for i, k := range keys {
			got, err := time.Parse(time.RFC3339, fmt.Sprint(raw[i]["encrypt_until"]))
			if err != nil {
				t.Fatalf("format %s key %s: encrypt_until %v: %v", f, k.ID, raw[i]["encrypt_until"], err)
			}
			if !got.Equal(stored[k.ID]) {
				t.Fatalf("format %s key %s: encrypt_until %s, stored %s", f, k.ID, got, stored[k.ID])
			}
		}
		if cur := keys[0]; !stored[cur.ID].Equal(testStart.Add(30 * time.Minute)) {
			t.Fatalf("the current key stops encrypting at %s, want the rotated key's not_before", stored[cur.ID])
		}
	}
}
