#!/usr/bin/env bash
# register.sh: register the ticketkeys plugin in Vault's catalog by sha256
# and version, then enable it, or move an existing mount to this build.
#
# Usage: bootstrap/register.sh [-n NAME] [-p PATH] [-v VERSION] [-s SHA256SUMS] PLUGIN_BINARY
#
#   PLUGIN_BINARY  the plugin binary as installed in the server's
#                  plugin_directory; its file name is the catalog command and
#                  its sha256 is what Vault will check before every start.
#   -n NAME        catalog name (default: ticketkeys)
#   -p PATH        mount path (default: ticketkeys)
#   -v VERSION     plugin version; it must equal the version the binary
#                  reports (default: ticketkeys.Version from version.go in a
#                  checkout, or the VERSION file a release installs beside
#                  bootstrap/ (/usr/share/ticketkeys/VERSION); a build stamped
#                  with -ldflags -X reports its own, see version.go).
#   -s SHA256SUMS  (also -sha256sums) the release's SHA256SUMS file: the
#                  sha256 registered is the one the release published for a
#                  file of PLUGIN_BINARY's name, and the binary must hash to
#                  it (a binary changed or damaged since the release is
#                  refused). Without -s, the binary's own sha256 is registered.
#
# Needs VAULT_ADDR and a VAULT_TOKEN allowed to write sys/plugins/catalog and
# sys/mounts (and sys/plugins/reload on upgrade). The Vault CLI is $VAULT
# (default: vault). Works against dev and non-dev servers, Vault and OpenBao
# alike (VAULT=bao; BAO_ADDR/BAO_TOKEN work too): the plugin catalog,
# versioned mounts, tuning and sys/plugins/reload/backend are the same API on
# both (lib/server.sh says what differs elsewhere); the plugin binary is the
# same build.
#
# On a new mount: `vault secrets enable -plugin-version`. On an existing
# mount of the same plugin whose running version or sha256 differs: `vault
# secrets tune -plugin-version`, then a reload of that mount
# (sys/plugins/reload/backend). A mount
# already running this exact binary is left alone.
#
# Either way the mount's audit_non_hmac_response_keys then includes the
# engine's fields that carry no key material (ids, states, times; the list
# below, equal to ticketkeys.AuditNonHMACResponseKeys), so audit logs show
# which key ids a client read while ticket_key and tls_ticket_keys stay
# HMAC'd. Keys an operator added to that list are kept, except the fields
# that carry key material (ticket_key, tls_ticket_keys and keys, the list
# that holds ticket_key; ticketkeys.KeyMaterialResponseKeys): when the mount
# lists any of them, register.sh names them and stops before changing
# anything, because every audited read would then write the keys in clear.
# (The engine cannot refuse this itself: Vault gives a plugin no view of its
# mount's audit settings.)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/bootstrap/lib/server.sh"
name=ticketkeys
mount=ticketkeys
version=
sums=

die() { echo "register.sh: $*" >&2; exit 1; }

# Response fields without key material (ticketkeys.AuditNonHMACResponseKeys).
non_hmac_keys=(id state publish_at not_before encrypt_until not_after destroyed_at reason name format mode)

# Response fields with key material (ticketkeys.KeyMaterialResponseKeys):
# never in audit_non_hmac_response_keys.
material_keys=(ticket_key tls_ticket_keys keys)

# current_audit_keys: the mount's audit_non_hmac_response_keys, space-separated.
current_audit_keys() {
	local current
	current=$("$VAULT" read -field=audit_non_hmac_response_keys "sys/mounts/$mount/tune" 2>/dev/null || true)
	current=${current#[}
	echo "${current%]}"
}

# refuse_material_keys: stop when the mount's audit_non_hmac_response_keys
# names a field with key material: audit logs would hold the keys in clear.
refuse_material_keys() {
	local current found=() k keep=()
	current=$(current_audit_keys)
	for k in "${material_keys[@]}"; do
		[[ " $current " == *" $k "* ]] && found+=("$k")
	done
	[[ ${#found[@]} -eq 0 ]] && return 0
	for k in $current; do
		[[ " ${material_keys[*]} " == *" $k "* ]] || keep+=("-audit-non-hmac-response-keys=$k")
	done
	[[ ${#keep[@]} -gt 0 ]] || keep=("-audit-non-hmac-response-keys=")
	die "mount $mount/ lists ${found[*]} in audit_non_hmac_response_keys: audit devices then log that key material in clear. Remove them (\`$VAULT secrets tune ${keep[*]} $mount/\`), consider the keys in existing audit logs exposed (\`vault write $mount/keys/NAME/rotate mode=now purge_previous=true\`), then run register.sh again. Nothing was changed."
}

# tune_audit_keys: add non_hmac_keys to the mount's audit_non_hmac_response_keys.
tune_audit_keys() {
	local current missing=() k
	current=$(current_audit_keys)
	for k in "${non_hmac_keys[@]}"; do
		[[ " $current " == *" $k "* ]] || missing+=("$k")
	done
	[[ ${#missing[@]} -gt 0 ]] || return 0
	local args=() k2
	for k2 in $current "${missing[@]}"; do args+=("-audit-non-hmac-response-keys=$k2"); done
	"$VAULT" secrets tune "${args[@]}" "$mount/" >/dev/null
	echo "audit devices now show ${missing[*]} of $mount/ responses in clear (ticket_key stays HMAC'd)"
}

# -sha256sums and --sha256sums are -s (getopts knows single letters only).
args=()
for a in "$@"; do
	case $a in -sha256sums | --sha256sums) args+=(-s) ;; -sha256sums=* | --sha256sums=*) args+=(-s "${a#*=}") ;; *) args+=("$a") ;; esac
done
set -- ${args[@]+"${args[@]}"}
while getopts "n:p:v:s:h" opt; do
	case $opt in
	n) name=$OPTARG ;;
	p) mount=${OPTARG%/} ;;
	v) version=$OPTARG ;;
	s) sums=$OPTARG ;;
	h) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) die "unknown option; see -h" ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -eq 1 ]] || die "want exactly one PLUGIN_BINARY argument, got $#; see -h"
