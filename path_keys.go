package ticketkeys

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// keyMaterialField is the response field that carries key material. It is a
// string, so audit devices HMAC it, and it has a distinctive name, so that an
// operator un-hashing a generic field name (audit_non_hmac_response_keys)
// cannot expose keys by accident.
const keyMaterialField = "ticket_key"

// haproxyLinesField carries the three lines of HAProxy's tls-ticket-keys file.
const haproxyLinesField = "tls_ticket_keys"

// namePattern matches one path segment; names are validated in the handlers
// so that a bad name gets a 400 that explains the rule instead of a 404.
const namePattern = `(?P<name>[^/]+)`

var keyringNameField = &framework.FieldSchema{
	Type:        framework.TypeString,
	Description: "Name of the keyring: " + keyringNameRule + ".",
	Required:    true,
}

func (b *backend) pathKeysList() *framework.Path {
	return &framework.Path{
		Pattern:      "keys/?$",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationSuffix: "keyrings"},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ListOperation: &framework.PathOperation{Callback: b.pathKeysListNames},
		},
		HelpSynopsis:    pathKeysListHelpSyn,
		HelpDescription: pathKeysListHelpDesc,
	}
}

func (b *backend) pathKeys() *framework.Path {
	return &framework.Path{
		Pattern: "keys/" + namePattern + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "keyring",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": keyringNameField,
			"rotation_period": {
				Type:        framework.TypeDurationSecond,
				Default:     int(defaultRotationPeriod.Seconds()),
				Description: "How long each key encrypts before the next one takes over. Default 1h; 5s to 24h.",
			},
			"retain": {
				Type:        framework.TypeDurationSecond,
				Default:     int(defaultRetain.Seconds()),
				Description: "How long a key keeps decrypting after it stops encrypting. Default 12h; 0 to 168h. rotation_period + retain must not exceed the mount's max_key_lifetime.",
			},
			"publish_ahead": {
				Type:        framework.TypeDurationSecond,
				Description: "How long before activation the next key is readable, as decrypt-only. Defaults to rotation_period and follows it while unset; 0 makes it follow rotation_period again. Otherwise up to rotation_period, and more than the reader lag (about 7s to 37s, see docs/api.md).",
			},
			"key_size": {
				Type:          framework.TypeInt,
				Default:       defaultKeySize,
				AllowedValues: []interface{}{48, 80},
				Description:   "Key size in bytes as nginx and HAProxy count it: 80 (AES-256, HMAC-SHA256 with 32-byte keys) or 48 (AES-128). Fixed at creation. Default 80; Envoy needs 80.",
			},
		},
		ExistenceCheck: b.keyringExists,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.CreateOperation: &framework.PathOperation{
				Callback:     b.pathKeysWrite,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "create"},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:     b.pathKeysWrite,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "update"},
			},
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathKeysRead,
				Summary:      "Read the window of a keyring.",
				Description:  "Query parameter format: the byte layout of the returned keys, nginx (default), haproxy, envoy or go. It is a read parameter only: writes refuse it.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
				Responses: map[int][]framework.Response{
					http.StatusOK: {{Description: "OK", Fields: windowResponseFields}},
				},
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:     b.pathKeysDelete,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "delete"},
			},
		},
		HelpSynopsis:    pathKeysHelpSyn,
		HelpDescription: pathKeysHelpDesc,
	}
}

// windowResponseFields documents the read response (for OpenAPI and the UI).
var windowResponseFields = map[string]*framework.FieldSchema{
	"name":            {Type: framework.TypeString, Description: "Keyring name."},
	"format":          {Type: framework.TypeString, Description: "Format of the key material."},
	"key_size":        {Type: framework.TypeInt, Description: "48 or 80."},
	"rotation_period": {Type: framework.TypeInt, Description: "Seconds each key encrypts."},
	"retain":          {Type: framework.TypeInt, Description: "Seconds a key keeps decrypting after it stops encrypting."},
	"publish_ahead":   {Type: framework.TypeInt, Description: "Seconds before activation a key is readable."},
	"ttl":             {Type: framework.TypeInt, Description: "Seconds until the window changes next (with a small jitter after the change), at most the mount's max_read_ttl and publish_ahead minus the reader delay and 1s; >= 1."},
	"keys": {
		Type: framework.TypeSlice,
		Description: "Readable keys: current first, then next by activation, then previous newest first. Each has id (hex key name), state, " +
			"not_before, encrypt_until (when it stops encrypting: its successor's not_before), not_after (RFC 3339) and " + keyMaterialField + " (base64 key material in the requested format).",
		DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
	},
	haproxyLinesField: {
		Type:         framework.TypeStringSlice,
		Description:  "haproxy format only: the three lines of a tls-ticket-keys file, previous, current, next.",
		DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
	},
}

