#!/bin/sh
# Installs resty.ticketkeys and its files on a Debian nginx node, for one keyring (run as root from anywhere):
#
#   sh bootstrap/agent/nginx-lua/install.sh [-k KEYRING] [-m MOUNT] [-a VAULT_ADDR] [-c CA_FILE] [-t SESSION_TIMEOUT]
#                                           [-u NGINX_USER] [-g NGINX_GROUP] [-A AGENT_USER] [-I]
#
#   -k KEYRING     keyring name (default web): the window file is /var/lib/ticketkeys/nginx/KEYRING.window
#   -m MOUNT       the engine's mount path (default ticketkeys)
#   -a VAULT_ADDR  the address Vault Agent talks to (default https://vault.example.com:8200, a placeholder)
#   -c CA_FILE     PEM file Agent verifies Vault's certificate with (ca_cert in agent.hcl; default: the
#                  system roots). An absolute path; it must exist (under DESTDIR when that is set).
#   -t SESSION_TIMEOUT  nginx's ssl_session_timeout in both snippets (default 13h): nginx refuses a ticket
#                  whose session is older, and sends it as the ticket's lifetime hint. Give the keyring's
#                  rotation_period + retain (a key's lifetime from activation to not_after; 13h is the
#                  engine's default 1h + 12h). nginx units d h m s (13h, 1d1h, 25s), 1s to 7d.
#   -u NGINX_USER  the user nginx workers run as (default www-data, or $NGINX_USER): nginx.conf's `user`
#   -g NGINX_GROUP the group that may read the window (default: NGINX_USER's primary group, `id -gn`;
#                  nobody's is nogroup on Debian)
#   -A AGENT_USER  the user Vault Agent runs as (default root): it owns the window directory, and reads
#                  /etc/vault-agent/ticketkeys through its group; it can write nothing else nginx reads
#   -I             allow a plain http:// VAULT_ADDR that is not a loopback address (the Agent's token and
#                  the keys then travel in clear); without it http:// is refused except to 127.0.0.0/8,
#                  [::1] or localhost. Printed at start when given.
#
# It installs:
#   - the Lua module under /usr/local/share/ticketkeys/lua/resty/
#   - /etc/nginx/ticketkeys/ (root:root 0755) with a random placeholder key (0600, read by the master) and
#     the snippets ticketkeys.conf (http{}) and stream.conf (stream{}) (0644): root's alone, since what
#     nginx's master loads runs as root
#   - /var/lib/ticketkeys/nginx/ (AGENT_USER:NGINX_GROUP 2750), where Agent renders the window (0640):
#     the only directory Agent writes; setgid, so the window gets the workers' group
#   - /etc/vault-agent/ticketkeys/ (root:AGENT_USER's group 0750) with the Agent template window.ctmpl and
#     configuration agent.hcl (0640)
# every one rendered for KEYRING, MOUNT, VAULT_ADDR, CA_FILE and SESSION_TIMEOUT, so each is given once.
#
# Re-running it (to upgrade the module, or with other values) never overwrites a file you edited: the
# installer records what it wrote in /etc/nginx/ticketkeys/.install-manifest, replaces a file only when
# it is still as installed, and otherwise keeps yours, writes the new version beside it as FILE.new and
# says so. It does not edit nginx.conf, install Vault Agent or create the AppRole: see docs/nginx-lua.md.
# DESTDIR (environment) installs under another root, for packaging and tests: files go under DESTDIR,
# but the paths inside them, in the manifest and in the messages are the target's (/etc/..., /var/lib/...,
# /usr/local/...), as they are at run time.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
keyring=web
mount=ticketkeys
vault_addr=https://vault.example.com:8200
ca_file=
session_timeout=13h
nginx_user=${NGINX_USER:-www-data}
nginx_group=
agent_user=root
insecure_http=false

