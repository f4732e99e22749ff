#!/usr/bin/env bash
# openresty-build.sh LINE|all: build (or find) an OpenResty-equivalent nginx for one OpenResty release
# line and print its prefix, one line per LINE.
#
# The build uses the offline source kit ../shared/openresty-src (relative to the repository root; CI
# has it there read-only; override with OPENRESTY_SRC) and its build.sh: nginx with OpenResty's nginx
# patches, lua-nginx-module, stream-lua-nginx-module, LuaJIT, lua-resty-core. Nothing of the kit is
# copied into the repository. Each line goes to
#   ${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}/openresty-LINE        (a symlink, printed)
#     -> openresty-LINE-<hash of the kit's inputs and FORMAT>/         (the build)
#          nginx/sbin/nginx, luajit/, lualib/                           (build.sh's layout)
#          nginx-headers/src, nginx-headers/objs                        (the configured tree's headers,
#                                                                        for nginx/layoutprobe)
# build.sh bakes its prefix into the binary (rpath, Lua path), so the build cannot be moved after the
# fact: it happens in its final hashed directory and only a finished build is published, by renaming
# the symlink into place. A half build is therefore never used, and a re-run with the same inputs does
# nothing. A lock file makes concurrent callers of the same line wait for one build.
#
# Debian packages needed: build-essential patch libssl-dev zlib1g-dev libpcre2-dev
# (scripts/debian-packages.txt). About 1 to 2 minutes per line on 2 cores.
#
# Exit codes: 0 built or found; 3 the kit is missing (callers skip, except in CI); 2 usage; 1 failure.
# Only prefixes go to stdout; progress goes to stderr.
set -euo pipefail

LINES=(1.25.3 1.27.1 1.29.2 1.31.1)
# FORMAT names what this script adds to build.sh's output (nginx-headers/, .ticketkeys-ready); change
# it when that changes, so cached builds are redone.
FORMAT=1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kit=${OPENRESTY_SRC:-$root/../shared/openresty-src}
cache=${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}
me=openresty-build.sh

usage() {
	echo "usage: $me LINE|all   (LINE: ${LINES[*]})" >&2
	exit 2
}
[[ $# -eq 1 ]] || usage
if [[ $1 == all ]]; then
	want=("${LINES[@]}")
else
	[[ " ${LINES[*]} " == *" $1 "* ]] || { echo "$me: unknown line '$1'" >&2; usage; }
	want=("$1")
fi

if [[ ! -x $kit/build.sh ]]; then
	echo "$me: no OpenResty source kit at $kit (want build.sh there): put it at ../shared/openresty-src beside the repository or set OPENRESTY_SRC" >&2
	exit 3
fi
kit=$(cd "$kit" && pwd)

# build_key LINE: a hash of everything that decides the build's content.
build_key() {
	{
		echo "line=$1"
		sha256sum <"$kit/build.sh"
		sha256sum <"$kit/lines/$1.env"
		sha256sum <"$kit/SHA256SUMS"
		echo "format=$FORMAT"
	} | sha256sum | cut -c1-12
}

# ready DIR: true when DIR holds a finished build that runs.
ready() {
	[[ -f $1/.ticketkeys-ready && -d $1/nginx-headers/objs ]] && "$1/nginx/sbin/nginx" -V >/dev/null 2>&1
}

build_line() {
	local line=$1 key dir link tmp work kept
	key=$(build_key "$line")
	dir=$cache/openresty-$line-$key
	link=$cache/openresty-$line
	if [[ $(readlink "$link" 2>/dev/null) == "$(basename "$dir")" ]] && ready "$dir"; then
		echo "$link"
		return 0
	fi
	mkdir -p "$cache"
	exec 9>"$cache/openresty-$line.lock"
	if ! flock -n 9; then
		echo "$me: another build of OpenResty $line is running; waiting for it" >&2
		flock 9
	fi
	# The build we waited for may have produced it.
	if ! { [[ $(readlink "$link" 2>/dev/null) == "$(basename "$dir")" ]] && ready "$dir"; }; then
		if ! ready "$dir"; then
			# Under the lock no other build of this line runs: remove what interrupted or failed builds
			# left (never the published build).
			local published entry
			published=$(readlink "$link" 2>/dev/null || true)
			for entry in "$cache/openresty-$line-"* "$cache/openresty-$line.work."*; do
				[[ -e $entry && $(basename "$entry") != "$published" ]] && rm -rf "$entry"
			done
			work=$(mktemp -d "$cache/openresty-$line.work.XXXXXX")
			echo "$me: building OpenResty $line into $dir (about 1-2 minutes on 2 cores)" >&2
			local start=$SECONDS
			# KEEP_BUILD_DIR keeps the configured nginx tree, whose headers the layout probe needs.
			if ! TMPDIR=$work KEEP_BUILD_DIR=1 "$kit/build.sh" "$line" "$dir" >&2; then
				echo "$me: build.sh $line failed; its build directory is kept under $work" >&2
				exit 1
			fi
			kept=$(find "$work" -mindepth 2 -maxdepth 2 -type d -name nginx -path "*/openresty-build-$line.*/nginx" | head -n1)
			if [[ -z $kept || ! -f $kept/objs/ngx_auto_config.h ]]; then
				echo "$me: the configured nginx tree of $line was not found under $work" >&2
				exit 1
			fi
			mkdir -p "$dir/nginx-headers/objs"
			(cd "$kept" && find src -name '*.h' -exec cp --parents -t "$dir/nginx-headers/" {} +)
			cp "$kept"/objs/*.h "$dir/nginx-headers/objs/"
			rm -rf "$work"
			date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/.ticketkeys-ready"
			echo "$me: built OpenResty $line in $((SECONDS - start))s" >&2
		fi
		old=$(readlink "$link" 2>/dev/null || true)
		tmp=$cache/.openresty-$line.link.$$
		ln -sfn "$(basename "$dir")" "$tmp"
		mv -Tf "$tmp" "$link"
		# A previous build of this line (other kit inputs) is no longer published.
		if [[ -n $old && $old != "$(basename "$dir")" && $old == openresty-$line-* ]]; then
			rm -rf "${cache:?}/$old"
		fi
	fi
	exec 9>&-
	echo "$link"
}

for line in "${want[@]}"; do
	build_line "$line"
done
