#!/usr/bin/env bash
# node-approle.sh: create the AppRole a node's Vault Agent logs in with to read
# one keyring, and write its role_id and secret_id files for the Agent's
# auto_auth "approle" method.
#
# Usage: bootstrap/node-approle.sh [-t TTL] [-n USES] [-c CIDRS] [-w WRAP_TTL] KEYRING NODE OUTDIR [MOUNT]
#
#   -t TTL       secret_id_ttl: how long a secret-id stays valid (default 720h,
#                30 days; re-run the script before it ends). Vault Agent logs in
#                again with it at every start and every token_max_ttl (24h).
#   -n USES      secret_id_num_uses: logins per secret-id (default 0, no count:
#                Agent logs in again at every start and every 24h, so a count
#                would cut a healthy node off; the TTL bounds it instead).
#   -c CIDRS     comma-separated CIDR blocks the node logs in from and uses its
#                tokens from (secret_id_bound_cidrs and token_bound_cidrs), for
#                example 10.0.3.17/32. Without it the role keeps the blocks an
#                earlier run set; a role with none works from any address, and
#                the script says so.
#   -w WRAP_TTL  response-wrapped delivery: OUTDIR/secret-id holds a wrapping
#                token (single use, valid WRAP_TTL, e.g. 10m) instead of the
#                secret-id; Vault Agent unwraps it with
#                secret_id_response_wrapping_path = "auth/approle/role/ticketkeys-NODE/secret-id"
#                (ticketkeys-agent-config -wrapped-secret-id). A copy intercepted
#                on the way is then either useless (already unwrapped by the
#                node) or detected (the node's unwrap fails). Agent keeps the
#                unwrapped secret-id in memory only: after an Agent restart, run
#                the script again.
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
#   OUTDIR/role-id and OUTDIR/secret-id (mode 0600) and prints the role name;
# - then destroys every secret-id the role had before this run (by accessor):
#   re-running the script after a suspected leak revokes the leaked secret-id.
#   Tokens already issued stay valid until their TTL (at most token_max_ttl,
#   24h); revoke them too with `vault write auth/approle/role/ROLE/...` or
#   `vault token revoke -accessor` if they may have leaked.
# Needs VAULT_ADDR and a VAULT_TOKEN allowed to manage policies, auth methods
# and AppRole roles. The Vault CLI is $VAULT (default: vault). The secret_id
# is never printed.
set -euo pipefail

VAULT=${VAULT:-vault}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "node-approle.sh: $*" >&2; exit 1; }

secret_id_ttl=720h secret_id_num_uses=0 cidrs= wrap_ttl=
while getopts "t:n:c:w:h" opt; do
	case $opt in
	t) secret_id_ttl=$OPTARG ;;
	n) secret_id_num_uses=$OPTARG ;;
	c) cidrs=$OPTARG ;;
	w) wrap_ttl=$OPTARG ;;
	h) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) die "unknown option; see -h" ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -ge 3 && $# -le 4 ]] || die "usage: node-approle.sh [-t TTL] [-n USES] [-c CIDRS] [-w WRAP_TTL] KEYRING NODE OUTDIR [MOUNT]"
[[ $secret_id_ttl =~ ^[1-9][0-9]*[smh]$ ]] || die "-t TTL '$secret_id_ttl': want a positive duration like 720h (0, never expiring, is not allowed)"
[[ $secret_id_num_uses =~ ^[0-9]+$ ]] || die "-n USES '$secret_id_num_uses': want 0 (no count) or a positive number of logins"
[[ -z $cidrs || $cidrs =~ ^[0-9A-Fa-f.:/]+(,[0-9A-Fa-f.:/]+)*$ ]] || die "-c CIDRS '$cidrs': want comma-separated CIDR blocks like 10.0.3.17/32"
[[ -z $wrap_ttl || $wrap_ttl =~ ^[1-9][0-9]*[smh]$ ]] || die "-w WRAP_TTL '$wrap_ttl': want a positive duration like 10m"
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
# CIDR bindings only when -c is given: a run without it (a second keyring)
# keeps those an earlier run set.
bind=()
[[ -z $cidrs ]] || bind=(secret_id_bound_cidrs="$cidrs" token_bound_cidrs="$cidrs")
"$VAULT" write -f "auth/approle/role/$role" token_policies="$policies" token_no_default_policy=true \
	token_ttl=1h token_max_ttl=24h secret_id_ttl="$secret_id_ttl" secret_id_num_uses="$secret_id_num_uses" \
	${bind[@]+"${bind[@]}"} >/dev/null
bound=$("$VAULT" read -field=secret_id_bound_cidrs "auth/approle/role/$role" 2>/dev/null || true)
[[ -n ${bound#[]} && $bound != "[]" ]] || echo "node-approle.sh: NOTE: role $role's secret-id and tokens work from any address; pass -c CIDRS (the node's address) to bind them" >&2

# The secret-ids the role has now (accessors; `vault list` exits 2 when none):
# all of them are destroyed once the new one is written.
old_accessors=$("$VAULT" list -format=json "auth/approle/role/$role/secret-id" 2>/dev/null | tr -d '[]", ' || true)

umask 077
"$VAULT" read -field=role_id "auth/approle/role/$role/role-id" >"$outdir/role-id.tmp"
if [[ -n $wrap_ttl ]]; then
	"$VAULT" write -f -wrap-ttl="$wrap_ttl" -field=wrapping_token "auth/approle/role/$role/secret-id" >"$outdir/secret-id.tmp"
else
	"$VAULT" write -f -field=secret_id "auth/approle/role/$role/secret-id" >"$outdir/secret-id.tmp"
fi
mv -f "$outdir/role-id.tmp" "$outdir/role-id"
mv -f "$outdir/secret-id.tmp" "$outdir/secret-id"

destroyed=0
for accessor in $old_accessors; do
	[[ $accessor =~ ^[0-9a-f-]+$ ]] || continue
	"$VAULT" write "auth/approle/role/$role/secret-id-accessor/destroy" secret_id_accessor="$accessor" >/dev/null ||
		die "cannot destroy the earlier secret-id (accessor $accessor) of role $role: it stays valid until its TTL"
	destroyed=$((destroyed + 1))
done
[[ $destroyed -eq 0 ]] || echo "node-approle.sh: destroyed $destroyed earlier secret-id(s) of role $role" >&2
echo "$role"
