package node

// CheckGenesis and NoteGenesis let tests reach the start-up checks.
var (
	CheckGenesis = checkGenesis
	NoteGenesis  = noteGenesis
)

// CheckKeyFiles lets tests reach the key files' check.
var CheckKeyFiles = checkKeyFiles

// PeerAddr lets tests reach how join reads a node's P2P listen address.
var PeerAddr = peerAddr
