package fleetcheck

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// TestNextKeyJudgedFromItsPublicationTime: publish_ahead was raised from
// 20 to 60 minutes after the next key was published. The key activates in
// 19 minutes and became readable a minute ago (its publish_at), not 41
// minutes ago as today's publish_ahead says: a node that has not fetched it
// yet is pending, not failed.
func TestNextKeyJudgedFromItsPublicationTime(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	now := time.Now()
	cur := newKey(t, 80, now.Add(-41*time.Minute), now.Add(3*time.Hour))
	next := newKey(t, 80, now.Add(19*time.Minute), now.Add(4*time.Hour))
	published := next.NotBefore.Add(-20 * time.Minute)
	node := startGoServer(t, cert, cur)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var keys []map[string]any
		for _, k := range []*Key{cur, next} {
			keys = append(keys, map[string]any{"id": k.ID, "state": "current", "publish_at": k.NotBefore.Add(-20 * time.Minute).Format(time.RFC3339),
				"not_before": k.NotBefore.Format(time.RFC3339), "not_after": k.NotAfter.Format(time.RFC3339),
				"ticket_key": base64.StdEncoding.EncodeToString(k.material(FormatGo))})
		}
		keys[1]["state"] = "next"
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"name": "test", "format": FormatGo, "key_size": 80,
			"rotation_period": 3600, "retain": 7200, "publish_ahead": 3600, "ttl": 60, "keys": keys}})
	}))
	defer srv.Close()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.MaxRetries = srv.URL, 0
	vc, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken("test")
	c, err := New(Config{Keyring: "test", Format: FormatGo, Read: VaultReader(vc, "ticketkeys", "test", FormatGo), Nodes: nodesOf(cert, node.addr)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := check(t, c)
	if n := r.Nodes[0]; n.Next != StatusPending || !r.OK {
		t.Fatalf("next key published %s ago (publish_at), node without it: next %s, OK %v; want pending:\n%s",
			time.Since(published).Round(time.Second), n.Next, r.OK, table(t, r))
	}
}

// TestApplyPublishAt: a bad publish_at is refused naming the field; a key
// without one keeps the derived time.
func TestApplyPublishAt(t *testing.T) {
	k := newKey(t, 80, time.Now(), time.Now().Add(time.Hour))
	w := &Window{PublishAhead: 10 * time.Minute, Keys: []*Key{k}}
	if err := applyPublishAt(w, []byte(`{"keys":[{"id":"`+k.ID+`","publish_at":"yesterday"}]}`)); err == nil || err.Error() != `window: keys[0].publish_at: must be an RFC 3339 time, got "yesterday"` {
		t.Errorf("bad publish_at: %v", err)
	}
	if err := applyPublishAt(w, []byte(`{"keys":[{"id":"`+k.ID+`"}]}`)); err != nil || !w.publishedAt(k).Equal(k.NotBefore.Add(-10*time.Minute)) {
		t.Errorf("no publish_at: %v, published %s; want not_before - publish_ahead", err, w.publishedAt(k))
	}
}
