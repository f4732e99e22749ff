#!/usr/bin/env bash
# debian-deps.sh: make sure the Debian packages that the tests need are
# installed. The one list is scripts/debian-packages.txt; `make test`,
# `make test-unit`, `make test-e2e` and .ci/run all come through here.
#
#   - every package installed: prints nothing, exits 0;
#   - some missing, running as root: installs them with apt-get (after one
#     `apt-get update`), with a temporary /usr/sbin/policy-rc.d that forbids
#     starting services, so the nginx and HAProxy packages do not start
#     daemons (the tests start their own on free ports);
#   - some missing, not root: names them and the one command to run, exits 1.
#
# Environment: TICKETKEYS_DEBIAN_PACKAGES overrides the list file (tests).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
list=${TICKETKEYS_DEBIAN_PACKAGES:-$root/scripts/debian-packages.txt}
[[ -r $list ]] || { echo "debian-deps.sh: cannot read the package list $list" >&2; exit 1; }

mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | grep -v '^$' || true)
[[ ${#packages[@]} -gt 0 ]] || exit 0

# installed NAME: true when dpkg knows NAME as fully installed.
installed() {
	local status
	status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || return 1
	[[ $status == installed ]]
}

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
done
[[ ${#missing[@]} -gt 0 ]] || exit 0

if [[ $(id -u) -ne 0 ]]; then
	{
		echo "debian-deps.sh: the tests need Debian packages that are not installed: ${missing[*]}"
		echo "debian-deps.sh: install them (as root) with:  sudo $root/scripts/debian-deps.sh"
	} >&2
	exit 1
fi

echo "debian-deps.sh: installing ${missing[*]} (apt-get; services are not started)" >&2
policy=/usr/sbin/policy-rc.d
saved=
if [[ -e $policy ]]; then
	saved=$(mktemp "$policy.ticketkeys.XXXXXX")
	cp -p "$policy" "$saved"
fi
restore_policy() {
	if [[ -n $saved ]]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\n# scripts/debian-deps.sh: do not start services while installing packages.\nexit 101\n' >"$policy"
chmod 0755 "$policy"

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp "${TMPDIR:-/tmp}/ticketkeys-apt.XXXXXX")
if ! { apt-get update -q && apt-get install -y -q "${missing[@]}"; } >"$log" 2>&1; then
	echo "debian-deps.sh: apt-get failed; its output:" >&2
	tail -n 40 "$log" >&2
	rm -f "$log"
	exit 1
fi
rm -f "$log"
for p in "${missing[@]}"; do
	installed "$p" || { echo "debian-deps.sh: $p is still not installed after apt-get install" >&2; exit 1; }
done
echo "debian-deps.sh: installed ${#missing[@]} package(s)" >&2
