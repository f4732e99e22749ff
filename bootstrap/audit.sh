#!/usr/bin/env bash
# audit.sh: enable a file audit device, unless one is already enabled at
# that path.
#
# Usage: bootstrap/audit.sh FILE [DEVICE_PATH]
#
#   FILE         the audit log file (created with mode 0600)
#   DEVICE_PATH  the device's path (default: file)
#
# Audit devices HMAC every string in request and response data, so ticket
# keys never reach the log in clear; `vault write sys/audit-hash/DEVICE_PATH
# input=VALUE` shows the HMAC to look for. Needs VAULT_ADDR and a VAULT_TOKEN
# allowed to manage sys/audit. The Vault CLI is $VAULT (default: vault).
set -euo pipefail

VAULT=${VAULT:-vault}
die() { echo "audit.sh: $*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: audit.sh FILE [DEVICE_PATH]"
file=$1
device=${2:-file}
device=${device%/}
[[ $file == /* ]] || die "FILE $file: want an absolute path (it is opened by the Vault server)"
[[ -n ${VAULT_ADDR:-} ]] || die "VAULT_ADDR is not set"

# `vault audit list` exits 2 when no device is enabled; its first column is
# the device path.
# Read the list whole first, so that no early-closing pipe under pipefail
# can turn "enabled" into "not enabled".
devices=$("$VAULT" audit list 2>/dev/null || true)
enabled=false
while read -r path _; do
	[[ $path == "$device/" ]] && enabled=true
done <<<"$devices"
if $enabled; then
	echo "an audit device is already enabled at $device/"
	exit 0
fi
"$VAULT" audit enable -path="$device" file file_path="$file" mode=0600 >/dev/null
echo "enabled file audit device at $device/ writing $file"
