package verify

import (
	"bytes"
	"context"
	"fmt"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/bftmon/bftmon/app/types"
)

// Committed is a transaction proven committed: in the block at Height,
// whose verified header's data hash covers it, at Index, with the result
// (Code, Data) that the next verified header's last-results hash covers.
type Committed struct {
	Height int64
	Index  int
	Tx     []byte
	Code   uint32
	Data   []byte
}

// CommittedTx proves that a transaction is in the block at height and
// returns its committed result. match picks the transaction among the
// block's (by its hash, or by the signed content a client sent). The
// block and its results come from the primary RPC and are checked against
// the verified headers at height (data hash) and height+1 (last-results
// hash), which it waits for up to ctx's deadline: a write is proven a
// block after it committed. Every failure matches ErrNotVerified.
func (h *Headers) CommittedTx(ctx context.Context, height int64, what string, match func(tx []byte) bool) (Committed, error) {
	fail := func(format string, args ...any) (Committed, error) {
		return Committed{}, fmt.Errorf("transaction %s at height %d: %s: %w", what, height, fmt.Sprintf(format, args...), ErrNotVerified)
	}
	if height < 1 {
		return fail("no such height")
	}
	if len(h.opts.RPC) == 0 {
		return fail("no CometBFT RPC to read the block from")
	}
	rpc, err := rpchttp.New(h.opts.RPC[0], "/websocket")
	if err != nil {
		return fail("RPC %s: %v", h.opts.RPC[0], err)
	}
	// An honest node answers once the block is committed, but the RPC
	// asked may be a moment behind: wait for it (cheap) before the light
	// client verifies it.
	if err := waitHeader(ctx, rpc, height); err != nil {
		return fail("%v", err)
	}
	sh, err := h.Header(ctx, height)
	if err != nil {
		return Committed{}, fmt.Errorf("transaction %s at height %d: %w", what, height, err)
	}
	blk, err := rpc.Block(ctx, &height)
	if err != nil || blk.Block == nil {
		return fail("the block from %s: %v", h.opts.RPC[0], err)
	}
	if !bytes.Equal(blk.Block.Hash(), sh.Hash()) || !bytes.Equal(blk.Block.Data.Hash(), sh.DataHash) {
		return fail("the block %s served is not the verified one (its header or transactions differ)", h.opts.RPC[0])
	}
	idx := -1
	for i, tx := range blk.Block.Txs {
		if match(tx) {
			idx = i
			break
		}
	}
	if idx < 0 {
		return fail("not in the block")
	}
	// The results of block H are committed to by header H+1.
	next := height + 1
	if err := waitHeader(ctx, rpc, next); err != nil {
		return fail("no header %d yet to prove its result: %v", next, err)
	}
	nh, err := h.Header(ctx, next)
	if err != nil {
		return Committed{}, fmt.Errorf("transaction %s at height %d: %w", what, height, err)
	}
	res, err := rpc.BlockResults(ctx, &height)
	if err != nil {
		return fail("the block's results from %s: %v", h.opts.RPC[0], err)
	}
	if len(res.TxsResults) != len(blk.Block.Txs) || !bytes.Equal(cmttypes.NewResults(res.TxsResults).Hash(), nh.LastResultsHash) {
		return fail("the results %s served are not those header %d commits to", h.opts.RPC[0], next)
	}
	r := res.TxsResults[idx]
	return Committed{Height: height, Index: idx, Tx: blk.Block.Txs[idx], Code: r.Code, Data: r.Data}, nil
}

// waitHeader waits until the RPC has the header at height, or ctx ends.
func waitHeader(ctx context.Context, rpc *rpchttp.HTTP, height int64) error {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		if _, err := rpc.Header(ctx, &height); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("header %d: %w", height, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// TxHashIs matches a transaction by its hash (types.TxHash).
func TxHashIs(hash string) func([]byte) bool {
	return func(tx []byte) bool { return types.TxHash(tx) == hash }
}

// SameContent matches a transaction that carries the signed content of
// sent (types.ContentID), as the node's broadcast follows it: a copy
// re-encoded by a third party is the same write.
func SameContent(sent []byte) func([]byte) bool {
	id, ok := types.ContentID(sent)
	if !ok {
		return func(tx []byte) bool { return bytes.Equal(tx, sent) }
	}
	return func(tx []byte) bool { c, ok := types.ContentID(tx); return ok && c == id }
}

// LastVerified is the height of the newest header verified so far, without
// asking any node (0 if none but the trust root).
func (h *Headers) LastVerified() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.store == nil {
		return 0
	}
	n, err := h.store.LastLightBlockHeight()
	if err != nil {
		return 0
	}
	return n
}
