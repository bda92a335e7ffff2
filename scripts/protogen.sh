#!/usr/bin/env bash
# Regenerates app/types/*.pb.go from app/types/*.proto with protoc (Debian's
# protobuf-compiler) and the gogofaster plugin from github.com/cosmos/gogoproto
# at the version go.mod requires.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
ver=$(go list -m -f '{{.Version}}' github.com/cosmos/gogoproto)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "github.com/cosmos/gogoproto/protoc-gen-gogofaster@$ver"
gogo=$(go list -m -f '{{.Dir}}' github.com/cosmos/gogoproto)
# protoc wants a file's path to match its package (bftmon.v1 → bftmon/v1/), while
# the repository keeps each .proto beside its .pb.go: stage a copy.
src=$(mktemp -d); out=$(mktemp -d)
trap 'rm -rf "$bin" "$src" "$out"' EXIT
mkdir -p "$src/bftmon/v1" && cp app/types/*.proto "$src/bftmon/v1/"
PATH="$bin:$PATH" protoc -I "$src" -I "$gogo" -I "$gogo/protobuf" \
  --gogofaster_out=Mgoogle/protobuf/descriptor.proto=github.com/cosmos/gogoproto/protoc-gen-gogo/descriptor:"$out" \
  "$src"/bftmon/v1/*.proto
cp "$out"/github.com/bftmon/bftmon/app/types/*.pb.go app/types/
echo "regenerated: $(ls app/types/*.pb.go | tr '\n' ' ')"
