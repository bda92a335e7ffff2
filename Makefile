# The handful of commands a developer needs.
.PHONY: build test test-all proto lint bench fuzz dev image

build:
	CGO_ENABLED=0 go build -o bin/bftmon ./cmd/bftmon

# The fast suite: multi-process networks, Docker and long runs skip under -short.
test:
	go test -short -race -count=1 ./...

# The whole suite, as CI runs it (the README's test command).
test-all:
	go test -race -count=1 ./...

proto:
	./scripts/protogen.sh

lint:
	go vet ./...
	test -z "$$(gofmt -l .)"

bench:
	go test -run '^$$' -bench . -benchmem ./app/... ./abci/

fuzz:
	go test -run '^$$' -fuzz FuzzDecodeTx -fuzztime 30s ./abci/
	go test -run '^$$' -fuzz FuzzFinalizeBlock -fuzztime 30s ./abci/
	go test -run '^$$' -fuzz FuzzProcessProposal -fuzztime 30s ./abci/

dev:
	go run ./cmd/bftmon dev

# The image bftmon:local FROM scratch (static binary built here first), for
# docker-compose.yml: make image && docker-compose up -d
image:
	./networks/local/build.sh
