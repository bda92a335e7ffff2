// Package txindex is this node's index of committed transaction outcomes
// by hash (height, code, log), kept for the last N heights. It is
// node-local, not replicated state: each node fills its own from the blocks
// it commits, nothing of it is in the app hash, and two nodes may keep
// different spans of heights. It replaces CometBFT's kv tx indexer, which
// stored every transaction's bytes and events and could not be pruned.
package txindex

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	dbm "github.com/cometbft/cometbft-db"
)

// Keys:
//
//	t/<hash>           → height (8) ‖ code (4) ‖ log   the outcome of a tx
//	h/<height><hash>   → nothing                      height order, for pruning
//	m/last             → height (8)                   the highest height indexed
//	m/from             → height (8)                   lowest of the heights held without a gap up to m/last
//	m/pruned           → height (8)                   every height below it is deleted
var (
	keyLast   = []byte("m/last")
	keyFrom   = []byte("m/from")
	keyPruned = []byte("m/pruned")
)

// PruneBudget is at most how many transactions one Put deletes, so that
// lowering the retention, or a node that kept everything before, never
// stalls a commit: the backlog goes a budget per block.
const PruneBudget = 2000

// Tx is the outcome of one transaction in a committed block.
type Tx struct {
	// Hash is the SHA-256 of the transaction's bytes, in hex.
	Hash string
	Code uint32
	Log  string
}

// Result is where and how a transaction was committed.
type Result struct {
	Hash   string
	Height int64
	Code   uint32
	Log    string
}

// Index is the index over one database. Put, Fill and Get may be called
// concurrently.
type Index struct {
	db dbm.DB

	mu     sync.Mutex // serialises writes and the heights below
	retain int64      // heights kept (0: all)
	last   int64
	from   int64
	pruned int64
}

// Open opens (or creates) the index in the goleveldb database name under
// dir, keeping the last retain heights (0: all).
func Open(dir, name string, retain int64) (*Index, error) {
	db, err := dbm.NewGoLevelDB(name, dir)
	if err != nil {
		return nil, fmt.Errorf("open tx index %s/%s.db: %w", dir, name, err)
	}
	x, err := New(db, retain)
	if err != nil {
		db.Close()
		return nil, err
	}
	return x, nil
}

// New returns the index over db, keeping the last retain heights (0: all).
func New(db dbm.DB, retain int64) (*Index, error) {
	x := &Index{db: db, retain: retain}
	for _, m := range []struct {
		key []byte
		to  *int64
	}{{keyLast, &x.last}, {keyFrom, &x.from}, {keyPruned, &x.pruned}} {
		v, err := db.Get(m.key)
		if err != nil {
			return nil, fmt.Errorf("tx index: read %s: %w", m.key, err)
		}
		if len(v) == 8 {
			*m.to = int64(binary.BigEndian.Uint64(v))
		} else if v != nil {
			return nil, fmt.Errorf("tx index: %s holds %d bytes, want 8", m.key, len(v))
		}
	}
	return x, nil
}

// Close closes the database.
func (x *Index) Close() error { return x.db.Close() }

// Retain is how many heights the index keeps (0: all).
func (x *Index) Retain() int64 { return x.retain }

// Span is the heights the index holds without a gap: from from to last
// (both 0 while it holds none).
func (x *Index) Span() (from, last int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.from, x.last
}

// Get returns the outcome of the transaction with hash (hex), and false if
// the index holds none.
func (x *Index) Get(hash string) (Result, bool, error) {
	raw, err := hex.DecodeString(hash)
	if err != nil || len(raw) == 0 {
		return Result{}, false, fmt.Errorf("tx hash %q: want hex digits", hash)
	}
	v, err := x.db.Get(txKey(raw))
	if err != nil {
		return Result{}, false, fmt.Errorf("tx index: get %s: %w", hash, err)
	}
	if v == nil {
		return Result{}, false, nil
	}
	height, code, log, err := decodeValue(v)
	if err != nil {
		return Result{}, false, fmt.Errorf("tx index: %s: %w", hash, err)
	}
	return Result{Hash: fmt.Sprintf("%X", raw), Height: height, Code: code, Log: log}, true, nil
}

// Put indexes the transactions committed at height, the next height after
// the last one, and deletes up to PruneBudget transactions of heights the
// retention no longer keeps, in one batch.
func (x *Index) Put(height int64, txs []Tx) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	b := x.db.NewBatch()
	defer b.Close()
	written, err := x.write(b, height, txs)
	if err != nil {
		return fmt.Errorf("tx index: height %d: %w", height, err)
	}
	last, from := max(x.last, height), x.from
	if from == 0 {
		from = height
	}
	pruned, err := x.prune(b, last, written)
	if err != nil {
		return fmt.Errorf("tx index: prune below height %d: %w", last, err)
	}
	from = max(from, pruned)
	if err := x.commit(b, last, from, pruned); err != nil {
		return fmt.Errorf("tx index: height %d: %w", height, err)
	}
	return nil
}

// write adds the outcomes of height to b. An accepted outcome is never
// replaced by a refused one: a copy of a committed transaction that a
// proposer put into a later block is refused (its nonce is used up), and
// the client asking wants to know that its transaction committed. It
// returns the hashes it wrote.
func (x *Index) write(b dbm.Batch, height int64, txs []Tx) (map[string]uint32, error) {
	seen := make(map[string]uint32, len(txs))
	for _, tx := range txs {
		raw, err := hex.DecodeString(tx.Hash)
		if err != nil || len(raw) == 0 {
			return nil, fmt.Errorf("tx hash %q: want hex digits", tx.Hash)
		}
		if code, ok := seen[string(raw)]; ok {
			if code == 0 && tx.Code != 0 {
				continue
			}
		} else if tx.Code != 0 {
			v, err := x.db.Get(txKey(raw))
			if err != nil {
				return nil, err
			}
			if v != nil {
				if _, code, _, err := decodeValue(v); err == nil && code == 0 {
					continue
				}
			}
		}
		seen[string(raw)] = tx.Code
		if err := b.Set(txKey(raw), encodeValue(height, tx.Code, tx.Log)); err != nil {
			return nil, err
		}
		if err := b.Set(heightKey(height, raw), []byte{}); err != nil {
			return nil, err
		}
	}
	return seen, nil
}

