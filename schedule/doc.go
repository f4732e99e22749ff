// Package schedule is the one definition of a ticketkeys window: its wire
// format and validation (Decode), which key encrypts and which decrypt at
// an instant (Window.EncryptingAt, Window.DecryptingAt), the byte layouts of
// each server format (Render, Split, GoKey), and the reader lag that
// publish_ahead must cover (ReaderLag, GoClientDelayMax). The engine, the Go
// client, the fleet check, the HAProxy push and the bench all use it, so a
// rule changed here changes for every reader. It depends on the standard
// library only.
//
// # The rule
//
// A key encrypts from its not_before up to its encrypt_until (never past
// its not_after); a key without encrypt_until (engines before v0.2.0)
// encrypts until the next key activates, the last one for one
// rotation_period. A key whose encrypt_until equals its not_before (cut in
// the second it activated, by `rotate mode=now`) never encrypts; it shares
// its not_before with its successor and only decrypts. Should two keys
// cover an instant, the one activated last encrypts; when none does, the
// schedule is exhausted at that instant. Every key decrypts until its
// not_after.
//
// # Test vectors
//
// testdata/vectors.json is generated from this package (go generate
// ./schedule; TestVectorsUpToDate fails when it is stale) so that readers
// in other languages (the nginx Lua module) are held to the same rules. Its
// shape:
//
//	{
//	  "comment": "...",
//	  "windows": [{
//	    "name": "zero-length-same-second",       // unique
//	    "about": "what the case shows",
//	    "read_at": "2026-11-02T10:02:00Z",         // when the reads were served
//	    "secrets": [{"id": hex, "aes": hex, "hmac": hex}],  // every key of the keyring (test material)
//	    "reads": {                                 // one per format the case is served in
//	      "nginx": { ...the response data of a read, exactly as the engine serves it:
//	                 name, format, key_size, rotation_period, retain, publish_ahead, ttl,
//	                 keys[] (id, state, not_before, encrypt_until (absent for old engines),
//	                 not_after, ticket_key), tls_ticket_keys (haproxy only) }
//	    },
//	    "samples": [{
//	      "at": "2026-11-02T10:00:00.5Z",          // RFC 3339 with fraction
//	      "unix_ms": 1793613600500,                // the same instant, Unix milliseconds
//	      "encrypting": "id" or "",                // "" when no key encrypts (exhausted)
//	      "decrypting": ["id", ...]                // keys that decrypt, in window order
//	    }]
//	  }],
//	  "invalid": [{
//	    "name": "two-current",
//	    "format": "nginx",
//	    "field": "state",                          // the field the refusal names
//	    "window": { ...response data that every reader must refuse... }
//	  }]
//	}
//
// The expected bytes of each layout are the ticket_key values of the reads:
// Render(format, id, aes, hmac) of the key's secrets. Samples are the same
// for every format of a window.
package schedule

//go:generate go test . -count=1 -run TestVectorsUpToDate -update