die() { echo "install.sh: $*" >&2; exit 1; }
while getopts k:m:a:c:t:u:g:A:Ih opt; do
	case $opt in
	k) keyring=$OPTARG ;;
	m) mount=${OPTARG%/} ;;
	a) vault_addr=$OPTARG ;;
	c) ca_file=$OPTARG ;;
	t) session_timeout=$OPTARG ;;
	u) nginx_user=$OPTARG ;;
	g) nginx_group=$OPTARG ;;
	A) agent_user=$OPTARG ;;
	I) insecure_http=true ;;
	h) sed -n '2,42p' "$0"; exit 0 ;;
	*) die "usage: install.sh [-k KEYRING] [-m MOUNT] [-a VAULT_ADDR] [-c CA_FILE] [-t SESSION_TIMEOUT] [-u NGINX_USER] [-g NGINX_GROUP] [-A AGENT_USER] [-I]" ;;
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
# nginx time units (d h m s, each at most once, in that order), 1s to 7d: RFC 8446 caps a ticket's
# lifetime at 7 days, as the engine's max_key_lifetime caps rotation_period + retain.
timeout_rule="want nginx time units d h m s in that order (13h, 1d1h, 25s), at least 1s and at most 7d: the keyring's rotation_period + retain"
printf '%s' "$session_timeout" | grep -Eq '^((0|[1-9][0-9]{0,5})d)?((0|[1-9][0-9]{0,5})h)?((0|[1-9][0-9]{0,5})m)?((0|[1-9][0-9]{0,5})s)?$' && [ -n "$session_timeout" ] ||
	die "-t SESSION_TIMEOUT '$session_timeout': $timeout_rule"
timeout_s=$(printf '%s' "$session_timeout" | sed -E 's/d/*86400+/; s/h/*3600+/; s/m/*60+/; s/s/+/; s/^/0+/; s/$/0/')
timeout_s=$(($timeout_s))
[ "$timeout_s" -ge 1 ] && [ "$timeout_s" -le 604800 ] ||
	die "-t SESSION_TIMEOUT '$session_timeout': $timeout_rule (it is ${timeout_s}s)"
