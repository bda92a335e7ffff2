#!/usr/bin/env bash
# Build the static bftmon binary on this machine and the image bftmon:local
# FROM scratch around it, in one step. Usage: networks/local/build.sh [TAG]
# (env BFTMON_IMAGE also names the tag). Then: docker-compose up -d
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag="${1:-${BFTMON_IMAGE:-bftmon:local}}"
certs="${CA_CERTIFICATES:-/etc/ssl/certs/ca-certificates.crt}"

command -v go >/dev/null || { echo "build.sh: no go on PATH: install Go (see go.mod for the version)" >&2; exit 1; }
command -v docker >/dev/null || { echo "build.sh: no docker on PATH: install Docker Engine" >&2; exit 1; }
[ -r "$certs" ] || { echo "build.sh: no CA certificates at $certs: install Debian's ca-certificates, or set CA_CERTIFICATES=FILE" >&2; exit 1; }

mkdir -p "$here/build/net"
: > "$here/build/net/.keep"
cp "$certs" "$here/build/ca-certificates.crt"
echo "build.sh: building the static binary (CGO_ENABLED=0) ..."
version="$(git -C "$root" describe --always --dirty 2>/dev/null || echo dev)"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/bftmon/bftmon/node.Version=$version" -o "$here/build/bftmon" ./cmd/bftmon)
echo "build.sh: building the image $tag ..."
docker build -q -t "$tag" -f "$here/Dockerfile" "$here" >/dev/null
size="$(docker image inspect -f '{{.Size}}' "$tag")"
echo "build.sh: built $tag ($((size / 1024 / 1024)) MiB, bftmon $version). Start the local cluster with: docker-compose up -d"
