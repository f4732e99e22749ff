#!/usr/bin/env bash
# vault-build.sh: print the path of the pinned Vault server binary, building
# it first when it is missing or is not the pinned version.
#
# The binary is built from tools/vault (a module of its own, so that Vault's
# dependency graph stays out of the plugin's go.mod) with `go build` into
#   ${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}/vault-v1.21.0/vault
# A cold build takes about 17 minutes on 2 cores and yields a ~500 MB binary.
# The build writes to a temporary name and renames it into place, so a
# half-built binary is never used; a lock file makes concurrent callers wait
# for one build instead of starting a second.
#
# Only the path goes to stdout (VAULT_BIN="$(scripts/vault-build.sh)");
# progress goes to stderr.
set -euo pipefail

VERSION=v1.21.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}
dir=$cache/vault-$VERSION
bin=$dir/vault

# is_pinned PATH: true when PATH runs and reports the pinned version
# ("Vault v1.21.0 ..." from `vault version`).
is_pinned() {
	[[ -x $1 ]] || return 1
	local out
	out=$("$1" version 2>/dev/null) || return 1
	[[ $out == "Vault $VERSION"* ]]
}

if is_pinned "$bin"; then
	echo "$bin"
	exit 0
fi

if ! grep -Eq "github\.com/hashicorp/vault ${VERSION}( |\$)" "$root/tools/vault/go.mod"; then
	echo "vault-build.sh: tools/vault/go.mod does not require github.com/hashicorp/vault $VERSION" >&2
	exit 1
fi

mkdir -p "$dir"
exec 9>"$dir/.build.lock"
if ! flock -n 9; then
	echo "vault-build.sh: another build of Vault $VERSION is running; waiting for it" >&2
	flock 9
fi
# The build we waited for may have produced it.
if is_pinned "$bin"; then
	echo "$bin"
	exit 0
fi

tmp=$(mktemp "$dir/vault.build.XXXXXX")
log=$dir/build.log
trap 'rm -f "$tmp"' EXIT
echo "vault-build.sh: building Vault $VERSION into $bin (cold: ~19 minutes on 2 cores, once per machine)" >&2
start=$SECONDS
# run_step WHAT CMD...: one progress line per step; the tool's own output
# (hundreds of module lines) goes to $log and is shown only on failure.
run_step() {
	local what=$1 t=$SECONDS
	shift
	echo "vault-build.sh: $what ..." >&2
	if ! (cd "$root/tools/vault" && "$@") >>"$log" 2>&1; then
		echo "vault-build.sh: $what failed; the last lines of $log:" >&2
		tail -n 40 "$log" >&2
		exit 1
	fi
	echo "vault-build.sh: $what done in $((SECONDS - t))s" >&2
}
: >"$log"
run_step "step 1/2: downloading Vault's modules (about 4 minutes cold)" go mod download
run_step "step 2/2: compiling Vault (about 13 minutes on 2 cores)" go build -o "$tmp" github.com/hashicorp/vault
if ! is_pinned "$tmp"; then
	echo "vault-build.sh: the built binary does not report Vault $VERSION: $("$tmp" version 2>&1 || true)" >&2
	exit 1
fi
mv -f "$tmp" "$bin"
trap - EXIT
echo "vault-build.sh: built Vault $VERSION in $((SECONDS - start))s" >&2
echo "$bin"
