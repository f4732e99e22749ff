#!/usr/bin/env bash
# openbao-build.sh: print the path of the pinned OpenBao server binary
# (`bao`), building it first when it is missing or is not the pinned version.
#
# OpenBao is built from the source kit outside the project
# (../shared/openbao-src, or OPENBAO_SRC), whose build.sh PREFIX builds
# PREFIX/bao from OpenBao's release v2.6.2; nothing of the kit is copied
# into the project. The binary is kept at
#   ${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}/openbao-2.6.2/bao
# A cold build takes about 7 minutes of CPU on 2 cores. As with Vault
# (scripts/vault-build.sh), the build goes to a temporary name that is renamed
# into place, and a lock makes concurrent callers wait for one build
# (scripts/lib/cached-build.sh).
#
# Only the path goes to stdout (BAO_BIN="$(scripts/openbao-build.sh)");
# progress goes to stderr.
set -euo pipefail

VERSION=2.6.2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/lib/cached-build.sh"
dir=$cache/openbao-$VERSION
bin=$dir/bao

# is_pinned PATH: true when PATH runs and reports the pinned version
# ("OpenBao v2.6.2 ..." from `bao version`).
is_pinned() {
	[[ -x $1 ]] || return 1
	local out
	out=$("$1" version 2>/dev/null) || return 1
	[[ $out == "OpenBao v$VERSION"* ]]
}

cached_build_init openbao-build.sh "$dir" "$bin" is_pinned
cached_build_print_if_built
kit=${OPENBAO_SRC:-$(cd "$root/.." && pwd)/shared/openbao-src}
if [[ ! -x $kit/build.sh || ! -f $kit/openbao-$VERSION.tar.gz ]]; then
	echo "openbao-build.sh: no OpenBao $VERSION source kit at $kit (build.sh and openbao-$VERSION.tar.gz); set OPENBAO_SRC to the kit's directory" >&2
	exit 1
fi

cached_build_lock "OpenBao $VERSION"
cached_build_start "building OpenBao $VERSION into $bin (cold: ~7 minutes of CPU on 2 cores, once per machine)"
# The kit's build.sh writes PREFIX/bao; PREFIX is a temporary directory next
# to the binary, so that only a finished, checked build is renamed into place.
prefix=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -f "$build_tmp"; rm -rf "$prefix"' EXIT
cached_build_run "compiling OpenBao $VERSION with $kit/build.sh" "$kit" ./build.sh "$prefix"
mv -f "$prefix/bao" "$build_tmp"
rm -rf "$prefix"
if ! is_pinned "$build_tmp"; then
	echo "openbao-build.sh: the built binary does not report OpenBao v$VERSION: $("$build_tmp" version 2>&1 || true)" >&2
	exit 1
fi
cached_build_install
echo "openbao-build.sh: built OpenBao $VERSION in $(cached_build_seconds)s" >&2
echo "$bin"
