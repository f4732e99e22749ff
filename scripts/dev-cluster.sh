#!/usr/bin/env bash
# dev-cluster.sh (`make dev-cluster`): a throw-away 3-node Vault cluster on
# 127.0.0.1 the way docs/production.md sets one up: integrated storage (Raft)
# joined with retry_join, TLS on every listener (a fresh CA made with
# openssl), the plugin from this checkout in every node's plugin_directory,
# registered once by sha256 and version, a file audit device, the operator
# policy, a demo keyring "web" and an AppRole for a demo node, and the
# load balancer production.md puts in front of the nodes (HAProxy in TCP mode
# with the /v1/sys/health?standbyok=true check), whose address it prints as
# VAULT_ADDR: clients must not stick to one node.
#
# It prints how to use the cluster and stays in the foreground until Ctrl-C,
# then stops every server by its PID and removes its temporary directory.
# "dev-cluster: ready" on stdout marks the end of the set-up (a test waits
# for it).
#
# The unseal key and the root token go to files of mode 0600 in the
# cluster's directory (unseal-key, root-token), never onto a command line
# (where `ps` shows them to every user) nor onto the terminal: the printed
# usage reads the token from its file.
#
# Environment: TICKETKEYS_DEV_CLUSTER_PORT (default 8210) is node0's API port;
# node N listens on PORT+10*N (API) and PORT+10*N+1 (cluster traffic), and the
# load balancer on PORT-10 (default 8200, as in production.md), all on
# 127.0.0.1. VAULT_BIN, when set, is the Vault binary (default: the pinned
# build of scripts/vault-build.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=${TICKETKEYS_DEV_CLUSTER_PORT:-8210}
[[ $base =~ ^[0-9]+$ && $base -ge 1034 && $base -le 65500 ]] || { echo "dev-cluster.sh: TICKETKEYS_DEV_CLUSTER_PORT=$base: want a port 1034..65500" >&2; exit 1; }
command -v openssl >/dev/null || { echo "dev-cluster.sh: openssl is needed for the TLS certificates" >&2; exit 1; }
haproxy_bin=${HAPROXY_BIN:-/usr/sbin/haproxy}
[[ -x $haproxy_bin ]] || { echo "dev-cluster.sh: $haproxy_bin not found: the load balancer is HAProxy (apt-get install haproxy, or set HAPROXY_BIN)" >&2; exit 1; }
lb_port=$((base - 10))

vault_bin=${VAULT_BIN:-$(cd "$root" && scripts/vault-build.sh)}
work=$(mktemp -d "${TMPDIR:-/tmp}/ticketkeys-dev-cluster.XXXXXX")
nodes=(node0 node1 node2)
pids=()

