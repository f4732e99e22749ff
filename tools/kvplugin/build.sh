#!/usr/bin/env bash
# build.sh: print the path of HashiCorp's KV secrets engine built as an
# external Vault plugin, building it first when it is missing.
#
# `make bench` registers this binary (by sha256) in its Vault next to the
# built-in KV v2, so that the read-cost comparison can tell the cost of the
# external-plugin gRPC hop from the cost of the engine (docs/benchmark.md).
# It is github.com/hashicorp/vault-plugin-secrets-kv at the version Vault
# v1.21.0 builds in (see tools/vault/go.sum), built with `go build` from this
# tools module (its own go.mod keeps the engine's dependencies out of the
# plugin's), into
#   ${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}/vault-plugin-secrets-kv-v0.25.0/vault-plugin-secrets-kv
# A cold build takes one to three minutes on 2 cores. The build writes to a
# temporary name and renames it into place, and a lock file makes concurrent
# callers wait for one build.
#
# Only the path goes to stdout (KV_PLUGIN_BIN="$(tools/kvplugin/build.sh)");
# progress goes to stderr.
set -euo pipefail

VERSION=v0.25.0
PKG=github.com/hashicorp/vault-plugin-secrets-kv
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}
dir=$cache/vault-plugin-secrets-kv-$VERSION
bin=$dir/vault-plugin-secrets-kv

# is_built PATH: true when PATH is an executable Go binary built from the
# pinned module version (go version -m reads the build information).
is_built() {
	[[ -x $1 ]] || return 1
	go version -m "$1" 2>/dev/null | grep -Eq "^[[:space:]]+(mod|dep)[[:space:]]+$PKG[[:space:]]+$VERSION([[:space:]]|\$)"
}

if is_built "$bin"; then
	echo "$bin"
	exit 0
fi
if [[ $(cd "$here" && go list -m -f '{{.Version}}' "$PKG" 2>/dev/null) != "$VERSION" ]]; then
	echo "kvplugin/build.sh: $here/go.mod does not require $PKG $VERSION" >&2
	exit 1
fi

mkdir -p "$dir"
exec 9>"$dir/.build.lock"
if ! flock -n 9; then
	echo "kvplugin/build.sh: another build of $PKG $VERSION is running; waiting for it" >&2
	flock 9
fi
if is_built "$bin"; then
	echo "$bin"
	exit 0
fi

tmp=$(mktemp "$dir/vault-plugin-secrets-kv.build.XXXXXX")
log=$dir/build.log
trap 'rm -f "$tmp"' EXIT
echo "kvplugin/build.sh: building $PKG $VERSION into $bin (once per machine)" >&2
start=$SECONDS
if ! (cd "$here" && go build -o "$tmp" "$PKG/cmd/vault-plugin-secrets-kv") >"$log" 2>&1; then
	echo "kvplugin/build.sh: go build failed; the last lines of $log:" >&2
	tail -n 40 "$log" >&2
	exit 1
fi
if ! is_built "$tmp"; then
	echo "kvplugin/build.sh: the built binary does not carry $PKG $VERSION in its build information" >&2
	exit 1
fi
mv -f "$tmp" "$bin"
trap - EXIT
echo "kvplugin/build.sh: built in $((SECONDS - start))s" >&2
echo "$bin"