if [ -n "$ca_file" ]; then
	case $ca_file in
	/*) ;;
	*) die "-c CA_FILE '$ca_file': want an absolute path (Agent reads it at run time)" ;;
	esac
	printf '%s' "$ca_file" | grep -Eq '^/[A-Za-z0-9_./-]+$' ||
		die "-c CA_FILE '$ca_file': want a path of A-Z a-z 0-9 _ - . /"
	[ -f "${DESTDIR:-}$ca_file" ] || die "-c CA_FILE '$ca_file': no such file${DESTDIR:+ under DESTDIR $DESTDIR}"
	grep -q -- '-----BEGIN CERTIFICATE-----' "${DESTDIR:-}$ca_file" ||
		die "-c CA_FILE '$ca_file': want a PEM file of CA certificates (no -----BEGIN CERTIFICATE----- line)"
fi
id -u "$nginx_user" >/dev/null 2>&1 || die "-u NGINX_USER '$nginx_user': no such user on this machine (the workers' user; -g for their group)"
[ -n "$nginx_group" ] || nginx_group=$(id -gn "$nginx_user")
getent group "$nginx_group" >/dev/null || die "-g NGINX_GROUP '$nginx_group': no such group on this machine"
id -u "$agent_user" >/dev/null 2>&1 || die "-A AGENT_USER '$agent_user': no such user on this machine"
agent_group=$(id -gn "$agent_user")

D=${DESTDIR:-}
nginx_dir=/etc/nginx/ticketkeys
window_dir=/var/lib/ticketkeys/nginx
agent_dir=/etc/vault-agent/ticketkeys
manifest=$D$nginx_dir/.install-manifest
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
kept=0

# With -c, the vault stanza's commented ca_cert line becomes the setting.
ca_sed=
[ -z "$ca_file" ] || ca_sed="s|^  # ca_cert = \"/etc/vault-agent/ticketkeys/vault-ca.pem\".*|  ca_cert = \"$ca_file\"|"

# render FILE: the shipped file (written for keyring web at ticketkeys/) for this keyring, mount and address.
render() {
	sed -e "s|$window_dir/web\.window|$window_dir/$keyring.window|g" \
		-e "s|^ssl_session_timeout 13h;|ssl_session_timeout $session_timeout;|" \
		-e "$ca_sed" \
		-e "s|\"ticketkeys/keys/web?format=nginx\"|\"$mount/keys/$keyring?format=nginx\"|g" \
		-e "s|keyring \"web\" at ticketkeys/|keyring \"$keyring\" at $mount/|g" \
		-e "s|reads ticketkeys/keys/web?format=nginx|reads $mount/keys/$keyring?format=nginx|g" \
		-e "s|https://vault\.example\.com:8200|$vault_addr|g" "$1"
}

sum() { sha256sum <"$1" | cut -d' ' -f1; }

# place NEW DEST MODE [GROUP]: install NEW at DEST (root:GROUP, default root) unless DEST was edited since
# the installer wrote it.
place() {
	new=$1 dest=$2 mode=$3 group=${4:-root}
	if [ -e "$D$dest" ]; then
		current=$(sum "$D$dest")
		[ "$current" != "$(sum "$new")" ] || return 0
		recorded=$(awk -v p="$dest" '$2 == p { print $1 }' "$manifest" 2>/dev/null || true)
		if [ "$current" != "$recorded" ]; then
			install -m "$mode" -o root -g "$group" "$new" "$D$dest.new"
			echo "install.sh: KEPT your edited $dest; the new version is $dest.new: compare and merge it by hand" >&2
			kept=$((kept + 1))
			return 0
		fi
	fi
	install -m "$mode" -o root -g "$group" "$new" "$D$dest.tmp"
	mv -f "$D$dest.tmp" "$D$dest"
	{ grep -v " $dest\$" "$manifest" 2>/dev/null || true; echo "$(sum "$new") $dest"; } >"$work/manifest"
	install -m 0600 -o root -g root "$work/manifest" "$manifest"
}

install -d -m 0755 "$D/usr/local/share/ticketkeys/lua/resty"
install -m 0644 "$repo/nginx/lib/resty/ticketkeys.lua" "$D/usr/local/share/ticketkeys/lua/resty/ticketkeys.lua"

# What nginx's master loads (as root) is root's alone; earlier versions made this directory
# root:NGINX_USER 0750 and wrote the window into it.
install -d -m 0755 -o root -g root "$D$nginx_dir"
if [ ! -s "$D$nginx_dir/placeholder.key" ]; then
	(umask 077 && head -c 80 /dev/urandom >"$D$nginx_dir/placeholder.key.tmp")
	mv "$D$nginx_dir/placeholder.key.tmp" "$D$nginx_dir/placeholder.key"
fi
chown root:root "$D$nginx_dir/placeholder.key"
chmod 0600 "$D$nginx_dir/placeholder.key"
# The window: Agent's directory, the workers' group (setgid: Agent's files get it), nobody else.
install -d -m 0755 -o root -g root "$D/var/lib/ticketkeys"
install -d -m 2750 -o "$agent_user" -g "$nginx_group" "$D$window_dir"
chmod 2750 "$D$window_dir"
install -d -m 0750 -o root -g "$agent_group" "$D$agent_dir"

for f in ticketkeys.conf stream.conf window.ctmpl agent.hcl; do
	render "$here/$f" >"$work/$f"
done
place "$work/ticketkeys.conf" "$nginx_dir/ticketkeys.conf" 0644
place "$work/stream.conf" "$nginx_dir/stream.conf" 0644
place "$work/window.ctmpl" "$agent_dir/window.ctmpl" 0640 "$agent_group"
place "$work/agent.hcl" "$agent_dir/agent.hcl" 0640 "$agent_group"

echo "install.sh: installed resty.ticketkeys for keyring $keyring at $mount/ (window file $window_dir/$keyring.window, ssl_session_timeout $session_timeout)${D:+ under DESTDIR $D (the paths in the files and the manifest are the target's)}"
[ "$kept" -eq 0 ] || echo "install.sh: $kept edited file(s) kept; see the .new files above" >&2
# Earlier versions had Agent render the window into $nginx_dir: the new snippets read $window_dir.
for old in "$D$nginx_dir"/*.window; do
	[ -e "$old" ] || continue
	echo "install.sh: NOTE: ${old#"$D"} is where earlier versions rendered the window; the snippets now read $window_dir: restart Vault Agent (it renders there) before you reload nginx, then remove ${old#"$D"}" >&2
done
case $vault_addr in
*vault.example.com*) echo "install.sh: NOTE: $agent_dir/agent.hcl points at the placeholder $vault_addr; re-run with -a https://YOUR-VAULT:8200" >&2 ;;
esac
cat <<EOF
next:
  1. on a Vault admin shell: bootstrap/node-approle.sh $keyring \$(hostname) $agent_dir $mount   (or copy role-id and secret-id here)
  2. nginx.conf: user $nginx_user; (its group $nginx_group reads the window), the load_module lines, and the includes (docs/nginx-lua.md)
  3. vault agent -config=$agent_dir/agent.hcl   (as $agent_user: it writes only $window_dir; never give it $nginx_dir)
  4. nginx -t && nginx -s reload
EOF
