#!/usr/bin/env bash
# ensure-built.sh NAME CMD...: one cached build step of `make test` (the *-ensure targets), run before the
# tests so that no cold build happens inside a `go test` timeout. CMD is a cached build (it prints the
# built path on stdout and returns at once when the cache has it); its progress goes to a log, and this
# prints one line: "NAME: ready in Ns (PATH)", a few seconds when the cache has it. On failure it prints the log's last
# 30 lines and exits with CMD's status.
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: scripts/ensure-built.sh NAME CMD..." >&2; exit 2; }
name=$1
shift
log=$(mktemp "${TMPDIR:-/tmp}/ticketkeys-ensure-$name.XXXXXX")
trap 'rm -f "$log"' EXIT
start=$SECONDS
rc=0
out=$("$@" 2>"$log") || rc=$?
took=$((SECONDS - start))
if [[ $rc -ne 0 ]]; then
	echo "$name: FAILED after ${took}s ($*, exit status $rc); the last lines of its output:" >&2
	tail -n 30 "$log" >&2
	exit "$rc"
fi
echo "$name: ready in ${took}s ($(tail -n 1 <<<"$out"))"
