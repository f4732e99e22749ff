package ticketkeys

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// A read served from the render cache is exactly the read a fresh rendering
// of storage gives, at every instant of a sweep across publications,
// activations, retirements, an emergency rotation with purge and a settings
// change, in every format.
func TestRenderedWindowEqualsAFreshRender(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{
		"rotation_period": "10s", "retain": "20s", "publish_ahead": "10s", "key_size": 80,
	})
	ctx := context.Background()
	for step := 0; step < 240; step++ {
		switch step {
		case 90:
			tb.mustRequest(t, logical.UpdateOperation, "keys/web/rotate", map[string]interface{}{"mode": "now", "purge_previous": true})
		case 150:
			tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"retain": "30s"})
		}
		if step%40 == 0 {
			tb.tick(t)
		}
		now := tb.clock.Now()
		stored, err := loadKeyring(ctx, tb.storage, "web")
		if err != nil {
			t.Fatal(err)
		}
		for _, format := range formats {
			resp := tb.mustRequest(t, logical.ReadOperation, "keys/web", map[string]interface{}{"format": format})
			want, wantWarnings, err := windowData(stored, format, now)
			if err != nil {
				t.Fatal(err)
			}
			got := resp.Data
			if _, ok := got["ttl"]; !ok {
				t.Fatalf("step %d %s: no ttl in the read", step, format)
			}
			delete(got, "ttl")
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(resp.Warnings, wantWarnings) {
				t.Fatalf("step %d (%s) format %s: cached read differs from a fresh rendering of storage", step, now.Format(time.RFC3339Nano), format)
			}
		}
		tb.clock.Advance(700 * time.Millisecond)
	}
}

// Reads within one window reuse one rendering; the first read after the
// window changes renders anew; a ttl added to one read never reaches another.
func TestReadsReuseOneRenderingPerWindow(t *testing.T) {
	tb := getBackend(t)
	tb.mustRequest(t, logical.UpdateOperation, "keys/web", map[string]interface{}{"rotation_period": "10s", "retain": "20s"})
	l := tb.rlockKeyring("web")
	kr, err := l.load(context.Background(), tb.storage)
	l.unlock()
	if err != nil || kr == nil || kr.renders == nil {
		t.Fatalf("cached keyring %v (err %v): want one with a render cache", kr, err)
	}
	now := tb.clock.Now()
	change, ok := kr.nextChange(now)
	if !ok {
		t.Fatal("no next change")
	}
	first, _, err := kr.renderWindow(formatGo, now)
	if err != nil {
		t.Fatal(err)
	}
	first["ttl"] = int64(42)
	again, _, _ := kr.renderWindow(formatGo, change.Add(-time.Millisecond))
	if _, leaked := again["ttl"]; leaked {
		t.Fatal("a field added to one read's data appeared in the next read")
	}
	if reflect.ValueOf(again["keys"]).Pointer() != reflect.ValueOf(first["keys"]).Pointer() {
		t.Error("a second read within the same window rendered the keys again")
	}
	after, _, _ := kr.renderWindow(formatGo, change)
	if reflect.ValueOf(after["keys"]).Pointer() == reflect.ValueOf(first["keys"]).Pointer() {
		t.Error("a read at the window's next change reused the old rendering")
	}
	fresh, _, _ := windowData(kr, formatGo, change)
	if !reflect.DeepEqual(after, fresh) {
		t.Error("the rendering after the change differs from a fresh one")
	}
	// A private copy to change carries no cache, so nothing rendered from it
	// can outlive a change made to it.
	if kr.clone().renders != nil {
		t.Error("clone shares or carries a render cache")
	}
}
