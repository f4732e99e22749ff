#!/usr/bin/env bash
# arm64-sysroot.sh: build (once per machine) a sysroot of Debian 12's arm64 nginx with the http Lua and
# stream modules, in which the tests run arm64 nginx on this machine under qemu-user:
#
#     qemu-aarch64-static -L SYSROOT SYSROOT/usr/sbin/nginx ...
#
# The packages come from Debian's arm64 archive through apt with a private state directory (its own
# sources list, package lists, status file and download cache under the work directory), so the host's
# apt configuration and dpkg architectures are left as they are and root is not needed. apt resolves the
# dependencies as for an empty arm64 system (libc6, libssl3, libpcre3, libluajit2-5.1-2, lua-resty-core,
# nginx-common, ...), and every downloaded .deb is unpacked with `dpkg-deb -x` (no maintainer scripts run).
#
# The sysroot is ${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}/arm64-sysroot-HASH, HASH being the first 12
# hex digits of the sha256 of this script (package list, suites and steps): a change makes a new sysroot.
# It is built in a temporary directory beside it and renamed into place, under a lock (concurrent callers
# wait for one build). It prints the sysroot path on stdout and one progress line on stderr; when the cache
# has it, it returns at once.
#
# Environment: TICKETKEYS_CACHE (cache root); TICKETKEYS_DEBIAN_MIRROR (default http://deb.debian.org/debian)
# and TICKETKEYS_DEBIAN_SECURITY (default http://deb.debian.org/debian-security).
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
cache=${TICKETKEYS_CACHE:-$HOME/.cache/ticketkeys}
mirror=${TICKETKEYS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${TICKETKEYS_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# What the tests run: nginx 1.22.1, the http Lua module with the OpenResty LuaJIT branch (libluajit2,
# named so apt does not pick the plain libluajit), lua-resty-core, and the stream module; and the arm64
# headers nginx's own headers include (OpenSSL, PCRE2, crypt.h), for the layout probe compiled by
# aarch64-linux-gnu-gcc (nginx/layoutprobe, Arm64Target).
packages=(nginx libnginx-mod-http-lua libnginx-mod-stream libluajit2-5.1-2 lua-resty-core
	libssl-dev libpcre2-dev libcrypt-dev)

hash=$(sha256sum "$self" | cut -c1-12)
final=$cache/arm64-sysroot-$hash
ready() { [[ -x $final/usr/sbin/nginx && -e $final/.complete ]]; }
if ready; then
	echo "$final"
	exit 0
fi

for tool in apt-get dpkg-deb flock sha256sum; do
	command -v "$tool" >/dev/null || { echo "arm64-sysroot.sh: $tool is needed (Debian)" >&2; exit 1; }
done
[[ -r $keyring ]] || { echo "arm64-sysroot.sh: $keyring is missing (apt-get install debian-archive-keyring)" >&2; exit 1; }

mkdir -p "$cache"
exec 9>"$final.lock"
flock 9
if ready; then # built by the caller we waited for
	echo "$final"
	exit 0
fi

echo "arm64-sysroot.sh: building the arm64 nginx sysroot from Debian's arm64 packages (${packages[*]}) into $final" >&2
work=$(mktemp -d "$cache/.arm64-sysroot-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/state/lists/partial" "$work/cache/archives/partial" "$work/etc/preferences.d" "$work/root"
: >"$work/status"
cat >"$work/sources.list" <<EOF
deb [arch=arm64 signed-by=$keyring] $mirror bookworm main
deb [arch=arm64 signed-by=$keyring] $mirror bookworm-updates main
deb [arch=arm64 signed-by=$keyring] $security bookworm-security main
EOF
cat >"$work/apt.conf" <<EOF
Dir::State "$work/state";
Dir::State::status "$work/status";
Dir::Cache "$work/cache";
Dir::Etc::SourceList "$work/sources.list";
Dir::Etc::SourceParts "$work/etc/sources.list.d";
Dir::Etc::Preferences "$work/etc/preferences";
Dir::Etc::PreferencesParts "$work/etc/preferences.d";
Dir::Log "$work/log";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
Debug::NoLocking "true";
EOF
export APT_CONFIG=$work/apt.conf
log=$work/apt.log
if ! { apt-get update -q && apt-get install -q -y --download-only "${packages[@]}"; } >"$log" 2>&1; then
	echo "arm64-sysroot.sh: apt-get failed; its output:" >&2
	tail -n 30 "$log" >&2
	exit 1
fi
shopt -s nullglob
debs=("$work"/cache/archives/*.deb)
[[ ${#debs[@]} -gt 0 ]] || { echo "arm64-sysroot.sh: apt downloaded no package" >&2; exit 1; }
for deb in "${debs[@]}"; do
	dpkg-deb -x "$deb" "$work/root"
	dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}\n' "$deb" >>"$work/root/.packages"
done
[[ -x $work/root/usr/sbin/nginx ]] || { echo "arm64-sysroot.sh: no usr/sbin/nginx among the packages" >&2; exit 1; }
# Debian's nginx looks for its modules under /usr/share/nginx/modules (links into /usr/lib/nginx/modules,
# made by the packages); the tests link SYSROOT/usr/lib/nginx/modules as the instance's modules/.
sort -o "$work/root/.packages" "$work/root/.packages"
touch "$work/root/.complete"
rm -rf "$final"
mv "$work/root" "$final"
echo "$final"