binary=$1
[[ -f $binary && -x $binary ]] || die "PLUGIN_BINARY $binary: not an executable file"
[[ -n $(server_addr) ]] || die "VAULT_ADDR (or BAO_ADDR for bao) is not set"

if [[ -z $version && -f $root/version.go ]]; then
	version=$(sed -n 's/^\(const\|var\) Version = "\(v[^"]*\)".*/\2/p' "$root/version.go")
	[[ -n $version ]] || die "no -v VERSION and no 'var Version = \"v...\"' in $root/version.go"
elif [[ -z $version ]]; then
	[[ -f $root/VERSION ]] || die "no -v VERSION, and neither $root/version.go (a checkout) nor $root/VERSION (a release) to read it from"
	version=$(<"$root/VERSION")
fi
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$ ]] || die "version $version: want a semantic version like v1.2.3"

sha=$(sha256sum "$binary" | cut -d' ' -f1)
command=$(basename "$binary")
if [[ -n $sums ]]; then
	[[ -r $sums ]] || die "-s SHA256SUMS $sums: cannot read it"
	# The release lists one file of this name per architecture (linux-amd64/NAME, linux-arm64/NAME):
	# the binary must be one of them.
	listed=$(awk -v n="$command" '{ f = $2; sub(/^\*/, "", f); b = f; sub(/.*\//, "", b) } b == n { print $1 " " f }' "$sums")
	[[ -n $listed ]] || die "-s SHA256SUMS $sums lists no file named $command: is it this release's SHA256SUMS?"
	match=$(awk -v s="$sha" '$1 == s { print $2; exit }' <<<"$listed")
	[[ -n $match ]] || die "PLUGIN_BINARY $binary has sha256 $sha, which $sums does not list for $command (it lists: $(tr '\n' ';' <<<"$listed" | sed 's/;$//')): the binary is not the released one; reinstall it from the release"
	echo "sha256 $sha of $binary is the release's $match ($sums)"
fi

# Before any change: a mount that already logs key material in clear is refused.
if "$VAULT" read "sys/mounts/$mount" >/dev/null 2>&1; then
	refuse_material_keys
fi
"$VAULT" plugin register -sha256="$sha" -version="$version" -command="$command" secret "$name" >/dev/null
echo "registered secret plugin $name $version (command $command, sha256 $sha)"

# read_mount FIELD: one field of sys/mounts/$mount, empty when unset.
read_mount() { "$VAULT" read -field="$1" "sys/mounts/$mount" 2>/dev/null || true; }

if ! "$VAULT" read "sys/mounts/$mount" >/dev/null 2>&1; then
	"$VAULT" secrets enable -path="$mount" -plugin-version="$version" "$name" >/dev/null
	echo "enabled $name $version at $mount/"
	tune_audit_keys
	exit 0
fi

type=$(read_mount type)
[[ $type == "$name" ]] || die "mount $mount/ exists with type '$type', not '$name': refusing to touch it"
running_version=$(read_mount running_plugin_version)
running_sha=$(read_mount running_sha256)
if [[ $running_version == "$version" && $running_sha == "$sha" ]]; then
	echo "$mount/ already runs $name $version (sha256 $sha)"
	tune_audit_keys
	exit 0
fi
"$VAULT" secrets tune -plugin-version="$version" "$mount/" >/dev/null
# The API, not `vault plugin reload -mounts`: the 1.21 CLI sends -mounts
# outside a namespace to sys/plugins/reload/unknown/, which does not exist.
"$VAULT" write sys/plugins/reload/backend mounts="$mount/" >/dev/null
echo "upgraded $mount/ from ${running_version:-unversioned} (sha256 ${running_sha:-unknown}) to $name $version (sha256 $sha)"
tune_audit_keys
