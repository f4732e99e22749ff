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
# for one build instead of starting a second (scripts/lib/cached-build.sh).
#
# Only the path goes to stdout (VAULT_BIN="$(scripts/vault-build.sh)");
# progress goes to stderr.
set -euo pipefail

VERSION=v1.21.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/lib/cached-build.sh"
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

cached_build_init vault-build.sh "$dir" "$bin" is_pinned
cached_build_print_if_built
if ! grep -Eq "github\.com/hashicorp/vault ${VERSION}( |\$)" "$root/tools/vault/go.mod"; then
	echo "vault-build.sh: tools/vault/go.mod does not require github.com/hashicorp/vault $VERSION" >&2
	exit 1
fi

cached_build_lock "Vault $VERSION"
cached_build_start "building Vault $VERSION into $bin (cold: ~19 minutes on 2 cores, once per machine)"
# run_step WHAT CMD...: one progress line per step; the tool's own output
# (hundreds of module lines) goes to the build log and is shown only on
# failure.
run_step() {
	local what=$1 t=$SECONDS
	shift
	echo "vault-build.sh: $what ..." >&2
	cached_build_run "$what" "$root/tools/vault" "$@"
	echo "vault-build.sh: $what done in $((SECONDS - t))s" >&2
}
run_step "step 1/2: downloading Vault's modules (about 4 minutes cold)" go mod download
run_step "step 2/2: compiling Vault (about 13 minutes on 2 cores)" go build -o "$build_tmp" github.com/hashicorp/vault
if ! is_pinned "$build_tmp"; then
	echo "vault-build.sh: the built binary does not report Vault $VERSION: $("$build_tmp" version 2>&1 || true)" >&2
	exit 1
fi
cached_build_install
echo "vault-build.sh: built Vault $VERSION in $(cached_build_seconds)s" >&2
echo "$bin"
