package ticketkeys

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
)

// Limits of the settings. Periods below a minute are meant for tests and
// demonstrations; production keyrings rotate hourly or daily.
const (
	minRotationPeriod = 5 * time.Second
	maxRotationPeriod = 24 * time.Hour
	maxRetain         = 7 * 24 * time.Hour
	minMaxKeyLifetime = time.Minute
	minMaxReadTTL     = 5 * time.Second
	maxMaxReadTTL     = 24 * time.Hour
	maxMaxKeyLifetime = 7 * 24 * time.Hour

	defaultRotationPeriod = time.Hour
	defaultRetain         = 12 * time.Hour
	defaultKeySize        = 80
	defaultMaxKeyLifetime = 7 * 24 * time.Hour // RFC 8446 §4.6.1 ticket lifetime cap
	// defaultMaxReadTTL bounds how long a purged key stays in use by readers.
	defaultMaxReadTTL = 5 * time.Minute
)

// keyringNameRule is the rule names must follow, spelled as users see it.
const keyringNameRule = "1 to 128 characters of A-Z a-z 0-9 _ - ., starting with a letter or digit"

var keyringNameRegexp = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// validateName checks a keyring name.
func validateName(name string) error {
	if !keyringNameRegexp.MatchString(name) {
		return fmt.Errorf("name must be %s; got %q", keyringNameRule, name)
	}
	return nil
}

// durationField reads a duration field given in seconds or as a duration
// string, and checks it against [min, max]. ok is false when the field was
// not given.
func durationField(d *framework.FieldData, field string, min, max time.Duration) (v time.Duration, ok bool, err error) {
	raw, ok, err := d.GetOkErr(field)
	if err != nil {
		given := d.Raw[field]
		return 0, true, fmt.Errorf("%s must be a duration such as \"90s\" or \"1h\", or a number of seconds; got %q", field, fmt.Sprint(given))
	}
	if !ok {
		return 0, false, nil
	}
	v = time.Duration(raw.(int)) * time.Second
	if err := checkRange(field, v, min, max); err != nil {
		return 0, true, err
	}
	return v, true, nil
}

// checkRange reports a duration outside [min, max] naming the field, the rule and the value.
func checkRange(field string, v, min, max time.Duration) error {
	if v < min || v > max {
		return fmt.Errorf("%s must be between %s and %s; got %s", field, fmtDuration(min), fmtDuration(max), fmtDuration(v))
	}
	return nil
}

// fmtDuration prints a duration the way operators write it: 1h, 90s, 1h30m.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// checkLifetime enforces the mount's cap on how long a key stays decryptable
// after it activates.
func checkLifetime(s keyringSettings, maxLifetime time.Duration) error {
	if life := s.RotationPeriod + s.Retain; life > maxLifetime {
		return fmt.Errorf("rotation_period + retain must not exceed max_key_lifetime (%s, see ticketkeys/config); got %s + %s = %s",
			fmtDuration(maxLifetime), fmtDuration(s.RotationPeriod), fmtDuration(s.Retain), fmtDuration(life))
	}
	return nil
}