// prune adds to b the deletion of up to PruneBudget transactions below the
// lowest height kept after last, and returns the new prune mark. The
// outcomes of written, which b sets at a new height, stay.
func (x *Index) prune(b dbm.Batch, last int64, written map[string]uint32) (int64, error) {
	if x.retain <= 0 || last-x.retain+1 <= x.pruned {
		return x.pruned, nil
	}
	target := last - x.retain + 1 // the lowest height kept
	it, err := x.db.Iterator(heightKey(x.pruned, nil), heightKey(target, nil))
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for ; it.Valid(); it.Next() {
		k := it.Key()
		height, hash := int64(binary.BigEndian.Uint64(k[2:10])), k[10:]
		if n == PruneBudget {
			// Heights below this one are gone; its own may be in part.
			return height, it.Error()
		}
		// The hash may have been indexed again at a later height since.
		v, err := x.db.Get(txKey(hash))
		if err != nil {
			return 0, err
		}
		if _, again := written[string(hash)]; v != nil && !again {
			if h, _, _, err := decodeValue(v); err != nil || h == height {
				if err := b.Delete(txKey(hash)); err != nil {
					return 0, err
				}
			}
		}
		if err := b.Delete(append([]byte{}, k...)); err != nil {
			return 0, err
		}
		n++
	}
	return target, it.Error()
}

// commit writes b with the heights' marks and, once written, keeps them.
func (x *Index) commit(b dbm.Batch, last, from, pruned int64) error {
	for _, m := range []struct {
		key []byte
		v   int64
	}{{keyLast, last}, {keyFrom, from}, {keyPruned, pruned}} {
		if err := b.Set(m.key, binary.BigEndian.AppendUint64(nil, uint64(m.v))); err != nil {
			return err
		}
	}
	if err := b.Write(); err != nil {
		return err
	}
	x.last, x.from, x.pruned = last, from, pruned
	return nil
}

// Source gives the outcomes of the transactions of a committed block: a
// node's block store and block results.
type Source interface {
	Block(ctx context.Context, height int64) ([]Tx, error)
}

// Gap is the heights a Fill should index: those from Low to High.
type Gap struct{ Low, High int64 }

// GapBelow is what Fill must index for the index to hold every height up
// to high that the retention keeps, given that the block source keeps
// heights from base on: the heights above the index's last, from
// max(last+1, high-retain+1, base) to high. Low > High means none.
func (x *Index) GapBelow(high, base int64) Gap {
	x.mu.Lock()
	defer x.mu.Unlock()
	low := max(x.last+1, base, 1)
	if x.retain > 0 {
		low = max(low, high-x.retain+1)
	}
	return Gap{Low: low, High: high}
}

// Fill indexes the heights of gap from src, from the highest down (so that
// the heights held stay without a gap below the ones Put adds meanwhile),
// one batch per height, and stops at a height the retention no longer
// keeps. It returns how many heights and transactions it indexed.
func (x *Index) Fill(ctx context.Context, src Source, gap Gap) (heights, txs int, err error) {
	for h := gap.High; h >= gap.Low; h-- {
		if err := ctx.Err(); err != nil {
			return heights, txs, err
		}
		outcomes, err := src.Block(ctx, h)
		if err != nil {
			return heights, txs, fmt.Errorf("tx index: fill height %d: %w", h, err)
		}
		done, err := x.fillOne(h, outcomes)
		if err != nil {
			return heights, txs, err
		}
		if !done {
			break
		}
		heights, txs = heights+1, txs+len(outcomes)
	}
	return heights, txs, nil
}

// fillOne indexes height unless the retention no longer keeps it (false).
func (x *Index) fillOne(height int64, txs []Tx) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if height < x.pruned || (x.retain > 0 && height <= x.last-x.retain) {
		return false, nil
	}
	b := x.db.NewBatch()
	defer b.Close()
	if _, err := x.write(b, height, txs); err != nil {
		return false, fmt.Errorf("tx index: fill height %d: %w", height, err)
	}
	last, from := max(x.last, height), x.from
	if from == 0 || height == from-1 {
		from = height
	}
	if err := x.commit(b, last, from, x.pruned); err != nil {
		return false, fmt.Errorf("tx index: fill height %d: %w", height, err)
	}
	return true, nil
}

func txKey(hash []byte) []byte { return append([]byte("t/"), hash...) }

func heightKey(height int64, hash []byte) []byte {
	k := binary.BigEndian.AppendUint64([]byte("h/"), uint64(height))
	return append(k, hash...)
}

func encodeValue(height int64, code uint32, log string) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 12+len(log)), uint64(height))
	v = binary.BigEndian.AppendUint32(v, code)
	return append(v, log...)
}

func decodeValue(v []byte) (height int64, code uint32, log string, err error) {
	if len(v) < 12 {
		return 0, 0, "", errors.New("stored outcome shorter than 12 bytes")
	}
	return int64(binary.BigEndian.Uint64(v)), binary.BigEndian.Uint32(v[8:]), string(v[12:]), nil
}
