package ticketkeys

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathKeyHistory() *framework.Path {
	return &framework.Path{
		Pattern: "keys/" + namePattern + "/history$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "read",
			OperationSuffix: "keyring-history",
		},
		Fields: map[string]*framework.FieldSchema{"name": keyringNameField},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{Callback: b.pathKeyHistoryRead},
		},
		HelpSynopsis:    pathKeyHistoryHelpSyn,
		HelpDescription: pathKeyHistoryHelpDesc,
	}
}

func (b *backend) pathKeyHistoryRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	kr, err := b.readKeyring(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	now := b.clock().UTC()
	destroyed := make([]map[string]interface{}, 0, len(kr.Destroyed))
	for i := len(kr.Destroyed) - 1; i >= 0; i-- {
		k := kr.Destroyed[i]
		destroyed = append(destroyed, map[string]interface{}{
			"id":           k.ID,
			"not_before":   k.NotBefore.Format(time.RFC3339),
			"not_after":    k.NotAfter.Format(time.RFC3339),
			"destroyed_at": k.DestroyedAt.Format(time.RFC3339),
			"reason":       k.Reason,
		})
	}
	data := scheduleData(kr, now)
	data["destroyed"] = destroyed
	data["created_at"] = kr.CreatedAt.Format(time.RFC3339)
	return &logical.Response{Data: data}, nil
}

const pathKeyHistoryHelpSyn = `Read a keyring's schedule and destroyed-key history, without key material.`

const pathKeyHistoryHelpDesc = `
Returns the readable keys (id, state, not_before, not_after) and the metadata
of the most recently destroyed keys, newest first (id, not_before, not_after,
destroyed_at, and reason: expired, purged or discarded). It never returns key
material, so it can be granted to auditors.
`
