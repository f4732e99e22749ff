package schedule

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
)

// Server formats of a window read (docs/api.md). nginx, haproxy and envoy
// carry the same secret in the byte orders of OpenSSL-based servers; go
// carries a key derived for crypto/tls.
const (
	FormatNginx   = "nginx"
	FormatHAProxy = "haproxy"
	FormatEnvoy   = "envoy"
	FormatGo      = "go"
)

// Formats lists every format, the engine's default (nginx) first.
var Formats = []string{FormatNginx, FormatHAProxy, FormatEnvoy, FormatGo}

// Sizes of a key and its parts.
const (
	// NameSize is the length of a key name: the first bytes of every
	// ticket an OpenSSL server issues, sent in clear. Its hex is the key id.
	NameSize = 16
	// GoKeySize is the length of a go-format key, a seed for
	// tls.Config.SetSessionTicketKeys.
	GoKeySize = 32
)

// GoKeyInfo is the HKDF label of the go format. Go's crypto/tls has its own
// ticket construction (AES-CTR and HMAC-SHA256 keyed from a 32-byte seed),
// so it gets its own derived key instead of reusing bytes the OpenSSL
// formats use.
const GoKeyInfo = "ticketkeys go session ticket key v1"

// ValidKeySize reports whether n is a key size the engine makes: 48 (AES-128)
// or 80 (AES-256).
func ValidKeySize(n int) bool { return n == 48 || n == 80 }

// SecretSize is the length of each of the AES and HMAC secrets of a key of
// keySize bytes: 16 for 48-byte keys, 32 for 80-byte keys.
func SecretSize(keySize int) int { return (keySize - NameSize) / 2 }

// CheckFormat refuses an unknown format and the envoy format for 48-byte
// keys (Envoy accepts only 80-byte keys).
func CheckFormat(format string, keySize int) error {
	if !slices.Contains(Formats, format) {
		return fmt.Errorf("format must be one of %s; got %q", strings.Join(Formats, ", "), format)
	}
	if format == FormatEnvoy && keySize != 80 {
		return fmt.Errorf("format %q needs 80-byte keys (Envoy accepts only 80); this keyring has key_size %d", format, keySize)
	}
	return nil
}

// MaterialSize is the length of a key's ticket_key in format.
func MaterialSize(format string, keySize int) int {
	if format == FormatGo {
		return GoKeySize
	}
	return keySize
}

// Render lays a key out as format's ticket_key bytes (docs/api.md):
//
//	nginx 80, envoy: name[16] hmac[32] aes[32]
//	nginx 48:        name[16] aes[16] hmac[16]
//	haproxy:         name[16] aes[n] hmac[n]
//	go:              HKDF-SHA256(secret = aes||hmac, salt = name, info = GoKeyInfo), 32 bytes
//
// The result is the caller's to wipe.
func Render(format string, name, aes, hmac []byte) ([]byte, error) {
	if len(name) != NameSize {
		return nil, fmt.Errorf("key name: must be %d bytes, got %d", NameSize, len(name))
	}
	if len(aes) != len(hmac) || (len(aes) != 16 && len(aes) != 32) {
		return nil, fmt.Errorf("key secrets: aes and hmac must both be 16 or 32 bytes, got %d and %d", len(aes), len(hmac))
	}
	if format == FormatGo {
		return GoKey(name, aes, hmac)
	}
	keySize := NameSize + len(aes) + len(hmac)
	if err := CheckFormat(format, keySize); err != nil {
		return nil, err
	}
	out := make([]byte, 0, keySize)
	out = append(out, name...)
	if aesFirst(format, keySize) {
		out = append(append(out, aes...), hmac...)
	} else {
		out = append(append(out, hmac...), aes...)
	}
	return out, nil
}

// GoKey derives the go format's key from a key's name and secrets.
func GoKey(name, aes, hmac []byte) ([]byte, error) {
	secret := make([]byte, 0, len(aes)+len(hmac))
	secret = append(append(secret, aes...), hmac...)
	defer clear(secret)
	return hkdf.Key(sha256.New, secret, name, GoKeyInfo, GoKeySize)
}

// Split returns the parts of an OpenSSL-format ticket_key (nginx, haproxy,
// envoy) of keySize bytes: the name and the AES and HMAC secrets, as slices
// of material (not copies). It never reads a go-format key, which cannot be
// split.
func Split(format string, keySize int, material []byte) (name, aes, hmac []byte, err error) {
	if format == FormatGo {
		return nil, nil, nil, fmt.Errorf("format %q: a derived key has no parts", format)
	}
	if err := CheckFormat(format, keySize); err != nil {
		return nil, nil, nil, err
	}
	if !ValidKeySize(keySize) {
		return nil, nil, nil, fmt.Errorf("key_size: must be 48 or 80, got %d", keySize)
	}
	if len(material) != keySize {
		return nil, nil, nil, fmt.Errorf("must decode to key_size (%d) bytes, got %d", keySize, len(material))
	}
	n := SecretSize(keySize)
	name, first, second := material[:NameSize:NameSize], material[NameSize:NameSize+n:NameSize+n], material[NameSize+n:]
	if aesFirst(format, keySize) {
		return name, first, second, nil
	}
	return name, second, first, nil
}

// aesFirst reports whether format's layout puts the AES secret before the
// HMAC secret: haproxy always, nginx for 48-byte keys.
func aesFirst(format string, keySize int) bool {
	return format == FormatHAProxy || (format == FormatNginx && keySize == 48)
}
