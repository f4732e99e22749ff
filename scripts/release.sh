#!/usr/bin/env bash
# release.sh: build a release into dist/ (or $DIST) from this checkout, with no network.
#
# Usage: scripts/release.sh VERSION        (make release VERSION=v0.2.0)
#
# VERSION must equal ticketkeys.Version in version.go, the one constant the plugin reports to Vault and
# bootstrap/register.sh registers it with: the release refuses another VERSION rather than stamping it
# with -ldflags -X, so a release binary always reports what its source says. It writes:
#
#   linux-amd64/, linux-arm64/      vault-plugin-secrets-ticketkeys, ticketkeys-fleetcheck,
#                                   ticketkeys-haproxy-push, ticketkeys-agent-config (static, CGO off)
#   ticketkeys_X.Y.Z_amd64.deb,     the four binaries (/usr/bin, the plugin in /usr/lib/ticketkeys/plugins)
#   ticketkeys_X.Y.Z_arm64.deb      and, under /usr/share/ticketkeys, bootstrap/ (scripts, policies, Agent
#                                   templates, nginx-lua files), nginx/lib (the Lua module) and VERSION;
#                                   `apt-get install ./dist/ticketkeys_X.Y.Z_amd64.deb`
#   lua-resty-ticketkeys-X.Y.Z.tar.gz          the Lua module in OPM's layout (dist.ini, lib/) with its
#                                              rockspec: `opm build` or `luarocks make` inside it
#   lua-resty-ticketkeys-X.Y.Z-1.rockspec      the rockspec (LuaRocks, builtin build type, no C)
#   lua-resty-ticketkeys-X.Y.Z-1.src.rock      rockspec + tarball: `luarocks install ./...src.rock` (offline)
#   SHA256SUMS                                 sha256sum of every file above (bootstrap/register.sh -s)
#
# Reproducible: the same source gives the same bytes, whatever the checkout's path or the time of the
# build: go build -trimpath -buildvcs=false -ldflags '-s -w -buildid=', every archive member's time is
# SOURCE_DATE_EPOCH (default: the last commit's time, else 0), owners root, names sorted.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "release.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: scripts/release.sh VERSION (e.g. v0.2.0; make release VERSION=v0.2.0)"
version=$1
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$ ]] || die "VERSION '$version': want a semantic version like v1.2.3"
source_version=$(sed -n 's/^\(const\|var\) Version = "\(v[^"]*\)".*/\2/p' "$root/version.go")
[[ -n $source_version ]] || die "no 'var Version = \"v...\"' line in $root/version.go"
[[ $version == "$source_version" ]] ||
	die "VERSION $version differs from ticketkeys.Version $source_version in version.go: set the version there (one constant) and release that"

