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
# callers wait for one build (scripts/lib/cached-build.sh).
#
# Only the path goes to stdout (KV_PLUGIN_BIN="$(tools/kvplugin/build.sh)");
# progress goes to stderr.
set -euo pipefail

VERSION=v0.25.0
PKG=github.com/hashicorp/vault-plugin-secrets-kv
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../../scripts/lib/cached-build.sh"
dir=$cache/vault-plugin-secrets-kv-$VERSION
bin=$dir/vault-plugin-secrets-kv

# is_built PATH: true when PATH is an executable Go binary built from the
# pinned module version (go version -m reads the build information).
is_built() {
	[[ -x $1 ]] || return 1
	go version -m "$1" 2>/dev/null | grep -Eq "^[[:space:]]+(mod|dep)[[:space:]]+$PKG[[:space:]]+$VERSION([[:space:]]|\$)"
}

cached_build_init kvplugin/build.sh "$dir" "$bin" is_built
cached_build_print_if_built
if [[ $(cd "$here" && go list -m -f '{{.Version}}' "$PKG" 2>/dev/null) != "$VERSION" ]]; then
	echo "kvplugin/build.sh: $here/go.mod does not require $PKG $VERSION" >&2
	exit 1
fi

cached_build_lock "$PKG $VERSION"
cached_build_start "building $PKG $VERSION into $bin (once per machine)"
cached_build_run "go build" "$here" go build -o "$build_tmp" "$PKG/cmd/vault-plugin-secrets-kv"
if ! is_built "$build_tmp"; then
	echo "kvplugin/build.sh: the built binary does not carry $PKG $VERSION in its build information" >&2
	exit 1
fi
cached_build_install
echo "kvplugin/build.sh: built in $(cached_build_seconds)s" >&2
echo "$bin"
