package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cometbft/cometbft/mempool"
	rpclocal "github.com/cometbft/cometbft/rpc/client/local"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// TxResult is the outcome of a broadcast transaction.
type TxResult struct {
	Hash   string
	Height int64 // 0 if refused before a block
	Code   uint32
	Log    string
}

// broadcaster submits transactions to the local mempool and, when asked,
// waits until a block commits them.
type broadcaster struct {
	rpc *rpclocal.Local
	// commitSeconds, if set, observes how long Commit waits from
	// submission to the committing block.
	commitSeconds prometheus.Observer

	mu      sync.Mutex
	waiters map[string][]chan TxResult
}

func newBroadcaster(rpc *rpclocal.Local) *broadcaster {
	return &broadcaster{rpc: rpc, waiters: map[string][]chan TxResult{}}
}

// committed is the abci commit listener: it wakes the waiters of the
// block's transactions. Waiters follow the signed content (its ContentID),
// not the envelope's hash, so a copy of a signed transaction that a third
// party re-encoded cannot leave its waiter waiting; an outcome that says
// the bytes did not decode or verify says nothing about the signed content
// and wakes nobody.
func (b *broadcaster) committed(blk abci.Block) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, tx := range blk.Txs {
		if tx.Content == "" || tx.Code == uint32(app.CodeMalformed) || tx.Code == uint32(app.CodeBadSignature) {
			continue
		}
		for _, ch := range b.waiters[tx.Content] {
			ch <- TxResult{Hash: tx.Hash, Height: blk.Height, Code: tx.Code, Log: tx.Log}
		}
		delete(b.waiters, tx.Content)
	}
}

// waitKey is what a waiter of tx follows: its signed content, or for bytes
// that are no envelope, their hash.
func waitKey(tx []byte) string {
	if id, ok := types.ContentID(tx); ok {
		return id
	}
	return types.TxHash(tx)
}

// Submit hands tx to the mempool without waiting for a block. A non-zero
// Code is CheckTx's refusal.
func (b *broadcaster) Submit(ctx context.Context, tx []byte) (TxResult, error) {
	res, err := b.rpc.BroadcastTxSync(ctx, tx)
	if err != nil {
		return TxResult{}, fmt.Errorf("broadcast tx: %w", err)
	}
	return TxResult{Hash: res.Hash.String(), Code: res.Code, Log: res.Log}, nil
}

// Commit submits tx and waits until a block commits it or ctx ends.
func (b *broadcaster) Commit(ctx context.Context, tx []byte) (TxResult, error) {
	hash, key := types.TxHash(tx), waitKey(tx)
	ch := make(chan TxResult, 1)
	b.mu.Lock()
	b.waiters[key] = append(b.waiters[key], ch)
	b.mu.Unlock()
	defer b.forget(key, ch)
	start := time.Now()
	res, err := b.Submit(ctx, tx)
	switch {
	case errors.Is(err, mempool.ErrTxInCache):
		// The same signed bytes again (a client retrying after it lost
		// the answer): the mempool holds them already, or a block
		// committed them. Wait for that commit like the first sender;
		// the nonce makes sure it executes once.
		res, err = TxResult{Hash: hash}, nil
	case err != nil:
		return res, err
	}
	if res.Code != 0 {
		return res, nil
	}
	select {
	case r := <-ch:
		if b.commitSeconds != nil {
			b.commitSeconds.Observe(time.Since(start).Seconds())
		}
		return r, nil
	case <-ctx.Done():
		return TxResult{Hash: hash}, fmt.Errorf("tx %s accepted into the mempool but not committed yet: %w", hash, ctx.Err())
	}
}

func (b *broadcaster) forget(key string, ch chan TxResult) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ws := b.waiters[key]
	for i, w := range ws {
		if w == ch {
			b.waiters[key] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(b.waiters[key]) == 0 {
		delete(b.waiters, key)
	}
}

// newCommitHistogram is bftmon_tx_commit_seconds, registered on reg.
func newCommitHistogram(reg prometheus.Registerer) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "bftmon_tx_commit_seconds",
		Help:    "Time from submitting a transaction through this node (register, deregister, POST /v1/txs) to the block that commits it.",
		Buckets: []float64{.05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 30},
	})
	reg.MustRegister(h)
	return h
}