# The Debian version: no leading v, and a pre-release sorts before its release (v1.0.0-rc1 -> 1.0.0~rc1).
deb_version=${version#v}
deb_version=${deb_version/-/\~}
lua_version=${version#v}
lua_version=${lua_version%%[-+]*}
[[ $lua_version == "${version#v}" ]] || die "VERSION $version: a LuaRocks version has no pre-release part; release the Lua module from a plain X.Y.Z"

dist=${DIST:-$root/dist}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
GO=${GO:-go}
export LC_ALL=C TZ=UTC

t0=$SECONDS
rm -rf "$dist"
mkdir -p "$dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# touch_tree DIR: every file and directory under DIR gets the release time.
touch_tree() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }

# The binaries: name -> package.
binaries=(
	"vault-plugin-secrets-ticketkeys ./cmd/vault-plugin-secrets-ticketkeys"
	"ticketkeys-fleetcheck ./cmd/ticketkeys-fleetcheck"
	"ticketkeys-haproxy-push ./cmd/ticketkeys-haproxy-push"
	"ticketkeys-agent-config ./bootstrap/agent/cmd/ticketkeys-agent-config"
)
arches=(amd64 arm64)
for arch in "${arches[@]}"; do
	t=$SECONDS
	mkdir -p "$dist/linux-$arch"
	for b in "${binaries[@]}"; do
		read -r name pkg <<<"$b"
		(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOFLAGS= \
			"$GO" build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o "$dist/linux-$arch/$name" "$pkg")
	done
	# The plugin reports ticketkeys.Version to Vault; register.sh registers VERSION: they must agree.
	grep -aq -- "$version" "$dist/linux-$arch/vault-plugin-secrets-ticketkeys" ||
		die "the linux/$arch plugin does not contain $version: is ticketkeys.Version stamped elsewhere?"
	echo "release.sh: linux/$arch binaries built ($((SECONDS - t))s)" >&2
done

# The Lua module: OPM's layout (dist.ini, lib/) plus the rockspec, as one source tarball.
lua_name=lua-resty-ticketkeys
lua_dir=$lua_name-$lua_version
rockspec=$lua_name-$lua_version-1.rockspec
homepage=https://github.com/ticketkeys/vault-plugin-secrets-ticketkeys
mkdir -p "$work/$lua_dir/lib/resty"
install -m 0644 "$root/nginx/lib/resty/ticketkeys.lua" "$work/$lua_dir/lib/resty/ticketkeys.lua"
install -m 0644 "$root/docs/nginx-lua.md" "$work/$lua_dir/README.md"
cat >"$work/$lua_dir/dist.ini" <<EOF
# OPM (opm build; opm upload) metadata of resty.ticketkeys, written by scripts/release.sh.
name = $lua_name
abstract = Install TLS session-ticket key windows from Vault (ticketkeys) into running nginx workers, without a reload
author = ticketkeys
is_original = yes
lib_dir = lib
doc_dir = .
main_module = lib/resty/ticketkeys.lua
repo_link = $homepage
requires = luajit, openresty/lua-resty-core
EOF
cat >"$work/$lua_dir/$rockspec" <<EOF
-- LuaRocks rockspec of resty.ticketkeys, written by scripts/release.sh for $version.
rockspec_format = "3.0"
package = "$lua_name"
version = "$lua_version-1"
source = {
   url = "$homepage/releases/download/$version/$lua_dir.tar.gz",
   dir = "$lua_dir",
}
description = {
   summary = "Install TLS session-ticket key windows from Vault (ticketkeys) into running nginx workers, without a reload",
   detailed = "resty.ticketkeys reads the window file Vault Agent renders from the ticketkeys secrets engine and installs it into every TLS server block of the running nginx workers with LuaJIT FFI. Needs nginx's Lua module (libnginx-mod-http-lua or OpenResty) and lua-resty-core. See README.md.",
   homepage = "$homepage",
}
dependencies = {
   "lua >= 5.1",
}
build = {
   type = "builtin",
   modules = {
      ["resty.ticketkeys"] = "lib/resty/ticketkeys.lua",
   },
   copy_directories = {},
}
EOF
install -m 0644 "$work/$lua_dir/$rockspec" "$dist/$rockspec"
chmod 0755 "$work/$lua_dir" "$work/$lua_dir/lib" "$work/$lua_dir/lib/resty"
touch_tree "$work/$lua_dir"
# tar_gz DIR OUT PARENT: a reproducible tar.gz of PARENT/DIR (sorted names, root owner, no gzip name/time).
tar_gz() {
	tar -C "$3" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
		--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf - "$1" | gzip -9n >"$2"
}
tar_gz "$lua_dir" "$dist/$lua_dir.tar.gz" "$work"
# A .src.rock is a zip of the rockspec and the source archive its url names.
mkdir -p "$work/rock"
cp "$dist/$rockspec" "$dist/$lua_dir.tar.gz" "$work/rock/"
touch_tree "$work/rock"
(cd "$work/rock" && zip -q -X -D "$dist/$lua_name-$lua_version-1.src.rock" "$rockspec" "$lua_dir.tar.gz")
echo "release.sh: Lua module: $rockspec, $lua_dir.tar.gz (OPM layout), src.rock" >&2

# The Debian packages: one per architecture.
share=/usr/share/ticketkeys
for arch in "${arches[@]}"; do
	pkg=$work/deb-$arch
	install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/lib/ticketkeys/plugins" "$pkg$share"
	install -m 0755 "$dist/linux-$arch/vault-plugin-secrets-ticketkeys" "$pkg/usr/lib/ticketkeys/plugins/"
	for b in ticketkeys-fleetcheck ticketkeys-haproxy-push ticketkeys-agent-config; do
		install -m 0755 "$dist/linux-$arch/$b" "$pkg/usr/bin/"
	done
	# /usr/share/ticketkeys mirrors the checkout's layout, so the scripts find their files as in a checkout.
	(cd "$root" && git ls-files -z bootstrap ':!:*.go' 2>/dev/null || find bootstrap -type f ! -name '*.go' -print0) |
		while IFS= read -r -d '' f; do
			mode=0644
			[[ -x $root/$f ]] && mode=0755
			install -D -m "$mode" "$root/$f" "$pkg$share/$f"
		done
	install -D -m 0644 "$root/nginx/lib/resty/ticketkeys.lua" "$pkg$share/nginx/lib/resty/ticketkeys.lua"
	echo "$version" >"$pkg$share/VERSION"
	chmod 0644 "$pkg$share/VERSION"
	find "$pkg" -type d -exec chmod 0755 {} +
	size=$(du -sk --apparent-size "$pkg" | cut -f1)
	cat >"$pkg/DEBIAN/control" <<EOF
Package: ticketkeys
Version: $deb_version
Architecture: $arch
Maintainer: ticketkeys <ticketkeys@localhost>
Installed-Size: $size
Section: admin
Priority: optional
Homepage: $homepage
Description: TLS session-ticket keys from Vault: plugin, node tools, Agent templates
 The ticketkeys Vault secrets-engine plugin (/usr/lib/ticketkeys/plugins, for Vault's
 plugin_directory), ticketkeys-fleetcheck, ticketkeys-haproxy-push and ticketkeys-agent-config, and
 under $share the bootstrap scripts (register.sh, node-approle.sh), the Vault policies, the Vault
 Agent templates and the nginx Lua module with its installer.
EOF
	chmod 0644 "$pkg/DEBIAN/control"
	touch_tree "$pkg"
	dpkg-deb --root-owner-group -Zgzip --build "$pkg" "$dist/ticketkeys_${deb_version}_$arch.deb" >/dev/null
done
echo "release.sh: Debian packages ticketkeys_${deb_version}_{${arches[*]// /,}}.deb" >&2

(cd "$dist" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort | xargs sha256sum >SHA256SUMS)
echo "release.sh: $version in $dist ($((SECONDS - t0))s); SHA256SUMS:" >&2
cat "$dist/SHA256SUMS" >&2
