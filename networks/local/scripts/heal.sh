#!/usr/bin/env bash
# Undo cut.sh: `heal.sh DC targets|peers|all`.
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || die "usage: heal.sh DC targets|peers|all   (DC: ${DCS[*]})"
one_of datacenter "$1" "${DCS[@]}"
one_of "cut" "$2" targets peers all
# shellcheck disable=SC2086 # DC_NODES holds a list
case $2 in
targets) connect "$1" ${DC_NODES[$1]} ;;
peers) connect backbone ${DC_NODES[$1]} ;;
all) connect "$1" ${DC_NODES[$1]}; connect backbone ${DC_NODES[$1]} ;;
esac
