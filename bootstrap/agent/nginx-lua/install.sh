#!/bin/sh
# Installs resty.ticketkeys and its files on a Debian nginx node, for one keyring (run as root from anywhere):
#
#   sh bootstrap/agent/nginx-lua/install.sh [-k KEYRING] [-m MOUNT] [-a VAULT_ADDR] [-u NGINX_USER] [-I]
#
#   -k KEYRING     keyring name (default web): the window file is /etc/nginx/ticketkeys/KEYRING.window
#   -m MOUNT       the engine's mount path (default ticketkeys)
#   -a VAULT_ADDR  the address Vault Agent talks to (default https://vault.example.com:8200, a placeholder)
#   -u NGINX_USER  the group nginx workers run as (default www-data, or $NGINX_USER)
#   -I             allow a plain http:// VAULT_ADDR that is not a loopback address (the Agent's token and
#                  the keys then travel in clear); without it http:// is refused except to 127.0.0.0/8,
#                  [::1] or localhost. Printed at start when given.
#
# It installs:
#   - the Lua module under /usr/local/share/ticketkeys/lua/resty/
#   - /etc/nginx/ticketkeys/ (root:NGINX_USER 0750) with a random placeholder key (0600, read by the master)
#   - the snippets /etc/nginx/ticketkeys/ticketkeys.conf (http{}) and stream.conf (stream{})
#   - /etc/vault-agent/ticketkeys/ (0750) with the Agent template window.ctmpl and configuration agent.hcl
# every one rendered for KEYRING, MOUNT and VAULT_ADDR, so the keyring name is given once.
#
# Re-running it (to upgrade the module, or with other values) never overwrites a file you edited: the
# installer records what it wrote in /etc/nginx/ticketkeys/.install-manifest, replaces a file only when
# it is still as installed, and otherwise keeps yours, writes the new version beside it as FILE.new and
# says so. It does not edit nginx.conf, install Vault Agent or create the AppRole: see docs/nginx-lua.md.
# DESTDIR (environment) installs under another root, for packaging and tests.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
keyring=web
mount=ticketkeys
vault_addr=https://vault.example.com:8200
nginx_user=${NGINX_USER:-www-data}
insecure_http=false

die() { echo "install.sh: $*" >&2; exit 1; }
while getopts k:m:a:u:Ih opt; do
	case $opt in
	k) keyring=$OPTARG ;;
	m) mount=${OPTARG%/} ;;
	a) vault_addr=$OPTARG ;;
	u) nginx_user=$OPTARG ;;
	I) insecure_http=true ;;
	h) sed -n '2,25p' "$0"; exit 0 ;;
	*) die "usage: install.sh [-k KEYRING] [-m MOUNT] [-a VAULT_ADDR] [-u NGINX_USER] [-I]" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument '$1' (use -k KEYRING)"

# The engine's rule for keyring names (also keeps / and sed metacharacters out of the paths).
printf '%s' "$keyring" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$' ||
	die "-k KEYRING '$keyring': want 1-128 characters of A-Z a-z 0-9 _ - . starting with a letter or digit"
printf '%s' "$mount" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9_./-]*$' && ! printf '%s' "$mount" | grep -q '\.\.' ||
	die "-m MOUNT '$mount': want a plain mount path of A-Z a-z 0-9 _ - . /"
printf '%s' "$vault_addr" | grep -Eq '^https?://[][A-Za-z0-9._:-]+(/[A-Za-z0-9._/-]*)?$' ||
	die "-a VAULT_ADDR '$vault_addr': want http(s)://host[:port]"
# The host of an http:// address: [v6], or up to the port or path.
http_host=$(printf '%s' "$vault_addr" | sed -n -E 's,^http://(\[[^]]*\]|[^:/]*).*,\1,p')
if [ -n "$http_host" ] && ! printf '%s' "$http_host" | grep -Eq '^(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|\[::1\]|localhost)$'; then
	$insecure_http || die "-a VAULT_ADDR '$vault_addr': plain http:// only to a loopback address (the Agent's token and the keys would travel in clear); use https://, or -I to allow it"
	echo "install.sh: INSECURE (-I): Vault Agent will talk to $vault_addr over plain http://" >&2
