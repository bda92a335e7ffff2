# Shared by the fault scripts of the local cluster (docker-compose.yml at the
# top of the repository). Sourced, not run. Honours COMPOSE_PROJECT_NAME and
# COMPOSE_FILE like compose does; runs compose from the repository's top.

set -euo pipefail
# A failure inside $(...) ends the script too (die in container, say), not
# only the subshell: without it a missing cluster went on to docker errors.
shopt -s inherit_errexit
BFTMON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
NODES=(node0 node1 node2 node3)
DCS=(dc1 dc2)
TARGETS=(target-dc1 target-dc2)
declare -A DC_NODES=([dc1]="node0 node1" [dc2]="node2 node3")

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# compose runs docker-compose (1.29) or, without it, the docker compose plugin.
compose() {
	if command -v docker-compose >/dev/null; then
		(cd "$BFTMON_ROOT" && docker-compose "$@")
	else
		(cd "$BFTMON_ROOT" && docker compose "$@")
	fi
}

# one_of WHAT VALUE LIST...: VALUE must be in LIST, else say which exist.
one_of() {
	local what=$1 v=$2
	shift 2
	for x in "$@"; do [ "$x" = "$v" ] && return 0; done
	die "unknown $what '$v': the local cluster has $*"
}

# container SERVICE: the id of the service's container (it must exist).
container() {
	local id
	id="$(compose ps -q "$1" 2>/dev/null | head -n1)"
	[ -n "$id" ] || die "no container for $1: is the cluster up? (docker-compose up -d)"
	echo "$id"
}

# network NAME: the compose network NAME (dc1, dc2, backbone) of this project.
network() {
	local c project id
	c="$(container node0)"
	project="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$c")"
	id="$(docker network ls -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.network=$1")"
	[ -n "$id" ] || die "no network $1 in compose project $project"
	echo "$id"
}

# attached SERVICE NETWORK: whether the service's container is on the network.
attached() {
	on "$(container "$1")" "$(network "$2")"
}

# on CONTAINER-ID NETWORK-ID: whether the container is on the network.
on() {
	docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$v.NetworkID}} {{end}}' "$1" | grep -q "$2"
}

# address SERVICE NETWORK: the fixed address docker-compose.yml gives the
# service on the network (keep the two in step).
address() {
	local net host
	case $2 in backbone) net=0 ;; dc1) net=1 ;; dc2) net=2 ;; *) die "no network $2" ;; esac
	case $1 in
	node[0-9]) host=1${1#node} ;;
	target-dc1) host=21 ;;
	target-dc2) host=22 ;;
	webhook) host=30 ;;
	*) die "no fixed address for $1" ;;
	esac
	echo "${BFTMON_NET:-10.213}.$net.$host"
}

# disconnect NETWORK SERVICE..., connect NETWORK SERVICE...: take the
# services' containers off the network or put them back; idempotent.
# connect gives each container back its fixed address (the peers dial it
# there) and the service name as its alias (the probes and the webhook
# resolve it). Every name is resolved before the first change, so the
# changes follow one another closely: each question to compose takes about
# half a second, and while `cut.sh DC peers` has cut one of DC's nodes but
# not yet the other, the network still commits with 3 of 4.
disconnect() {
	local net=$1 netid i
	shift
	netid="$(network "$net")"
	local ids=()
	for i in "$@"; do ids+=("$(container "$i")"); done
	for i in "${!ids[@]}"; do
		if on "${ids[$i]}" "$netid"; then
			docker network disconnect "$netid" "${ids[$i]}"
			echo "disconnected ${*:i+1:1} from $net"
		else
			echo "${*:i+1:1} is not on $net already"
		fi
	done
}
connect() {
	local net=$1 netid i
	shift
	netid="$(network "$net")"
	local ids=() addrs=()
	for i in "$@"; do
		ids+=("$(container "$i")")
		addrs+=("$(address "$i" "$net")")
	done
	for i in "${!ids[@]}"; do
		if on "${ids[$i]}" "$netid"; then
			echo "${*:i+1:1} is on $net already"
		else
			docker network connect --ip "${addrs[$i]}" --alias "${*:i+1:1}" "$netid" "${ids[$i]}"
			echo "connected ${*:i+1:1} to $net"
		fi
	done
}
