# cached-build.sh: the steps every cached build shares (scripts/vault-build.sh,
# scripts/caddy-build.sh, tools/kvplugin/build.sh). Source it; it is not a
# command of its own.
#
# A cached build keeps one binary under $cache (TICKETKEYS_CACHE, by default
# ~/.cache/ticketkeys) and prints its path on stdout; progress goes to stderr.
# The build writes to a temporary name in the binary's directory and renames
# it into place, so a half-built binary is never used; a lock file in that
# directory (flock) makes concurrent callers wait for one build instead of
# starting a second. A script uses it in this order:
#
#   cached_build_init NAME DIR BIN CHECK   # CHECK PATH: is PATH a usable build?
#   cached_build_print_if_built            # prints BIN and exits when it is built
#   ...checks of the script's own inputs...
#   cached_build_lock WHAT                 # waits for a running build, re-checks
#   cached_build_start MESSAGE             # $build_tmp and $build_log, timer
#   cached_build_run WHAT DIR CMD...       # CMD's output to $build_log
#   ...CHECK "$build_tmp", with the script's own message...
#   cached_build_install                   # renames $build_tmp to BIN

cache=${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}

# cached_build_init NAME DIR BIN CHECK: NAME prefixes every progress line;
# BIN is the binary in the cache directory DIR; CHECK is a function that is
# true when the binary at its argument is a complete build of the pinned
# inputs.
cached_build_init() {
	build_name=$1 build_dir=$2 build_bin=$3 build_check=$4
}

# cached_build_print_if_built: print the binary's path and exit when it is
# already built.
cached_build_print_if_built() {
	if "$build_check" "$build_bin"; then
		echo "$build_bin"
		exit 0
	fi
}

# cached_build_lock WHAT: take the build lock (held until the script exits),
# waiting with a message naming WHAT while another caller builds; the build
# we waited for may have produced the binary, so it is checked again.
cached_build_lock() {
	mkdir -p "$build_dir"
	exec 9>"$build_dir/.build.lock"
	if ! flock -n 9; then
		echo "$build_name: another build of $1 is running; waiting for it" >&2
		flock 9
	fi
	cached_build_print_if_built
}

# cached_build_start MESSAGE: print MESSAGE and start the build: an empty
# $build_log and a temporary file $build_tmp next to the binary, removed
# when the script exits before cached_build_install.
cached_build_start() {
	build_tmp=$(mktemp "$build_dir/$(basename "$build_bin").build.XXXXXX")
	build_log=$build_dir/build.log
	trap 'rm -f "$build_tmp"' EXIT
	echo "$build_name: $1" >&2
	build_started=$SECONDS
	: >"$build_log"
}

# cached_build_run WHAT DIR CMD...: run CMD in DIR with its output appended
# to $build_log; when it fails, print the last lines of the log and exit.
cached_build_run() {
	local what=$1 workdir=$2
	shift 2
	if ! (cd "$workdir" && "$@") >>"$build_log" 2>&1; then
		echo "$build_name: $what failed; the last lines of $build_log:" >&2
		tail -n 40 "$build_log" >&2
		exit 1
	fi
}

# cached_build_install: rename the finished build into place (the caller has
# checked it) and keep it.
cached_build_install() {
	mv -f "$build_tmp" "$build_bin"
	trap - EXIT
}

# cached_build_seconds: how long the build has taken so far.
cached_build_seconds() {
	echo $((SECONDS - build_started))
}
