#!/usr/bin/env bash
# reader-policy.sh: write the policy that lets a token read one keyring.
#
# Usage: bootstrap/reader-policy.sh KEYRING [MOUNT]
#
# Renders policies/ticketkeys-reader.hcl.tmpl for KEYRING at MOUNT (default
# ticketkeys), writes it as policy "ticketkeys-reader-KEYRING" (with MOUNT
# appended when it is not the default) and prints that name on stdout.
# Needs VAULT_ADDR and a VAULT_TOKEN allowed to write sys/policies/acl. The
# Vault CLI is $VAULT (default: vault). With -n (first argument) it only
# prints the rendered policy and does not contact Vault.
set -euo pipefail

VAULT=${VAULT:-vault}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "reader-policy.sh: $*" >&2; exit 1; }

dry=false
if [[ ${1:-} == -n ]]; then dry=true; shift; fi
[[ $# -ge 1 && $# -le 2 ]] || die "usage: reader-policy.sh [-n] KEYRING [MOUNT]"
keyring=$1
mount=${2:-ticketkeys}
mount=${mount%/}

# The engine's rule for names; it also keeps glob characters (* +) out of
# the policy path.
[[ $keyring =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$ ]] || die "KEYRING '$keyring': want 1-128 characters of A-Z a-z 0-9 _ - . starting with a letter or digit"
[[ $mount =~ ^[A-Za-z0-9][A-Za-z0-9_./-]*$ && $mount != *..* ]] || die "MOUNT '$mount': want a plain mount path of A-Z a-z 0-9 _ - . /"

policy=$(sed -e "s|{{mount}}|$mount|g" -e "s|{{keyring}}|$keyring|g" "$here/policies/ticketkeys-reader.hcl.tmpl")
if $dry; then
	printf '%s\n' "$policy"
	exit 0
fi
name=ticketkeys-reader-$keyring
[[ $mount == ticketkeys ]] || name=$name-${mount//\//-}
printf '%s\n' "$policy" | "$VAULT" policy write "$name" - >/dev/null
echo "$name"
