#!/usr/bin/env bash
# Make a demo target fail its health check or heal it:
#   target.sh TARGET fail|heal     (TARGET: target-dc1, target-dc2)
# (bftmon demo-target fails on SIGUSR1 and heals on SIGUSR2.)
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || die "usage: target.sh TARGET fail|heal   (TARGET: ${TARGETS[*]})"
one_of target "$1" "${TARGETS[@]}"
one_of action "$2" fail heal
sig=USR1
[ "$2" = heal ] && sig=USR2
id="$(container "$1")"
docker kill -s "$sig" "$id" >/dev/null
echo "$1: told to $2 (SIG$sig); docker-compose logs $1 shows it"
