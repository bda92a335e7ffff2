package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bftmon/bftmon/store"
)

// Errors of a restore, telling the caller what to answer CometBFT.
var (
	// ErrFormat: the snapshot's format is not one this version reads.
	ErrFormat = errors.New("unknown snapshot format")
	// ErrSnapshot: the snapshot is malformed; try another.
	ErrSnapshot = errors.New("malformed snapshot")
	// ErrChunkHash: a chunk does not match its hash; fetch it again,
	// from another peer.
	ErrChunkHash = errors.New("chunk does not match its hash in the snapshot metadata")
	// ErrAppHash: the restored state's root is not the app hash the
	// network agreed on. The store now holds it: the node must stop and its
	// data directory be emptied.
	ErrAppHash = errors.New("restored state's root is not the agreed app hash")
)

// Restorer restores one snapshot into an empty store, chunk by chunk.
type Restorer struct {
	st      *store.Store
	info    Info
	hashes  [][]byte
	appHash []byte
	imp     *store.Importer
	next    uint32
	buf     []byte
}

// NewRestorer starts restoring the snapshot described by info into st,
// which must be empty; appHash is the app hash the network agreed on at
// the snapshot's height.
func NewRestorer(st *store.Store, info Info, appHash []byte) (*Restorer, error) {
	if info.Format != Format {
		return nil, fmt.Errorf("snapshot %d format %d (this node reads %d): %w", info.Height, info.Format, Format, ErrFormat)
	}
	var meta Metadata
	if err := json.Unmarshal(info.Metadata, &meta); err != nil {
		return nil, fmt.Errorf("snapshot %d: metadata: %v: %w", info.Height, err, ErrSnapshot)
	}
	if len(meta.ChunkHashes) != int(info.Chunks) || info.Chunks == 0 || !bytes.Equal(hashOf(meta.ChunkHashes), info.Hash) {
		return nil, fmt.Errorf("snapshot %d: %d chunks, %d chunk hashes, or its hash is not theirs: %w", info.Height, info.Chunks, len(meta.ChunkHashes), ErrSnapshot)
	}
	imp, err := st.Import(int64(info.Height))
	if err != nil {
		return nil, err
	}
	return &Restorer{st: st, info: info, hashes: meta.ChunkHashes, appHash: appHash, imp: imp}, nil
}

// Apply imports chunk index (chunks come in order). It returns done once
// the last chunk is imported and the restored root checked.
func (r *Restorer) Apply(index uint32, chunk []byte) (done bool, err error) {
	if index != r.next {
		return false, fmt.Errorf("snapshot %d: chunk %d while waiting for %d: %w", r.info.Height, index, r.next, ErrChunkHash)
	}
	if sum := sha256.Sum256(chunk); !bytes.Equal(sum[:], r.hashes[index]) {
		return false, fmt.Errorf("snapshot %d chunk %d: %w", r.info.Height, index, ErrChunkHash)
	}
	r.next++
	r.buf = append(r.buf, chunk...)
	for {
		n, used, ok, err := decodeNode(r.buf)
		if err != nil {
			return false, fmt.Errorf("snapshot %d chunk %d: %v: %w", r.info.Height, index, err, ErrSnapshot)
		}
		if !ok {
			break
		}
		if err := r.imp.Add(n); err != nil {
			return false, fmt.Errorf("snapshot %d chunk %d: %v: %w", r.info.Height, index, err, ErrSnapshot)
		}
		r.buf = r.buf[used:]
	}
	r.buf = bytes.Clone(r.buf)
	if r.next < r.info.Chunks {
		return false, nil
	}
	if len(r.buf) > 0 {
		return false, fmt.Errorf("snapshot %d: %d bytes after the last node: %w", r.info.Height, len(r.buf), ErrSnapshot)
	}
	if err := r.imp.Commit(); err != nil {
		return false, err
	}
	if got := r.st.Hash(); !bytes.Equal(got, r.appHash) {
		return false, fmt.Errorf("snapshot %d: root %X, agreed app hash %X: %w (empty the node's data directory and sync from other peers)", r.info.Height, got, r.appHash, ErrAppHash)
	}
	return true, nil
}

// Close abandons an unfinished restore.
func (r *Restorer) Close() {
	if r.next < r.info.Chunks {
		r.imp.Close()
	}
}
