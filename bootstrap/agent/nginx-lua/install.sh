#!/bin/sh
# Installs resty.ticketkeys and its files on a Debian nginx node (run as root from the repository root):
#   - the Lua module under /usr/local/share/ticketkeys/lua/resty/
#   - /etc/nginx/ticketkeys/ (root:www-data 0750) with a random placeholder key (0600, read by the master)
#   - the snippets /etc/nginx/ticketkeys/ticketkeys.conf and stream.conf
#   - the Agent template /etc/vault-agent/ticketkeys/window.ctmpl
# It does not edit nginx.conf, install Vault Agent or create the AppRole: see docs/nginx-lua.md.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
nginx_user=${NGINX_USER:-www-data}

install -d -m 0755 /usr/local/share/ticketkeys/lua/resty
install -m 0644 "$repo/nginx/lib/resty/ticketkeys.lua" /usr/local/share/ticketkeys/lua/resty/ticketkeys.lua

install -d -m 0750 -o root -g "$nginx_user" /etc/nginx/ticketkeys
if [ ! -s /etc/nginx/ticketkeys/placeholder.key ]; then
    umask 077
    head -c 80 /dev/urandom > /etc/nginx/ticketkeys/placeholder.key.tmp
    mv /etc/nginx/ticketkeys/placeholder.key.tmp /etc/nginx/ticketkeys/placeholder.key
fi
install -m 0644 "$here/ticketkeys.conf" /etc/nginx/ticketkeys/ticketkeys.conf
install -m 0644 "$here/stream.conf" /etc/nginx/ticketkeys/stream.conf

install -d -m 0750 /etc/vault-agent/ticketkeys
install -m 0640 "$here/window.ctmpl" /etc/vault-agent/ticketkeys/window.ctmpl

echo "installed; next: load the modules and include the snippets (docs/nginx-lua.md), start Vault Agent with $here/agent.hcl"
