package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// readCorpus returns the data of one committed fuzz seed.
func readCorpus(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzDecodeWindow", name))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
		t.Fatalf("%s: not a go fuzz v1 []byte seed", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return []byte(s)
}

// TestDecodeWindowCorpus: the committed seeds that should decode do, and
// every malformed seed is refused with an error naming the broken field and
// rule. This also keeps the fuzz corpus meaningful (valid seeds exist).
func TestDecodeWindowCorpus(t *testing.T) {
	cases := map[string]string{
		"valid_three":                     "",
		"valid_new_keyring":               "",
		"valid_only_current":              "",
		"valid_many_previous":             "",
		"valid_unordered":                 "",
		"valid_encrypt_until":             "",
		"encrypt_until_before_not_before": "keys[0].encrypt_until: must not be before not_before",
		"two_current":                     "exactly one key must be \"current\"",
		"no_current":                      "exactly one key must be \"current\", got none",
		"dup_id":                          "keys[1].id: must be unique",
		"short_key":                       "keys[0].ticket_key: must decode to 32 bytes",
		"bad_time":                        `keys[0].not_before: must be an RFC 3339 time, got "yesterday"`,
		"reversed_times":                  "keys[0].not_after: must be after not_before",
		"next_before_current":             `keys[1].not_before: a "next" key must activate after the current key`,
		"wrong_format":                    `format: must be "go", got "nginx"`,
		"zero_ttl":                        "ttl: must be 1..604800 seconds, got 0",
		"ttl_string":                      `field "ttl": want int64, got JSON string`,
		"bad_state":                       `keys[1].state: must be current, next or previous, got "pending"`,
		"not_json":                        "not a JSON object",
		"empty":                           "not a JSON object",
		"array":                           "not a JSON object",
		"null":                            "format",
	}
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzDecodeWindow"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < len(cases) {
		t.Fatalf("corpus has %d seeds, want at least %d", len(entries), len(cases))
	}
	for name, want := range cases {
		w, err := decodeWindow(readCorpus(t, name))
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			for i := 1; i < len(w.Keys); i++ {
				if !w.Keys[i-1].NotBefore.Before(w.Keys[i].NotBefore) {
					t.Errorf("%s: keys not sorted", name)
				}
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, want)
		}
	}
}

// TestEncryptEnd: a key encrypts until the next key activates; the last one
// for one rotation period, never past its not_after.
func TestEncryptEnd(t *testing.T) {
	w, err := decodeWindow(readCorpus(t, "valid_three"))
	if err != nil {
		t.Fatal(err)
	}
	if got := w.encryptEnd(0); !got.Equal(w.Keys[1].NotBefore) {
		t.Fatalf("first key ends at %v, want the next activation %v", got, w.Keys[1].NotBefore)
	}
	if got := w.encryptEnd(2); !got.Equal(w.Keys[2].NotBefore.Add(w.RotationPeriod)) {
		t.Fatalf("last key ends at %v, want one period after its activation", got)
	}
}

// TestEncryptEndFromEngine: a published encrypt_until is the end of
// encryption, also for the last key (here 30s before not_before +
// rotation_period, as after a rotation_period change).
func TestEncryptEndFromEngine(t *testing.T) {
	w, err := decodeWindow(readCorpus(t, "valid_encrypt_until"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := w.encryptEnd(1), w.Keys[2].NotBefore; !got.Equal(want) || !w.Keys[1].EncryptUntil.Equal(want) {
		t.Fatalf("current key ends at %v, want its encrypt_until %v", got, want)
	}
	if got, want := w.encryptEnd(2), w.Keys[2].NotBefore.Add(30*time.Second); !got.Equal(want) {
		t.Fatalf("last key ends at %v, want its encrypt_until %v", got, want)
	}
	if !w.Keys[0].EncryptUntil.IsZero() {
		t.Fatal("a key without encrypt_until got one")
	}
}

// zeroLengthWindow is a `go` window as engines already running serve it after
// `rotate mode=now` in the second a scheduled key activated: that key was cut
// at once (encrypt_until == not_before) and shares its not_before with the
// rotated key, which is current.
func zeroLengthWindow(t *testing.T) []byte {
	t.Helper()
	at := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	f := func(d time.Duration) string { return at.Add(d).Format(time.RFC3339) }
	key := func(n int64, state string, nb, until, na time.Duration) map[string]any {
		return map[string]any{"id": keyID(n), "state": state, "not_before": f(nb), "encrypt_until": f(until),
			"not_after": f(na), "ticket_key": base64.StdEncoding.EncodeToString(keyMaterial(n))}
	}
	b, err := json.Marshal(map[string]any{"name": "web", "format": "go", "key_size": 80, "rotation_period": 3600,
		"retain": 43200, "publish_ahead": 3600, "ttl": 3600, "keys": []any{
			key(3, "current", 0, time.Hour, 13*time.Hour),
			key(4, "next", time.Hour, 2*time.Hour, 14*time.Hour),
			key(2, "previous", 0, 0, 12*time.Hour),
			key(1, "previous", -time.Hour, 0, 12*time.Hour),
		}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodeWindowZeroLengthKey: a key cut in the second it activated is
// accepted; it shares not_before with the rotated key, never encrypts and
// decrypts until its not_after. The client used to refuse the whole window
// ("keys[2].not_before: must differ"), which kept NewSource from starting.
func TestDecodeWindowZeroLengthKey(t *testing.T) {
	w, err := decodeWindow(zeroLengthWindow(t))
	if err != nil {
		t.Fatalf("window with a zero-length key refused: %v", err)
	}
	at := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	if w.Keys[1].ID != keyID(2) || w.Keys[2].ID != keyID(3) {
		t.Fatalf("keys sharing not_before are not ordered zero-length first: %v", w.Keys)
	}
	if end := w.encryptEnd(1); !end.Equal(at) {
		t.Fatalf("the zero-length key encrypts until %s, want never (%s)", end, at)
	}
	for _, now := range []time.Time{at, at.Add(time.Second), at.Add(time.Hour - time.Second)} {
		if i := w.rules().EncryptingAt(now); i != 2 {
			t.Fatalf("at %s key %d encrypts, want the rotated key (2)", now, i)
		}
	}
}

// TestSourceStartsOnZeroLengthKeyWindow: NewSource starts on that window
// and encrypts with the rotated key; the cut key decrypts.
func TestSourceStartsOnZeroLengthKeyWindow(t *testing.T) {
	at := time.Date(2026, 11, 2, 10, 0, 30, 0, time.UTC)
	clock := newFakeClock(at)
	body, err := json.Marshal(map[string]any{"data": json.RawMessage(zeroLengthWindow(t))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.MaxRetries = srv.URL, 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("t")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	src, err := NewSource(ctx, c, "ticketkeys", "web", withClock(clock), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("NewSource refused the window: %v", err)
	}
	defer src.Close()
	st := src.Status()
	if st.CurrentID != keyID(3) || st.Exhausted {
		t.Fatalf("encrypting %q (exhausted %v), want the rotated key", st.CurrentID, st.Exhausted)
	}
	if st.Keys[StatePrevious] != 2 || st.Keys[StateNext] != 1 {
		t.Fatalf("keys in use %v, want the cut key and its predecessor as previous, one next", st.Keys)
	}
}
