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
#
# OpenBao (detected, see lib/server.sh; BAO_ADDR/BAO_TOKEN work too) refuses
# to enable an audit device over the API: there the device is an `audit`
# stanza of the server's configuration file. With SERVER_CONFIG=FILE (the
# server's configuration file, writable) audit.sh appends that stanza to
# FILE, unless FILE declares the device already, and says to reload the
# server (SIGHUP) or restart it; without it, it prints the stanza and exits 3.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib/server.sh"
die() { echo "audit.sh: $*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: audit.sh FILE [DEVICE_PATH]"
file=$1
device=${2:-file}
device=${device%/}
[[ $file == /* ]] || die "FILE $file: want an absolute path (it is opened by the Vault server)"
[[ -n $(server_addr) ]] || die "VAULT_ADDR (or BAO_ADDR for bao) is not set"

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
kind=$(server_kind) || die "cannot tell whether the server is Vault or OpenBao (see above)"
if [[ $kind == openbao ]]; then
	# OpenBao: declared in the configuration file, applied on SIGHUP.
	stanza=$(printf 'audit "file" "%s" {\n  options {\n    file_path = "%s"\n    mode      = "0600"\n  }\n}' "$device" "$file")
	config=${SERVER_CONFIG:-}
	if [[ -z $config ]]; then
		echo "$stanza"
		echo "audit.sh: OpenBao enables audit devices from its configuration file only: add the stanza above to it and reload the server (SIGHUP), or run again with SERVER_CONFIG=<the server's configuration file>" >&2
		exit 3
	fi
	[[ -f $config && -w $config ]] || die "SERVER_CONFIG $config: not a writable file"
	if grep -Eq "^[[:space:]]*audit[[:space:]]+\"file\"[[:space:]]+\"$device/?\"" "$config"; then
		echo "$config already declares an audit device at $device/; reload the server (SIGHUP) to apply it"
		exit 0
	fi
	printf '\n%s\n' "$stanza" >>"$config"
	echo "declared file audit device at $device/ writing $file in $config; reload the server (SIGHUP) or restart it to enable it"
	exit 0
fi
"$VAULT" audit enable -path="$device" file file_path="$file" mode=0600 >/dev/null
echo "enabled file audit device at $device/ writing $file"
