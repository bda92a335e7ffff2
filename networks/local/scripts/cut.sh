#!/usr/bin/env bash
# Cut a datacenter off: `cut.sh DC targets` takes DC's observers off the
# network they probe through (they see every target fail; consensus goes on
# over the backbone); `cut.sh DC peers` takes DC's nodes off the backbone
# (no consensus with the other datacenter: with 2 of 4 validators on each
# side, blocks stop until `heal.sh DC peers`).
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || die "usage: cut.sh DC targets|peers   (DC: ${DCS[*]})"
one_of datacenter "$1" "${DCS[@]}"
one_of "cut" "$2" targets peers
net=$1
[ "$2" = peers ] && net=backbone
# shellcheck disable=SC2086 # DC_NODES holds a list
disconnect "$net" ${DC_NODES[$1]}
