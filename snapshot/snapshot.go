// Package snapshot takes and restores state-sync snapshots of the
// application's IAVL store: every interval heights the committed tree is
// exported into chunk files under the node's data directory, each chunk's
// SHA-256 in the snapshot's metadata, so that a new node can start from a
// recent state instead of replaying blocks that peers have pruned.
package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/bftmon/bftmon/store"
)

// Format is the one snapshot format this package writes and reads: the
// IAVL export stream, each node as uvarint height, varint version,
// uvarint-length key and a value whose uvarint length is stored plus one (0:
// an inner node's nil value), cut into chunks of ChunkSize bytes.
const Format uint32 = 1

// ChunkSize is the size of every chunk but the last, unless set otherwise.
const ChunkSize = 4 << 20

// Keep is how many snapshots a Manager keeps.
const Keep = 2

// Info describes one snapshot, as ABCI's Snapshot carries it.
type Info struct {
	Height uint64 `json:"height"`
	Format uint32 `json:"format"`
	Chunks uint32 `json:"chunks"`
	// Hash is the SHA-256 of the chunk hashes concatenated.
	Hash []byte `json:"hash"`
	// Metadata is the JSON of Metadata.
	Metadata []byte `json:"metadata"`
}

// Metadata is what a snapshot's metadata holds.
type Metadata struct {
	// ChunkHashes is each chunk's SHA-256, in order.
	ChunkHashes [][]byte `json:"chunk_hashes"`
}

func hashOf(hashes [][]byte) []byte {
	h := sha256.New()
	for _, c := range hashes {
		h.Write(c)
	}
	return h.Sum(nil)
}

// Manager takes snapshots of a store every Interval heights and serves them.
type Manager struct {
	dir      string
	st       *store.Store
	interval int64
	chunk    int
	log      *slog.Logger

	mu     sync.Mutex
	busy   bool
	latest int64 // height of the newest complete snapshot (0: none)
	oldest int64 // height of the oldest snapshot kept (0: none)
	wg     sync.WaitGroup
}

// NewManager returns a manager keeping snapshots of st in dir, one every
// interval heights (0: none are taken, existing ones are still served).
func NewManager(dir string, st *store.Store, interval int64, logger *slog.Logger) (*Manager, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshots: create %s: %w (check the data directory's permissions)", dir, err)
	}
	m := &Manager{dir: dir, st: st, interval: interval, chunk: ChunkSize, log: logger}
	list, err := m.List()
	if err != nil {
		return nil, err
	}
	if len(list) > 0 {
		m.latest = int64(list[0].Height)
		m.oldest = int64(list[min(Keep, len(list))-1].Height)
	}
	return m, nil
}

// SetChunkSize sets the size of the chunks of snapshots taken from now on
// (tests use small ones to cut a state into many).
func (m *Manager) SetChunkSize(n int) { m.chunk = max(n, 1) }

// Interval is how many heights apart snapshots are taken (0: never).
func (m *Manager) Interval() int64 { return m.interval }

// Latest is the height of the newest complete snapshot (0: none).
func (m *Manager) Latest() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.latest
}

// Oldest is the height of the oldest snapshot kept and served (0: none).
// A peer may restore any snapshot it was told of, and it often was told
// some seconds before it asks (CometBFT's discovery_time), so the blocks
// after the oldest one must stay for it to go on from there.
func (m *Manager) Oldest() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.oldest
}

// Committed is called after each commit: at a multiple of the interval it
// starts taking a snapshot of that height in the background, unless one is
// still being taken, and holds that version of the store from pruning until
// the snapshot is written. It never blocks.
func (m *Manager) Committed(height int64) {
	if m.interval <= 0 || height%m.interval != 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.busy {
		m.log.Warn("snapshot skipped: the previous one is still being written", "height", height)
		return
	}
	// Hold the version now, in the commit that made it: the goroutine may
	// start after the next commits, one of which could prune it.
	release, err := m.st.Hold(height)
	if err != nil {
		m.log.Error("snapshot failed", "height", height, "err", err)
		return
	}
	m.busy = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer release()
		err := m.Take(height)
		m.mu.Lock()
		m.busy = false
		m.mu.Unlock()
		if err != nil {
			m.log.Error("snapshot failed", "height", height, "err", err)
		}
	}()
}

// Wait waits for a snapshot being taken in the background.
func (m *Manager) Wait() { m.wg.Wait() }

