#!/usr/bin/env bash
# audit.sh: enable a file audit device, or check the one already enabled at
# that path.
#
# Usage: bootstrap/audit.sh FILE [DEVICE_PATH]
#
#   FILE         the audit log file (created with mode 0600)
#   DEVICE_PATH  the device's path (default: file)
#
# Audit devices HMAC every string in request and response data, so ticket
# keys never reach the log in clear; `vault write sys/audit-hash/DEVICE_PATH
# input=VALUE` shows the HMAC to look for. A device already enabled at
# DEVICE_PATH is accepted only if its options keep that true: it fails,
# naming the option, when log_raw is true (every string in clear, the keys
# included) or hmac_accessor is false (token accessors in clear); it is not
# accepted by its name alone. Needs VAULT_ADDR and a VAULT_TOKEN allowed to
# manage sys/audit (read sudo). The Vault CLI is $VAULT (default: vault).
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
	# The device's own entry, as JSON: {"type": ..., "options": {"log_raw": "true", ...}, ...}.
	entry=$("$VAULT" read -format=json -field="$device/" sys/audit) ||
		die "cannot read the options of the audit device at $device/ (sys/audit); not accepting it unchecked"
	[[ $entry == *'"options"'* ]] || die "the audit device at $device/ shows no options: $entry"
	bad=()
	# Vault parses these options with strconv.ParseBool.
	[[ $entry =~ \"log_raw\":\ *\"(1|t|T|true|TRUE|True)\" ]] && bad+=("log_raw=${BASH_REMATCH[1]} (every string of every request and response in clear, ticket keys included)")
	[[ $entry =~ \"hmac_accessor\":\ *\"(0|f|F|false|FALSE|False)\" ]] && bad+=("hmac_accessor=${BASH_REMATCH[1]} (token accessors in clear)")
	if [[ ${#bad[@]} -gt 0 ]]; then
		die "the audit device at $device/ has $(IFS=';'; echo "${bad[*]}"): disable it (vault audit disable $device) and run audit.sh again, or give another DEVICE_PATH"
	fi
	echo "an audit device is already enabled at $device/ (log_raw and hmac_accessor checked: it hashes)"
	exit 0
fi
"$VAULT" audit enable -path="$device" file file_path="$file" mode=0600 >/dev/null
echo "enabled file audit device at $device/ writing $file"