stop() {
	local pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

api_port() { echo $((base + 10 * $1)); }
addr() { echo "https://127.0.0.1:$(api_port "$1")"; }
lb_addr=https://127.0.0.1:$lb_port

# The plugin, built once and installed in every node's plugin directory.
plugin_build=$work/vault-plugin-secrets-ticketkeys
(cd "$root" && go build -o "$plugin_build" ./cmd/vault-plugin-secrets-ticketkeys)

# A CA and one listener certificate for 127.0.0.1 and localhost.
tls=$work/tls
mkdir -m 0700 "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj "/CN=ticketkeys dev-cluster CA" -keyout "$tls/ca-key.pem" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
	-keyout "$tls/key.pem" -out "$tls/server.csr" 2>/dev/null
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" -CAcreateserial -days 1 \
	-extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n') \
	-out "$tls/cert.pem" 2>/dev/null

for i in 0 1 2; do
	n=${nodes[$i]}
	dir=$work/$n
	mkdir -p -m 0700 "$dir/raft" "$dir/plugins"
	cp "$plugin_build" "$dir/plugins/"
	joins=
	for j in 0 1 2; do
		[[ $j -eq $i ]] && continue
		joins+="
  retry_join {
    leader_api_addr     = \"$(addr "$j")\"
    leader_ca_cert_file = \"$tls/ca.pem\"
  }"
	done
	cat >"$dir/vault.hcl" <<HCL
storage "raft" {
  path                   = "$dir/raft"
  node_id                = "$n"
  performance_multiplier = 1
$joins
}

listener "tcp" {
  address         = "127.0.0.1:$(api_port "$i")"
  cluster_address = "127.0.0.1:$(($(api_port "$i") + 1))"
  tls_cert_file   = "$tls/cert.pem"
  tls_key_file    = "$tls/key.pem"
  tls_min_version = "tls12"
}

api_addr         = "$(addr "$i")"
cluster_addr     = "https://127.0.0.1:$(($(api_port "$i") + 1))"
plugin_directory = "$dir/plugins"
disable_mlock    = true
ui               = false
HCL
	"$vault_bin" server -config="$dir/vault.hcl" >"$dir/vault.log" 2>&1 &
	pids+=($!)
done

# The load balancer of production.md ("a load balancer with a health check"): TCP mode, TLS passes through,
# only nodes that answer /v1/sys/health?standbyok=true with 200 (active or unsealed standby) get clients.
cat >"$work/haproxy.cfg" <<CFG
global
  maxconn 256
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
frontend vault
  bind 127.0.0.1:$lb_port
  default_backend vault_nodes
backend vault_nodes
  balance roundrobin
  option httpchk GET /v1/sys/health?standbyok=true
  http-check expect status 200
  default-server check check-ssl verify required ca-file $tls/ca.pem check-sni localhost inter 500ms fall 1 rise 1
  server node0 127.0.0.1:$(api_port 0)
  server node1 127.0.0.1:$(api_port 1)
  server node2 127.0.0.1:$(api_port 2)
CFG
"$haproxy_bin" -c -q -f "$work/haproxy.cfg" || { echo "dev-cluster.sh: HAProxy rejects $work/haproxy.cfg" >&2; exit 1; }
"$haproxy_bin" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
lb_pid=$!

export VAULT=$vault_bin VAULT_CACERT=$tls/ca.pem
# on N CMD...: run CMD against node N.
on() {
	local i=$1
	shift
	VAULT_ADDR=$(addr "$i") "$@"
}

for i in 0 1 2; do
	for _ in $(seq 1 300); do
		# `vault status` exits 2 while sealed: any answer will do.
		rc=0
		on "$i" "$vault_bin" status >/dev/null 2>&1 || rc=$?
		[[ $rc -ne 1 ]] && break
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			echo "dev-cluster.sh: ${nodes[$i]} exited at start; its log:" >&2
			tail -n 40 "$work/${nodes[$i]}/vault.log" >&2
			exit 1
		fi
		sleep 0.2
	done
done

# Initialise node0 with one key share (a demo: production uses more shares or auto-unseal).
# The key and the token stay in this shell's memory and in 0600 files: they
# are never an argument of a command (visible in `ps`) nor printed.
init=$(on 0 "$vault_bin" operator init -key-shares=1 -key-threshold=1)
unseal_key=$(awk '/^Unseal Key 1:/ { print $4 }' <<<"$init")
root_token=$(awk '/^Initial Root Token:/ { print $4 }' <<<"$init")
init=
[[ -n $unseal_key && -n $root_token ]] || { echo "dev-cluster.sh: operator init gave no unseal key or root token" >&2; exit 1; }
(
	umask 077
	printf '%s' "$unseal_key" >"$work/unseal-key"
	printf '%s' "$root_token" >"$work/root-token"
)
# unseal N: unseal node N with the key file (`vault write` reads key=@FILE itself).
unseal() { on "$1" "$vault_bin" write -format=json sys/unseal key=@"$work/unseal-key"; }

unseal 0 >/dev/null
# node1 and node2 finish their retry_join when they are unsealed; until they
# have fetched the join challenge from node0, unseal fails: retry.
for i in 1 2; do
	for _ in $(seq 1 120); do
		if unseal "$i" >/dev/null 2>&1 &&
			[[ $(on "$i" "$vault_bin" status -format=json 2>/dev/null | grep -c '"sealed": false') -eq 1 ]]; then
			break
		fi
		sleep 0.5
	done
done

export VAULT_ADDR=$(addr 0) VAULT_TOKEN=$root_token
"$vault_bin" operator raft autopilot set-config -server-stabilization-time=2s >/dev/null
healthy=false
for _ in $(seq 1 180); do
	if [[ $("$vault_bin" read -field=healthy sys/storage/raft/autopilot/state 2>/dev/null) == true ]] &&
		[[ $("$vault_bin" operator raft list-peers 2>/dev/null | awk 'NR > 2 && $4 == "true"' | wc -l) -eq 3 ]]; then
		healthy=true
		break
	fi
	sleep 0.5
done
$healthy || { echo "dev-cluster.sh: the cluster did not become healthy within 90s" >&2; "$vault_bin" operator raft list-peers >&2 || true; exit 1; }

# From here on, every command goes through the load balancer, as production.md tells clients to.
export VAULT_ADDR=$lb_addr
lb_ok=false
for _ in $(seq 1 60); do
	if "$vault_bin" read -field=healthy sys/storage/raft/autopilot/state >/dev/null 2>&1; then
		lb_ok=true
		break
	fi
	kill -0 "$lb_pid" 2>/dev/null || { echo "dev-cluster.sh: HAProxy exited; its log:" >&2; tail -n 20 "$work/haproxy.log" >&2; exit 1; }
	sleep 0.5
done
$lb_ok || { echo "dev-cluster.sh: the load balancer at $lb_addr did not answer within 30s; its log:" >&2; tail -n 20 "$work/haproxy.log" >&2; exit 1; }

"$root/bootstrap/audit.sh" "$work/audit.log"
"$root/bootstrap/register.sh" "$work/node0/plugins/vault-plugin-secrets-ticketkeys"
"$vault_bin" policy write ticketkeys-operator "$root/bootstrap/policies/ticketkeys-operator.hcl" >/dev/null
"$vault_bin" write ticketkeys/keys/web rotation_period=5m retain=1h >/dev/null
echo "created keyring web (rotation_period 5m, retain 1h)"
mkdir -m 0700 "$work/web-1"
"$root/bootstrap/node-approle.sh" web web-1 "$work/web-1" >/dev/null
echo "AppRole ticketkeys-web-1 for a demo node: $work/web-1/role-id and secret-id"

cat <<MSG

Vault cluster of 3 nodes (pids ${pids[*]:0:3}), TLS with CA $tls/ca.pem:
  node0 $(addr 0) (active)   node1 $(addr 1)   node2 $(addr 2)
Load balancer (HAProxy, pid $lb_pid, config $work/haproxy.cfg): $lb_addr
Root token: $work/root-token   Unseal key: $work/unseal-key   (files of mode 0600)
In another shell:

  export VAULT_ADDR=$lb_addr VAULT_CACERT=$tls/ca.pem VAULT_TOKEN=\$(cat $work/root-token)   # the load balancer
  alias vault=$vault_bin
  vault operator raft list-peers                    # three nodes, Voter true
  vault read sys/storage/raft/autopilot/state       # healthy, failure_tolerance 1
  vault read ticketkeys/keys/web format=haproxy     # a standby behind it forwards to the active node
  vault read ticketkeys/keys/web/history
  # snapshots and step-down go to the active node (a standby cannot stream a snapshot)
  VAULT_ADDR=\$(vault read -field=leader_address sys/leader) vault operator raft snapshot save $work/ticketkeys.snap
  VAULT_ADDR=\$(vault read -field=leader_address sys/leader) vault operator step-down

Node logs: $work/node{0,1,2}/vault.log   Load balancer log: $work/haproxy.log   Audit log: $work/audit.log
Ctrl-C stops the cluster and removes $work.
dev-cluster: ready
MSG

wait "${pids[@]}"