fi
getent group "$nginx_user" >/dev/null || die "-u NGINX_USER '$nginx_user': no such group on this machine"

D=${DESTDIR:-}
nginx_dir=/etc/nginx/ticketkeys
agent_dir=/etc/vault-agent/ticketkeys
manifest=$D$nginx_dir/.install-manifest
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
kept=0

# render FILE: the shipped file (written for keyring web at ticketkeys/) for this keyring, mount and address.
render() {
	sed -e "s|$nginx_dir/web\.window|$nginx_dir/$keyring.window|g" \
		-e "s|\"ticketkeys/keys/web?format=nginx\"|\"$mount/keys/$keyring?format=nginx\"|g" \
		-e "s|keyring \"web\" at ticketkeys/|keyring \"$keyring\" at $mount/|g" \
		-e "s|reads ticketkeys/keys/web?format=nginx|reads $mount/keys/$keyring?format=nginx|g" \
		-e "s|https://vault\.example\.com:8200|$vault_addr|g" "$1"
}

sum() { sha256sum <"$1" | cut -d' ' -f1; }

# place NEW DEST MODE: install NEW at DEST unless DEST was edited since the installer wrote it.
place() {
	new=$1 dest=$2 mode=$3
	if [ -e "$D$dest" ]; then
		current=$(sum "$D$dest")
		[ "$current" != "$(sum "$new")" ] || return 0
		recorded=$(awk -v p="$dest" '$2 == p { print $1 }' "$manifest" 2>/dev/null || true)
		if [ "$current" != "$recorded" ]; then
			install -m "$mode" "$new" "$D$dest.new"
			echo "install.sh: KEPT your edited $dest; the new version is $dest.new: compare and merge it by hand" >&2
			kept=$((kept + 1))
			return 0
		fi
	fi
	install -m "$mode" "$new" "$D$dest.tmp"
	mv -f "$D$dest.tmp" "$D$dest"
	{ grep -v " $dest\$" "$manifest" 2>/dev/null || true; echo "$(sum "$new") $dest"; } >"$work/manifest"
	install -m 0600 "$work/manifest" "$manifest"
}

install -d -m 0755 "$D/usr/local/share/ticketkeys/lua/resty"
install -m 0644 "$repo/nginx/lib/resty/ticketkeys.lua" "$D/usr/local/share/ticketkeys/lua/resty/ticketkeys.lua"

install -d -m 0750 -o root -g "$nginx_user" "$D$nginx_dir"
if [ ! -s "$D$nginx_dir/placeholder.key" ]; then
	(umask 077 && head -c 80 /dev/urandom >"$D$nginx_dir/placeholder.key.tmp")
	mv "$D$nginx_dir/placeholder.key.tmp" "$D$nginx_dir/placeholder.key"
fi
install -d -m 0750 "$D$agent_dir"

for f in ticketkeys.conf stream.conf window.ctmpl agent.hcl; do
	render "$here/$f" >"$work/$f"
done
place "$work/ticketkeys.conf" "$nginx_dir/ticketkeys.conf" 0644
place "$work/stream.conf" "$nginx_dir/stream.conf" 0644
place "$work/window.ctmpl" "$agent_dir/window.ctmpl" 0640
place "$work/agent.hcl" "$agent_dir/agent.hcl" 0640

echo "install.sh: installed resty.ticketkeys for keyring $keyring at $mount/ (window file $nginx_dir/$keyring.window)"
[ "$kept" -eq 0 ] || echo "install.sh: $kept edited file(s) kept; see the .new files above" >&2
case $vault_addr in
*vault.example.com*) echo "install.sh: NOTE: $agent_dir/agent.hcl points at the placeholder $vault_addr; re-run with -a https://YOUR-VAULT:8200" >&2 ;;
esac
cat <<EOF
next:
  1. on a Vault admin shell: bootstrap/node-approle.sh $keyring \$(hostname) $agent_dir $mount   (or copy role-id and secret-id here)
  2. nginx.conf: the user directive ($nginx_user), the load_module lines, and the includes (docs/nginx-lua.md)
  3. vault agent -config=$agent_dir/agent.hcl   (as root, or a user that may write $nginx_dir)
  4. nginx -t && nginx -s reload
EOF
