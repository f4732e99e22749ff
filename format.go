package ticketkeys

import (
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/schedule"
)

// Server formats a window can be read in. Each renders the same secret of a
// key id in the byte layout that server expects (see docs/api.md); the
// layouts are the schedule package's, which every reader uses too.
const (
	formatNginx   = schedule.FormatNginx
	formatHAProxy = schedule.FormatHAProxy
	formatEnvoy   = schedule.FormatEnvoy
	formatGo      = schedule.FormatGo
)

var formats = schedule.Formats

// goKeyInfo is the HKDF label of the Go format (schedule.GoKeyInfo).
const goKeyInfo = schedule.GoKeyInfo

// validateFormat checks a requested format against a keyring's key size.
func validateFormat(format string, keySize int) error {
	return schedule.CheckFormat(format, keySize)
}

// material renders the key in a server's byte layout (schedule.Render):
//
//	nginx 80, envoy: name[16] hmac[32] aes[32]
//	nginx 48:        name[16] aes[16] hmac[16]
//	haproxy:         name[16] aes[n] hmac[n]
//	go:              HKDF-SHA256(aes||hmac, salt=name, info=goKeyInfo), 32 bytes
func (k *ticketKey) material(format string) ([]byte, error) {
	return schedule.Render(format, k.Name, k.AES, k.HMAC)
}
