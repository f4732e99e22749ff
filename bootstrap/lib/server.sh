# server.sh: what the bootstrap scripts need to know about the server they
# drive, Vault or OpenBao. Source it; it is not a command of its own.
#
# The two take the same CLI commands and serve the same API. They differ in:
# - the CLI: `vault` or `bao` ($VAULT; by default `vault` when it is on PATH,
#   else `bao`);
# - the environment: `bao` reads BAO_ADDR and BAO_TOKEN first, then
#   VAULT_ADDR and VAULT_TOKEN; `vault` reads only the VAULT_* names;
# - audit devices: OpenBao refuses to enable one over the API ("cannot enable
#   audit device via API; use declarative, config-based audit device
#   management instead"); it is an `audit` stanza of the server's
#   configuration file, applied at start and on SIGHUP (bootstrap/audit.sh).
# Plugin registration (sys/plugins/catalog by sha256 and version), mounts,
# tuning, plugin reload, policies, AppRole and Agent are the same on both.

if [[ -z ${VAULT:-} ]]; then
	if command -v vault >/dev/null 2>&1 || ! command -v bao >/dev/null 2>&1; then VAULT=vault; else VAULT=bao; fi
fi

# server_addr: the server address the CLI will use ($BAO_ADDR first for
# `bao`, as `bao` reads it; then $VAULT_ADDR); empty when neither is set.
server_addr() {
	if [[ $(basename "$VAULT") == bao* && -n ${BAO_ADDR:-} ]]; then
		echo "$BAO_ADDR"
	else
		echo "${VAULT_ADDR:-}"
	fi
}

# server_kind: "vault" or "openbao", the server at server_addr. TICKETKEYS_SERVER
# (vault or openbao) overrides the detection. Otherwise the server's version
# in sys/seal-status (`$VAULT status`, unauthenticated) decides: OpenBao's
# releases are 2.x and later and report commit_date, Vault's are 1.x and
# report build_date only.
server_kind() {
	case ${TICKETKEYS_SERVER:-} in
	vault | openbao) echo "$TICKETKEYS_SERVER"; return 0 ;;
	"") ;;
	*) echo "TICKETKEYS_SERVER=$TICKETKEYS_SERVER: want vault or openbao" >&2; return 1 ;;
	esac
	local status version
	# status exits 2 on a sealed server but still prints it.
	status=$("$VAULT" status -format=json 2>/dev/null) || [[ $? -eq 2 ]] || {
		echo "cannot read the server's status at $(server_addr) with $VAULT; set TICKETKEYS_SERVER=vault or openbao to skip the detection" >&2
		return 1
	}
	version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' <<<"$status" | head -n 1)
	if [[ $status == *'"commit_date"'* || $version =~ ^v?([2-9]|[1-9][0-9]+)\. ]]; then
		echo openbao
	elif [[ -n $version ]]; then
		echo vault
	else
		echo "the server at $(server_addr) reported no version; set TICKETKEYS_SERVER=vault or openbao" >&2
		return 1
	fi
}