func (b *backend) keyringExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName(name) != nil {
		return false, nil // the handler reports the bad name
	}
	l := b.rlockKeyring(name)
	defer l.unlock()
	kr, err := l.load(ctx, req.Storage)
	return kr != nil, err
}

func (b *backend) pathKeysListNames(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, keyringStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing keyrings: %w", err)
	}
	return logical.ListResponse(names), nil
}

// errKeyringNotFound is the 404 for an unknown keyring.
func errKeyringNotFound(name string) error {
	return logical.CodedError(http.StatusNotFound, fmt.Sprintf("keyring %q does not exist; create it with a write to keys/%s", name, name))
}

func (b *backend) pathKeysWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if _, ok := d.Raw["format"]; ok {
		return logical.ErrorResponse("format is a read parameter (keys/%s?format=...); it cannot be written", name), nil
	}

	b.configLock.RLock()
	defer b.configLock.RUnlock()
	l := b.lockKeyring(name)
	defer l.unlock()

	cfg, err := loadConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	kr, err := l.loadForUpdate(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	now := b.clock().UTC()
	creating := kr == nil
	if creating && req.Operation == logical.UpdateOperation {
		return nil, errKeyringNotFound(name) // deleted between existence check and update
	}

	settings := keyringSettings{
		RotationPeriod: defaultRotationPeriod,
		Retain:         defaultRetain,
		KeySize:        defaultKeySize,
	}
	publishAheadSet := false
	if !creating {
		settings = kr.Settings
		publishAheadSet = kr.PublishAheadSet
	}
	followsPeriod := !publishAheadSet

	if v, ok, err := durationField(d, "rotation_period", minRotationPeriod, maxRotationPeriod); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	} else if ok {
		settings.RotationPeriod = v
	}
	if v, ok, err := durationField(d, "retain", 0, maxRetain); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	} else if ok {
		settings.Retain = v
	}
	if v, ok, err := durationField(d, "publish_ahead", 0, maxRotationPeriod); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	} else if ok && v == 0 { // follow rotation_period again
		publishAheadSet = false
		followsPeriod = true
	} else if ok {
		settings.PublishAhead = v
		publishAheadSet = true
		followsPeriod = false
	}
	if followsPeriod {
		settings.PublishAhead = settings.RotationPeriod
	}
	if settings.PublishAhead > settings.RotationPeriod {
		return logical.ErrorResponse("publish_ahead must not exceed rotation_period (%s); got %s",
			fmtDuration(settings.RotationPeriod), fmtDuration(settings.PublishAhead)), nil
	}
	if err := checkPublishAhead(settings); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if raw, ok, err := d.GetOkErr("key_size"); err != nil {
		return logical.ErrorResponse("key_size must be 48 or 80; got %q", fmt.Sprint(d.Raw["key_size"])), nil
	} else if ok {
		size := raw.(int)
		if size != 48 && size != 80 {
			return logical.ErrorResponse("key_size must be 48 or 80; got %d", size), nil
		}
		if !creating && size != kr.Settings.KeySize {
			return logical.ErrorResponse("key_size cannot change after creation (a window never mixes sizes): keyring %q has %d, got %d; create a new keyring instead",
				name, kr.Settings.KeySize, size), nil
		}
		settings.KeySize = size
	}
	if err := checkLifetime(settings, cfg.MaxKeyLifetime); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}

	if !creating && settings == kr.Settings && publishAheadSet == kr.PublishAheadSet {
		return &logical.Response{Data: scheduleData(kr, now)}, nil // nothing changes: nothing is written
	}
	if creating {
		kr = &keyring{Name: name, Settings: settings, CreatedAt: now}
		if _, err := kr.maintain(now, b.random); err != nil {
			return nil, err
		}
	} else if settings != kr.Settings {
		if err := kr.applySettings(settings, now, b.random); err != nil {
			return nil, err
		}
	}
	if err := kr.checkKeyCount(now); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	kr.PublishAheadSet = publishAheadSet
	kr.UpdatedAt = now
	if err := l.store(ctx, req.Storage, kr); err != nil {
		return nil, err
	}
	if creating {
		b.Logger().Info("keyring created", "keyring", name, "rotation_period", settings.RotationPeriod.String())
	} else {
		b.Logger().Info("keyring updated", "keyring", name, "rotation_period", settings.RotationPeriod.String())
	}
	return &logical.Response{Data: scheduleData(kr, now)}, nil
}

