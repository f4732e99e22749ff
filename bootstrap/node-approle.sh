#!/usr/bin/env bash
# node-approle.sh: create the AppRole a node's Vault Agent logs in with to read
# one keyring, and write its role_id and secret_id files for the Agent's
# auto_auth "approle" method.
#
# Usage: bootstrap/node-approle.sh KEYRING NODE OUTDIR [MOUNT]
#
# - writes the reader policy of KEYRING (bootstrap/reader-policy.sh);
# - enables the approle auth method at auth/approle if it is not enabled;
# - writes policy "ticketkeys-token-self" (policies/ticketkeys-token-self.hcl:
#   look up, renew and revoke the token itself);
# - writes role "ticketkeys-NODE" whose tokens carry that policy, this
#   keyring's reader policy and the policies the role already had, so running
#   it again for a second keyring on the same node adds that keyring instead
#   of replacing the first (token_ttl 1h, token_max_ttl 24h: Agent renews and
#   logs in again by itself); the script adds no other policies, and keeps
#   those an operator added;
# - the role's tokens do not carry Vault's `default` policy
#   (token_no_default_policy=true): a node needs none of it beyond
#   ticketkeys-token-self, and Vault re-parses `default`'s templated paths on
#   every request, about a third of the Vault CPU of a keyring read. An
#   operator who wants it back sets token_no_default_policy=false on the role
#   after each run;
# - creates OUTDIR (mode 0700) when it does not exist, then writes
#   OUTDIR/role-id and OUTDIR/secret-id (mode 0600) and prints the role name.
# Needs VAULT_ADDR and a VAULT_TOKEN allowed to manage policies, auth methods
# and AppRole roles. The Vault CLI is $VAULT (default: vault). The secret_id
# is never printed.
set -euo pipefail

VAULT=${VAULT:-vault}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "node-approle.sh: $*" >&2; exit 1; }

[[ $# -ge 3 && $# -le 4 ]] || die "usage: node-approle.sh KEYRING NODE OUTDIR [MOUNT]"
keyring=$1 node=$2 outdir=$3 mount=${4:-ticketkeys}
[[ $node =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || die "NODE '$node': want 1-64 characters of A-Z a-z 0-9 _ - . starting with a letter or digit"
if [[ ! -e $outdir ]]; then
	mkdir -p -m 0700 "$outdir" || die "cannot create OUTDIR '$outdir'"
fi
[[ -d $outdir ]] || die "OUTDIR '$outdir' is not a directory"

policy=$("$here/reader-policy.sh" "$keyring" "$mount")
self_policy=ticketkeys-token-self
"$VAULT" policy write "$self_policy" "$here/policies/$self_policy.hcl" >/dev/null

# Read the list whole first: `| grep -q` would close the pipe early and, under
# pipefail, turn the CLI's SIGPIPE into "not enabled".
auth_methods=$("$VAULT" auth list -format=json)
if [[ $auth_methods != *'"approle/"'* ]]; then
	"$VAULT" auth enable approle >/dev/null
fi
role=ticketkeys-$node

# The policies the role carries today ("[a b]" from the CLI; empty when the
# role does not exist yet), plus this keyring's, each once.
# A failed read of an existing role stops the script: writing the role
# without its current policies would cut the node off its other keyrings.
policies=$policy,$self_policy
# `vault list` exits 2 when there is no role yet: "{}" with -format=json
# (1.21), "No value found ..." in other versions.
if ! roles=$("$VAULT" list -format=json auth/approle/role 2>&1); then
	[[ $roles == "{}" || $roles == *"No value found"* ]] || die "cannot list AppRole roles: $roles"
	roles=
fi
if [[ $roles == *"\"$role\""* ]]; then
	existing=$("$VAULT" read -field=token_policies "auth/approle/role/$role") ||
		die "cannot read the policies of role $role; not changing it"
	existing=${existing#[}
	existing=${existing%]}
	for p in $existing; do
		[[ ,$policies, == *,"$p",* ]] || policies=$policies,$p
	done
fi
"$VAULT" write -f "auth/approle/role/$role" token_policies="$policies" token_no_default_policy=true \
	token_ttl=1h token_max_ttl=24h >/dev/null

umask 077
"$VAULT" read -field=role_id "auth/approle/role/$role/role-id" >"$outdir/role-id.tmp"
"$VAULT" write -f -field=secret_id "auth/approle/role/$role/secret-id" >"$outdir/secret-id.tmp"
mv -f "$outdir/role-id.tmp" "$outdir/role-id"
mv -f "$outdir/secret-id.tmp" "$outdir/secret-id"
echo "$role"
