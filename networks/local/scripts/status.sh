#!/usr/bin/env bash
# Each node's status (height, committing, peers) and the demo service's
# agreed health, asked inside the containers: works while a node's published
# port is cut off too. Exits non-zero if a node is not committing.
source "$(dirname "$0")/lib.sh"
rc=0
for n in "${NODES[@]}"; do
	printf '%s: ' "$n"
	id="$(compose ps -q "$n" 2>/dev/null | head -n1)"
	if [ -z "$id" ] || [ "$(docker inspect -f '{{.State.Running}}' "$id")" != true ]; then
		echo "not running"; rc=1; continue
	fi
	docker exec "$id" /bftmon status --addr 127.0.0.1:8500 2>&1 | tail -n +2 || rc=1
done
id="$(compose ps -q node0 2>/dev/null | head -n1)"
[ -n "$id" ] && { docker exec "$id" /bftmon health demo --addr 127.0.0.1:8500 || true; }
exit $rc
