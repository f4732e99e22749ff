package ticketkeys

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
)

// Server formats a window can be read in. Each renders the same secret of a
// key id in the byte layout that server expects (see docs/api.md).
const (
	formatNginx   = "nginx"
	formatHAProxy = "haproxy"
	formatEnvoy   = "envoy"
	formatGo      = "go"
)

var formats = []string{formatNginx, formatHAProxy, formatEnvoy, formatGo}

// goKeyInfo is the HKDF label of the Go format. Go's crypto/tls uses its own
// ticket construction (AES-CTR + HMAC-SHA256 keyed from a 32-byte seed), so it
// gets its own derived key instead of reusing bytes another algorithm uses.
const goKeyInfo = "ticketkeys go session ticket key v1"

// goKeyLen is the size of a key for tls.Config.SetSessionTicketKeys.
const goKeyLen = 32

// validateFormat checks a requested format against a keyring's key size.
func validateFormat(format string, keySize int) error {
	if !slices.Contains(formats, format) {
		return fmt.Errorf("format must be one of %s; got %q", strings.Join(formats, ", "), format)
	}
	if format == formatEnvoy && keySize != 80 {
		return fmt.Errorf("format %q needs 80-byte keys (Envoy accepts only 80); this keyring has key_size %d", format, keySize)
	}
	return nil
}

// material renders the key in a server's byte layout:
//
//	nginx 80, envoy: name[16] hmac[32] aes[32]
//	nginx 48:        name[16] aes[16] hmac[16]
//	haproxy:         name[16] aes[n] hmac[n]
//	go:              HKDF-SHA256(aes||hmac, salt=name, info=goKeyInfo), 32 bytes
func (k *ticketKey) material(format string) ([]byte, error) {
	out := make([]byte, 0, len(k.Name)+len(k.AES)+len(k.HMAC))
	switch {
	case format == formatGo:
		secret := append(append([]byte(nil), k.AES...), k.HMAC...)
		defer clear(secret)
		return hkdf.Key(sha256.New, secret, k.Name, goKeyInfo, goKeyLen)
	case format == formatHAProxy, format == formatNginx && len(k.AES) == 16:
		out = append(append(append(out, k.Name...), k.AES...), k.HMAC...)
	case format == formatNginx, format == formatEnvoy:
		out = append(append(append(out, k.Name...), k.HMAC...), k.AES...)
	default:
		return nil, fmt.Errorf("unknown format %q", format)
	}
	return out, nil
}
