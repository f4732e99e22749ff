#!/usr/bin/env bash
# caddy-build.sh: print the path of a Caddy binary with the ticketkeys key
# source (tls.stek.ticketkeys), building it first when it is missing.
#
# The binary is the equivalent of
#   xcaddy build --with github.com/ticketkeys/vault-plugin-secrets-ticketkeys/caddy
# done with the plain Go toolchain: caddy/cmd/caddy is a main package that
# imports Caddy's command, its standard modules and ours, pinned by
# caddy/go.mod and caddy/go.sum (Caddy v2.11.9). It is built with -trimpath
# into
#   ${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}/caddy-<hash>/caddy
# where <hash> covers the Go version, caddy/go.mod, caddy/go.sum, the
# module's Go sources and the sources it takes from this checkout (client/,
# go.mod, go.sum), so any change to them builds a new binary. Measured on 2
# cores with the modules downloaded: a cold build takes about 3.5 minutes of
# CPU (12 minutes of wall time while other builds shared the cores), a
# rebuild after a change to the module or client/ about 20 seconds.
# The build writes to a temporary name and renames it into place, so a
# half-built binary is never used; a lock file makes concurrent callers wait
# for one build instead of starting a second (scripts/lib/cached-build.sh).
#
# Only the path goes to stdout (CADDY_BIN="$(scripts/caddy-build.sh)");
# progress goes to stderr.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/lib/cached-build.sh"

# The inputs of the build, in a stable order (tests excluded: they are not
# in the binary).
inputs() {
	cd "$root"
	{
		printf '%s\n' caddy/go.mod caddy/go.sum go.mod go.sum
		find caddy client -name '*.go' -not -name '*_test.go' -type f
	} | LC_ALL=C sort
}
hash=$(
	{
		go env GOVERSION GOOS GOARCH
		while read -r f; do
			printf '%s\n' "$f"
			sha256sum <"$root/$f"
		done < <(inputs)
	} | sha256sum | cut -c1-16
)
dir=$cache/caddy-$hash
bin=$dir/caddy

# has_module PATH: true when PATH runs and lists the ticketkeys key source.
has_module() {
	[[ -x $1 ]] && "$1" list-modules 2>/dev/null | grep -qx 'tls.stek.ticketkeys'
}

cached_build_init caddy-build.sh "$dir" "$bin" has_module
cached_build_print_if_built
cached_build_lock "$bin"
cached_build_start "building Caddy with tls.stek.ticketkeys into $bin"
cached_build_run "go build" "$root/caddy" go build -trimpath -o "$build_tmp" ./cmd/caddy
if ! has_module "$build_tmp"; then
	echo "caddy-build.sh: the built binary does not list tls.stek.ticketkeys" >&2
	exit 1
fi
cached_build_install
echo "caddy-build.sh: built in $(cached_build_seconds)s: $("$bin" version)" >&2
echo "$bin"