func (b *backend) pathKeysRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	format := formatNginx
	if f, ok := ctx.Value(readFormatKey{}).(string); ok {
		format = f
	}

	kr, err := b.readKeyring(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if err := validateFormat(format, kr.Settings.KeySize); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	now := b.clock().UTC()
	data, warnings, err := kr.renderWindow(format, now)
	if err != nil {
		return nil, err
	}
	cfg, err := b.config(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	data["ttl"] = ttlSeconds(kr, now, cfg.readTTLCap(), b.jitter)
	return &logical.Response{Data: data, Warnings: warnings}, nil
}

// readKeyring loads a keyring for reading. A schedule that has fallen behind
// (Vault sealed or its periodic function skipped for longer than the
// generated margin) is repaired here with a write; on a node that cannot
// write, the error is logical.ErrReadOnly so that Vault forwards the request
// to the active node.
func (b *backend) readKeyring(ctx context.Context, s logical.Storage, name string) (*keyring, error) {
	l := b.rlockKeyring(name)
	kr, err := l.load(ctx, s)
	l.unlock()
	if err != nil {
		return nil, err
	}
	if kr == nil {
		return nil, errKeyringNotFound(name)
	}
	cfg, err := b.config(ctx, s)
	if err != nil {
		return nil, err
	}
	// A lower max_key_lifetime applies to the next read even when the config
	// write stopped before it shortened this keyring (a timeout after the
	// config was stored): no key is served past the cap.
	if !kr.needsMaintenance(b.clock()) && !kr.overLifetime(cfg.MaxKeyLifetime) {
		return kr, nil
	}
	// Never attempt a write where storage cannot be written (a performance
	// standby, a replica): no lock taken, no key drawn, the cache kept.
	if !b.WriteSafeReplicationState() {
		b.logBehindOnce(name)
		return nil, logical.ErrReadOnly
	}
	if cfg, err = loadConfig(ctx, s); err != nil {
		return nil, err
	}
	if err := b.maintainKeyring(ctx, s, name, cfg.MaxKeyLifetime); err != nil {
		if isReadOnly(err) {
			b.logBehindOnce(name)
			return nil, logical.ErrReadOnly
		}
		return nil, err
	}
	l = b.rlockKeyring(name)
	defer l.unlock()
	kr, err = l.load(ctx, s)
	if err != nil {
		return nil, err
	}
	if kr == nil {
		return nil, errKeyringNotFound(name)
	}
	return kr, nil
}

// readFormatKey carries the format query parameter of a keyring read from
// HandleRequest to pathKeysRead.
type readFormatKey struct{}

// keyringReadPath matches a read of one keyring's window.
var keyringReadPath = regexp.MustCompile(`^keys/[^/]+$`)

// HandleRequest takes the format query parameter off a keyring read before
// the framework sees it, so that format is a read parameter only: the SDK
// has one field set per path, and its OpenAPI lists query fields in the
// write body too. Every other request goes to the framework unchanged.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if req.Operation == logical.ReadOperation && keyringReadPath.MatchString(req.Path) {
		if raw, ok := req.Data["format"]; ok {
			format, isString := raw.(string)
			if !isString {
				return logical.ErrorResponse("format must be given once, as one of %s; got %v", strings.Join(formats, ", "), raw), nil
			}
			data := maps.Clone(req.Data)
			delete(data, "format")
			req.Data = data
			ctx = context.WithValue(ctx, readFormatKey{}, format)
		}
	}
	return b.Backend.HandleRequest(ctx, req)
}

// windowData renders the readable window at now in a format.
func windowData(kr *keyring, format string, now time.Time) (map[string]interface{}, []string, error) {
	window := kr.window(now)
	keys := make([]map[string]interface{}, 0, len(window))
	encoded := make(map[string]string, len(window))
	for _, k := range window {
		m, err := k.material(format)
		if err != nil {
			return nil, nil, fmt.Errorf("rendering keyring %q in format %s: %w", kr.Name, format, err)
		}
		enc := base64.StdEncoding.EncodeToString(m)
		clear(m)
		encoded[k.ID()] = enc
		fields := keyFields(k)
		fields[keyMaterialField] = enc
		keys = append(keys, fields)
	}
	data := settingsData(kr)
	data["format"] = format
	data["keys"] = keys

	var warnings []string
	if format == formatHAProxy {
		lines, w := haproxyLines(window, encoded)
		data[haproxyLinesField] = lines
		warnings = append(warnings, w...)
	}
	return data, warnings, nil
}

