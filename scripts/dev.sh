#!/usr/bin/env bash
# dev.sh (`make dev`): a throw-away Vault dev server on 127.0.0.1 with the
# plugin from this checkout, a file audit device and a demo keyring "web".
#
# It builds the plugin, starts `vault server -dev` in the background (root
# token "root", in-memory storage), registers the plugin by sha256 and
# version and enables it at ticketkeys/ (bootstrap/register.sh), enables a
# file audit device (bootstrap/audit.sh), creates keyring web and prints how
# to use it. It stays in the foreground until Ctrl-C, then stops Vault by its
# PID and removes its temporary directory.
#
# Environment: TICKETKEYS_DEV_ADDR (default 127.0.0.1:8200) is the listen
# address; it must be a 127.0.0.1 address. SERVER=openbao (`make dev
# SERVER=openbao`) runs OpenBao 2.6.2 (scripts/openbao-build.sh) instead of
# Vault: the same plugin binary, register.sh and keyring; the audit device is
# declared in a configuration file given to `bao server -dev -config=...`
# (bootstrap/audit.sh with SERVER_CONFIG), since OpenBao refuses sys/audit
# over the API.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
listen=${TICKETKEYS_DEV_ADDR:-127.0.0.1:8200}
[[ $listen == 127.0.0.1:* ]] || { echo "dev.sh: TICKETKEYS_DEV_ADDR=$listen: want 127.0.0.1:PORT" >&2; exit 1; }

server=${SERVER:-vault}
case $server in
vault) vault_bin=$(cd "$root" && scripts/vault-build.sh) title=Vault ;;
openbao) vault_bin=$(cd "$root" && scripts/openbao-build.sh) title=OpenBao ;;
*) echo "dev.sh: SERVER=$server: want vault or openbao" >&2; exit 1 ;;
esac
work=$(mktemp -d "${TMPDIR:-/tmp}/ticketkeys-dev.XXXXXX")
mkdir "$work/plugins"
plugin=$work/plugins/vault-plugin-secrets-ticketkeys
echo "dev.sh: building the plugin ..." >&2
if ! (cd "$root" && go build -o "$plugin" ./cmd/vault-plugin-secrets-ticketkeys) >"$work/build.log" 2>&1; then
	echo "dev.sh: building the plugin failed:" >&2
	tail -n 40 "$work/build.log" >&2
	rm -rf "$work"
	exit 1
fi
echo "dev.sh: starting $title on $listen ..." >&2

vault_pid=
stop() {
	if [[ -n $vault_pid ]] && kill -0 "$vault_pid" 2>/dev/null; then
		kill -TERM "$vault_pid" 2>/dev/null || true
		wait "$vault_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

# -dev-plugin-dir also registers the binary under its file name, unversioned;
# register.sh adds the versioned "ticketkeys" entry that the mount uses.
export VAULT_ADDR=http://$listen VAULT_TOKEN=root VAULT=$vault_bin
dev_config=()
if [[ $server == openbao ]]; then
	# bao reads BAO_* first: set them, so that no BAO_ADDR of the caller wins.
	export BAO_ADDR=$VAULT_ADDR BAO_TOKEN=root
	# The audit device, declared before the start (audit.sh appends it to
	# the configuration file that `bao server -dev` merges with its own).
	echo "# dev.sh: added to bao server -dev's own configuration" >"$work/openbao.hcl"
	TICKETKEYS_SERVER=openbao SERVER_CONFIG="$work/openbao.hcl" "$root/bootstrap/audit.sh" "$work/audit.log" >/dev/null
	echo "declared a file audit device at file/ writing $work/audit.log in $work/openbao.hcl (applied at start)"
	dev_config=(-config="$work/openbao.hcl")
fi
"$vault_bin" server -dev -dev-root-token-id=root -dev-listen-address="$listen" \
	-dev-plugin-dir="$work/plugins" "${dev_config[@]}" >"$work/vault.log" 2>&1 &
vault_pid=$!

for _ in $(seq 1 300); do
	if "$vault_bin" status >/dev/null 2>&1; then break; fi
	if ! kill -0 "$vault_pid" 2>/dev/null; then
		echo "dev.sh: $title exited at start; its log:" >&2
		tail -n 40 "$work/vault.log" >&2
		exit 1
	fi
	sleep 0.2
done
"$vault_bin" status >/dev/null || { echo "dev.sh: $title did not answer at $VAULT_ADDR within 60s" >&2; tail -n 40 "$work/vault.log" >&2; exit 1; }

"$root/bootstrap/register.sh" "$plugin"
if [[ $server == vault ]]; then
	"$root/bootstrap/audit.sh" "$work/audit.log"
fi
"$vault_bin" write ticketkeys/keys/web rotation_period=5m retain=1h >/dev/null
echo "created keyring web (rotation_period 5m, retain 1h)"

cat <<MSG

$title dev server (pid $vault_pid) at $VAULT_ADDR, root token "root". In another shell:

  export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=root BAO_ADDR=$VAULT_ADDR BAO_TOKEN=root
  alias vault=$vault_bin
  vault read ticketkeys/keys/web                  # nginx layout (default)
  vault read ticketkeys/keys/web format=haproxy   # HAProxy layout and tls_ticket_keys lines
  vault read ticketkeys/keys/web format=envoy
  vault read ticketkeys/keys/web format=go
  vault write ticketkeys/keys/web/rotate mode=scheduled
  vault read ticketkeys/keys/web/history

Server log: $work/vault.log   Audit log: $work/audit.log
Ctrl-C stops $title and removes $work.
MSG

wait "$vault_pid"
