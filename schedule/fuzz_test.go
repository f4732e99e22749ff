package schedule

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

// FuzzDecode: Decode never panics; an accepted window keeps the rule's
// invariants (sorted keys; EncryptingAt names the key activated last among
// those whose interval covers the instant, never one at or after its
// not_after). Seeds: every read and invalid window of the
// test vectors.
func FuzzDecode(f *testing.F) {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		f.Fatal(err)
	}
	var v struct {
		Windows []struct {
			Reads map[string]json.RawMessage `json:"reads"`
		} `json:"windows"`
		Invalid []InvalidVector `json:"invalid"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		f.Fatal(err)
	}
	for _, w := range v.Windows {
		for _, r := range w.Reads {
			if len(r) < 20000 {
				f.Add([]byte(r))
			}
		}
	}
	for _, iv := range v.Invalid {
		f.Add([]byte(iv.Window))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := Decode(data, "")
		if err != nil {
			return
		}
		for i := range w.Keys {
			k := &w.Keys[i]
			if i > 0 && k.NotBefore.Before(w.Keys[i-1].NotBefore) {
				t.Fatal("keys not sorted")
			}
			for _, at := range []time.Time{k.NotBefore, k.NotBefore.Add(time.Second / 2), w.EncryptEnd(i), k.NotAfter} {
				last := -1
				for j := range w.Keys {
					if w.Encrypts(j, at) {
						last = j
						if !at.Before(w.Keys[j].NotAfter) {
							t.Fatalf("key %d encrypts at its not_after", j)
						}
					}
				}
				// The engine never serves overlapping intervals; should a
				// window hold them, the key activated last encrypts.
				if got := w.EncryptingAt(at); got != last {
					t.Fatalf("EncryptingAt(%s) = %d, want the last encrypting key %d", at, got, last)
				}
			}
		}
	})
}