// Take writes a snapshot of the committed version height and removes all
// but the newest Keep snapshots.
func (m *Manager) Take(height int64) error {
	final := filepath.Join(m.dir, strconv.FormatInt(height, 10))
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("snapshot %d: %w", height, err)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("snapshot %d: %w (check the data directory)", height, err)
	}
	cw := &chunkWriter{dir: tmp, size: m.chunk}
	w := bufio.NewWriterSize(cw, 64<<10)
	var scratch []byte
	err := m.st.Export(height, func(n *store.ExportNode) error {
		scratch = encodeNode(scratch[:0], n)
		_, err := w.Write(scratch)
		return err
	})
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = cw.close()
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot %d: %w", height, err)
	}
	meta, _ := json.Marshal(Metadata{ChunkHashes: cw.hashes})
	info := Info{Height: uint64(height), Format: Format, Chunks: uint32(len(cw.hashes)), Hash: hashOf(cw.hashes), Metadata: meta}
	bz, _ := json.Marshal(info)
	if err := os.WriteFile(filepath.Join(tmp, "info.json"), bz, 0o644); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot %d: %w", height, err)
	}
	os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("snapshot %d: %w", height, err)
	}
	m.mu.Lock()
	m.latest = max(m.latest, height)
	m.mu.Unlock()
	m.log.Info("snapshot taken", "height", height, "chunks", info.Chunks)
	list, err := m.List()
	if err != nil {
		return err
	}
	kept := list[:min(Keep, len(list))]
	for _, old := range list[len(kept):] {
		if err := os.RemoveAll(filepath.Join(m.dir, strconv.FormatUint(old.Height, 10))); err != nil {
			return fmt.Errorf("remove snapshot %d: %w", old.Height, err)
		}
	}
	m.mu.Lock()
	m.oldest = int64(kept[len(kept)-1].Height)
	m.mu.Unlock()
	return nil
}

// List returns the complete snapshots, newest first.
func (m *Manager) List() ([]Info, error) {
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots in %s: %w", m.dir, err)
	}
	var out []Info
	for _, e := range ents {
		if _, err := strconv.ParseUint(e.Name(), 10, 64); err != nil || !e.IsDir() {
			continue // a .tmp being written, or not ours
		}
		bz, err := os.ReadFile(filepath.Join(m.dir, e.Name(), "info.json"))
		if err != nil {
			continue
		}
		var in Info
		if err := json.Unmarshal(bz, &in); err != nil {
			return nil, fmt.Errorf("snapshot %s: info.json: %w (remove the directory)", e.Name(), err)
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Info) int { return -cmpU(a.Height, b.Height) })
	return out, nil
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LoadChunk returns one chunk of a snapshot (nil if there is no such chunk).
func (m *Manager) LoadChunk(height uint64, format, chunk uint32) ([]byte, error) {
	if format != Format {
		return nil, nil
	}
	bz, err := os.ReadFile(filepath.Join(m.dir, strconv.FormatUint(height, 10), strconv.FormatUint(uint64(chunk), 10)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load snapshot %d chunk %d: %w", height, chunk, err)
	}
	return bz, nil
}

// chunkWriter cuts what is written into files 0, 1, ... of ChunkSize bytes.
type chunkWriter struct {
	dir    string
	size   int
	f      *os.File
	h      io.Writer
	sum    func() []byte
	n      int
	hashes [][]byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if c.f == nil {
			f, err := os.Create(filepath.Join(c.dir, strconv.Itoa(len(c.hashes))))
			if err != nil {
				return written, err
			}
			h := sha256.New()
			c.f, c.h, c.sum, c.n = f, h, func() []byte { return h.Sum(nil) }, 0
		}
		k := min(len(p), c.size-c.n)
		if _, err := io.MultiWriter(c.f, c.h).Write(p[:k]); err != nil {
			return written, err
		}
		written += k
		c.n += k
		p = p[k:]
		if c.n == c.size {
			if err := c.finish(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (c *chunkWriter) finish() error {
	err := c.f.Close()
	c.hashes = append(c.hashes, c.sum())
	c.f = nil
	return err
}

func (c *chunkWriter) close() error {
	if c.f != nil {
		return c.finish()
	}
	if len(c.hashes) == 0 { // an empty tree: one empty chunk
		if err := os.WriteFile(filepath.Join(c.dir, "0"), nil, 0o644); err != nil {
			return err
		}
		c.hashes = append(c.hashes, hashOf(nil))
	}
	return nil
}

func encodeNode(b []byte, n *store.ExportNode) []byte {
	b = binary.AppendUvarint(b, uint64(uint8(n.Height)))
	b = binary.AppendVarint(b, n.Version)
	b = binary.AppendUvarint(b, uint64(len(n.Key)))
	b = append(b, n.Key...)
	if n.Value == nil {
		return binary.AppendUvarint(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(n.Value))+1)
	return append(b, n.Value...)
}

// decodeNode decodes one node from the start of b; ok is false if b holds
// only part of one.
func decodeNode(b []byte) (n *store.ExportNode, used int, ok bool, err error) {
	r := bytes.NewReader(b)
	h, err1 := binary.ReadUvarint(r)
	v, err2 := binary.ReadVarint(r)
	kl, err3 := binary.ReadUvarint(r)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, 0, false, nil
	}
	if h > 127 || kl > uint64(r.Len()) {
		if h > 127 {
			return nil, 0, false, fmt.Errorf("node height %d", h)
		}
		return nil, 0, false, nil
	}
	key := make([]byte, kl)
	r.Read(key)
	vl, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, 0, false, nil
	}
	var val []byte
	if vl > 0 {
		if vl-1 > uint64(r.Len()) {
			return nil, 0, false, nil
		}
		val = make([]byte, vl-1)
		r.Read(val)
	}
	return &store.ExportNode{Height: int8(h), Version: v, Key: key, Value: val}, len(b) - r.Len(), true, nil
}
