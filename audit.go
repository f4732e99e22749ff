package ticketkeys

// AuditNonHMACResponseKeys are the response fields of this engine that never
// carry key material: key ids (the key name, which travels in clear in every
// ticket), states, times, reasons and names. Audit devices HMAC every string
// of a response unless its field is listed in the mount's
// audit_non_hmac_response_keys; listing these lets an auditor see which key
// ids a client read and when they were valid, and spares Vault about 60
// HMACs per 14-key window read. ticket_key and tls_ticket_keys, the only
// fields with material, are never listed and stay hashed.
//
// bootstrap/register.sh tunes a mount with exactly this list (a test keeps
// the two equal).
//
// The engine cannot check the mount's list itself: Vault gives a plugin no
// view of its mount's tuning (logical.SystemView and logical.Request carry
// no audit settings), so bootstrap/register.sh is where a list naming
// KeyMaterialResponseKeys is refused.
var AuditNonHMACResponseKeys = []string{
	"id", "state", "publish_at", "not_before", "encrypt_until", "not_after",
	"destroyed_at", "reason", "name", "format", "mode",
}

// KeyMaterialResponseKeys are the response fields that carry key material:
// ticket_key (each key's material), tls_ticket_keys (HAProxy's lines) and
// keys (the list that holds every ticket_key: an audit device leaves a listed
// field's whole value unhashed). None may ever be in a mount's
// audit_non_hmac_response_keys; bootstrap/register.sh refuses a mount that
// lists one.
var KeyMaterialResponseKeys = []string{keyMaterialField, haproxyLinesField, "keys"}