// haproxyLines orders the window for HAProxy's ring of three: previous,
// current, next (HAProxy encrypts with the penultimate line and keeps the last
// as decrypt-only). A missing previous or next is stood in by the current key.
func haproxyLines(window []windowKey, encoded map[string]string) ([]string, []string) {
	var cur, next, prev string
	for _, k := range window {
		switch {
		case k.State == stateCurrent && cur == "":
			cur = encoded[k.ID()]
		case k.State == stateNext && next == "":
			next = encoded[k.ID()]
		case k.State == statePrevious && prev == "":
			prev = encoded[k.ID()]
		}
	}
	var warnings []string
	if prev == "" {
		prev = cur
	}
	if next == "" {
		next = cur
		warnings = append(warnings, "no next key is published yet (publish_ahead is shorter than rotation_period); the current key stands in for it in tls_ticket_keys, so HAProxy's ring holds no pre-published key: set publish_ahead equal to rotation_period for HAProxy")
	}
	return []string{prev, cur, next}, warnings
}

// settingsData is the part of every keyring response that describes its settings.
func settingsData(kr *keyring) map[string]interface{} {
	return map[string]interface{}{
		"name":            kr.Name,
		"key_size":        kr.Settings.KeySize,
		"rotation_period": int64(kr.Settings.RotationPeriod.Seconds()),
		"retain":          int64(kr.Settings.Retain.Seconds()),
		"publish_ahead":   int64(kr.Settings.PublishAhead.Seconds()),
	}
}

// scheduleData describes settings and the readable keys without material.
func scheduleData(kr *keyring, now time.Time) map[string]interface{} {
	data := settingsData(kr)
	data["keys"] = keyMetadata(kr.window(now))
	return data
}

// keyMetadata lists ids, states and times of keys, never material.
func keyMetadata(window []windowKey) []map[string]interface{} {
	keys := make([]map[string]interface{}, 0, len(window))
	for _, k := range window {
		keys = append(keys, keyFields(k))
	}
	return keys
}

// keyFields describes one key of a window: id, state and times, never
// material. encrypt_until is the stored time the key stops encrypting (a
// rotation may have brought it forward), so readers need not derive it from
// rotation_period.
func keyFields(k windowKey) map[string]interface{} {
	return map[string]interface{}{
		"id":            k.ID(),
		"state":         k.State,
		"publish_at":    k.PublishAt.Format(time.RFC3339),
		"not_before":    k.NotBefore.Format(time.RFC3339),
		"encrypt_until": k.EncryptUntil.Format(time.RFC3339),
		"not_after":     k.NotAfter.Format(time.RFC3339),
	}
}

func (b *backend) pathKeysDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	l := b.lockKeyring(name)
	defer l.unlock()
	if err := l.delete(ctx, req.Storage); err != nil {
		return nil, err
	}
	b.Logger().Info("keyring deleted", "keyring", name)
	return nil, nil
}

const pathKeysListHelpSyn = `List the keyrings.`

const pathKeysListHelpDesc = `Returns the names of every keyring of this mount.`

const pathKeysHelpSyn = `Create, configure, read or delete a keyring of session-ticket keys.`

const pathKeysHelpDesc = `
A keyring is a schedule of TLS session-ticket keys. Each key is readable as
"next" (decrypt-only) publish_ahead before it activates, encrypts as
"current" for rotation_period, then keeps decrypting as "previous" for
retain, and is destroyed at its not_after.

Write rotation_period, retain, publish_ahead and key_size to create or change
a keyring. A new keyring has a current key at once and, with the default
publish_ahead, a published next key. Changing settings never moves a key
that is already readable: new settings apply from the first key that is not.
publish_ahead=0 makes publish_ahead follow rotation_period again. Settings
are refused when publish_ahead is not longer than the lag of a reader
following ttl, or when the keyring could hold more than 256 keys.

Read returns the window in the byte layout of one server kind with ?format=:
nginx (default), haproxy, envoy or go, as base64 in each key's ticket_key
field, current first, then next, then previous. ttl is the number of seconds
until the window changes next, so Vault Agent re-renders right after each
change, and never more than the mount's max_read_ttl (default 5m), so every
reader drops keys purged by an emergency rotation within it, nor more than
publish_ahead minus the reader delay and 1s, so every reader holds each key
before it activates, including keys of a scheduled rotation. The haproxy format adds tls_ticket_keys, the three lines of a
tls-ticket-keys file (previous, current, next).

Delete destroys the keyring and all its keys at once.
`
