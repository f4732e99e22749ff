package ticketkeys

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathKeyRotate() *framework.Path {
	return &framework.Path{
		Pattern: "keys/" + namePattern + "/rotate$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "rotate",
			OperationSuffix: "keyring",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": keyringNameField,
			"mode": {
				Type:          framework.TypeString,
				Default:       rotateScheduled,
				AllowedValues: []interface{}{rotateScheduled, rotateNow},
				Description: "scheduled (default): the new key is readable at once and activates after publish_ahead, so no node misses it. " +
					"now: the new key encrypts at once; pending next keys are discarded and the schedule restarts from it.",
			},
			"purge_previous": {
				Type:        framework.TypeBool,
				Default:     false,
				Description: "Destroy every key that no longer encrypts (with mode=now including the key that was current): all tickets made with them stop resuming. For a compromised key.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{Callback: b.pathKeyRotateWrite},
		},
		HelpSynopsis:    pathKeyRotateHelpSyn,
		HelpDescription: pathKeyRotateHelpDesc,
	}
}

func (b *backend) pathKeyRotateWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	mode := d.Get("mode").(string)
	if mode != rotateScheduled && mode != rotateNow {
		return logical.ErrorResponse("mode must be %q or %q; got %q", rotateScheduled, rotateNow, mode), nil
	}
	// The framework has already rejected a purge_previous that is not a bool,
	// naming the field and the value.
	purge := d.Get("purge_previous").(bool)

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
	if kr == nil {
		return nil, errKeyringNotFound(name)
	}
	now := b.clock().UTC()
	nk, err := kr.rotate(mode, purge, now, b.random, cfg.MaxKeyLifetime)
	if err != nil {
		return nil, err
	}
	// mode=now purge_previous=true leaves the new key and its schedule only,
	// no more keys than a new keyring with these (accepted) settings: it is
	// always accepted, so an emergency rotation is never refused.
	emergency := mode == rotateNow && purge
	if n := kr.peakKeys(now); n > maxKeysPerKeyring && !emergency {
		return logical.ErrorResponse("rotating keyring %q with mode=%s purge_previous=%t would make it hold up to %d keys, over the cap of %d: every rotation adds a key and the current key and the keys it replaces keep decrypting until their not_after; rotate with mode=now purge_previous=true (always accepted: it destroys every older key), or wait until older keys expire",
			name, mode, purge, n, maxKeysPerKeyring), nil
	}
	kr.UpdatedAt = now
	if err := l.store(ctx, req.Storage, kr); err != nil {
		return nil, err
	}
	b.Logger().Info("keyring rotated", "keyring", name, "mode", mode, "purge_previous", purge,
		"activates", nk.NotBefore.Format(time.RFC3339))

	data := scheduleData(kr, now)
	data["rotated_key_id"] = nk.ID()
	data["rotated_key_not_before"] = nk.NotBefore.Format(time.RFC3339)
	return &logical.Response{Data: data}, nil
}

const pathKeyRotateHelpSyn = `Add a new key to a keyring now.`

const pathKeyRotateHelpDesc = `
mode=scheduled (default) publishes a new key at once as decrypt-only and
activates it publish_ahead later, so every node holds it before any node
encrypts with it; later keys follow it every rotation_period.

mode=now makes the new key encrypt at once. Next keys published before are
discarded and the schedule restarts from the new key. Nodes that have not
re-read the window cannot decrypt tickets made with the new key until they do.

purge_previous=true destroys every key that no longer encrypts at once (with
mode=now this includes the key that was current until now): every outstanding
ticket made with those keys stops resuming, on purpose. Use it after a key is
compromised, together with mode=now.

The response describes the new schedule without key material.
`
