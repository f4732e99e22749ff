package ticketkeys

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// bootstrap/register.sh tunes mounts with the same non-HMAC field list as
// the engine declares, and the list never names a field with key material.
func TestAuditNonHMACResponseKeys(t *testing.T) {
	script, err := os.ReadFile("bootstrap/register.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^non_hmac_keys=\(([^)]*)\)`).FindSubmatch(script)
	if m == nil {
		t.Fatal("bootstrap/register.sh has no non_hmac_keys=(...) line")
	}
	if got := strings.Fields(string(m[1])); !slices.Equal(got, AuditNonHMACResponseKeys) {
		t.Errorf("register.sh non_hmac_keys %q, engine AuditNonHMACResponseKeys %q: keep them equal", got, AuditNonHMACResponseKeys)
	}
	m = regexp.MustCompile(`(?m)^material_keys=\(([^)]*)\)`).FindSubmatch(script)
	if m == nil {
		t.Fatal("bootstrap/register.sh has no material_keys=(...) line")
	}
	if got := strings.Fields(string(m[1])); !slices.Equal(got, KeyMaterialResponseKeys) {
		t.Errorf("register.sh material_keys %q, engine KeyMaterialResponseKeys %q: keep them equal", got, KeyMaterialResponseKeys)
	}
	for _, secret := range append([]string{"aes", "hmac"}, KeyMaterialResponseKeys...) {
		if slices.Contains(AuditNonHMACResponseKeys, secret) {
			t.Errorf("AuditNonHMACResponseKeys lists %q, which carries key material", secret)
		}
	}
}
