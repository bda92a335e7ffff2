package node

import (
	"context"
	"net/http"
)

// CheckGenesis and NoteGenesis let tests reach the start-up checks.
var (
	CheckGenesis = checkGenesis
	NoteGenesis  = noteGenesis
)

// CheckKeyFiles lets tests reach the key files' check.
var CheckKeyFiles = checkKeyFiles

// WaitPeerNames lets tests reach the wait for the peers' host names.
var WaitPeerNames = waitPeerNames

// SetLookupHost gives that wait a resolver of the test's own, until
// restore is called.
func SetLookupHost(f func(ctx context.Context, host string) ([]string, error)) (restore func()) {
	old := lookupHost
	lookupHost = f
	return func() { lookupHost = old }
}

// PeerAddr lets tests reach how join reads a node's P2P listen address.
var PeerAddr = peerAddr

// HonestAPI is n's HTTP API without the lying-api middleware, so that a
// test can compare a lying node's answers with the truth.
func HonestAPI(n *Node) http.Handler { return n.apiSrv }
