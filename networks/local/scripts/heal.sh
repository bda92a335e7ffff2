#!/usr/bin/env bash
# Undo cut.sh: `heal.sh DC targets|peers|all`.
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || die "usage: heal.sh DC targets|peers|all   (DC: ${DCS[*]})"
one_of datacenter "$1" "${DCS[@]}"
one_of "cut" "$2" targets peers all
for n in ${DC_NODES[$1]}; do
	case $2 in
	targets) connect "$n" "$1" ;;
	peers) connect "$n" backbone ;;
	all) connect "$n" "$1"; connect "$n" backbone ;;
	esac
done
