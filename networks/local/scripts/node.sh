#!/usr/bin/env bash
# Kill, restart or make a node lie:
#   node.sh NODE kill              SIGKILL (no clean shutdown)
#   node.sh NODE stop              SIGTERM, clean stop
#   node.sh NODE start             start it again (its home is kept)
#   node.sh NODE restart           kill, then start
#   node.sh NODE byzantine MODE    recreate it running `start --byzantine=MODE`
#   node.sh NODE honest            recreate it honest again
# MODE is one of node/byzantine.go's ByzantineModes (bftmon start --help
# does not list the hidden flag; docs/TESTING.md does).
source "$(dirname "$0")/lib.sh"
MODES=(always-critical always-passing invert random replay equivocate garbage flood stuff-blocks forge-receipts)
[ $# -ge 2 ] || die "usage: node.sh NODE kill|stop|start|restart|byzantine MODE|honest   (NODE: ${NODES[*]})"
one_of node "$1" "${NODES[@]}"
node=$1
var="BFTMON_BYZANTINE_$(echo "$node" | tr a-z A-Z)"
case $2 in
kill) compose kill "$node" ;;
stop) compose stop "$node" ;;
start) compose start "$node" ;;
restart) compose kill "$node" && compose start "$node" ;;
byzantine)
	[ $# -eq 3 ] || die "usage: node.sh NODE byzantine MODE   (MODE: ${MODES[*]})"
	one_of "byzantine mode" "$3" "${MODES[@]}"
	env "$var=$3" "$BASH" -c "source '$(dirname "$0")/lib.sh'; compose up -d --no-deps $node"
	echo "$node now runs with --byzantine=$3 ($var=$3); node.sh $node honest undoes it"
	;;
honest)
	env "$var=" "$BASH" -c "source '$(dirname "$0")/lib.sh'; compose up -d --no-deps $node"
	echo "$node is honest again"
	;;
*) die "unknown action '$2': kill, stop, start, restart, byzantine MODE, honest" ;;
esac
