package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	cmtcfg "github.com/cometbft/cometbft/config"
	rpclocal "github.com/cometbft/cometbft/rpc/client/local"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/txindex"
)

// noCometTxIndex turns CometBFT's tx indexer off whatever config.toml
// says (homes made before bftmon had its own index say "kv"), and says
// once per start that an old data/tx_index.db is no longer used.
func noCometTxIndex(home string, ccfg *cmtcfg.Config, log *slog.Logger) {
	if ccfg.TxIndex.Indexer != "null" {
		log.Info("CometBFT's tx indexer is off: bftmon indexes committed transactions itself in "+TxIndexDB+
			"; set [tx_index] indexer = \"null\" in config/config.toml to say so there", "configured", ccfg.TxIndex.Indexer)
		ccfg.TxIndex.Indexer = "null"
	}
	dir := filepath.Join(home, CometTxIndexDB)
	if _, err := os.Stat(dir); err != nil {
		return
	}
	var size int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if fi, err := d.Info(); err == nil && !d.IsDir() {
			size += fi.Size()
		}
		return nil
	})
	if err != nil {
		log.Warn("could not size the unused CometBFT tx index", "dir", dir, "err", err)
	}
	log.Warn("data/tx_index.db is no longer used (bftmon indexes committed transactions in "+TxIndexDB+"): it can be deleted",
		"dir", dir, "bytes", size)
}

// openTxIndex opens the node's tx index and makes every commit feed it.
// Call it before CometBFT starts, so that the blocks its handshake
// replays are indexed too.
func (n *Node) openTxIndex() error {
	var err error
	dir, name := filepath.Split(filepath.Join(n.cfg.Home, TxIndexDB))
	n.txs, err = txindex.Open(dir, strings.TrimSuffix(name, ".db"), n.settings.TxIndexRetainBlocks)
	if err != nil {
		return err
	}
	n.app.OnCommit(func(b abci.Block) {
		txs := make([]txindex.Tx, len(b.Txs))
		for i, tx := range b.Txs {
			txs[i] = txindex.Tx{Hash: tx.Hash, Code: tx.Code, Log: tx.Log}
		}
		if err := n.txs.Put(b.Height, txs); err != nil {
			// GET /v1/txs/{hash} will not find the block's txs; the next
			// start fills the heights after the index's last one.
			n.log.Error("tx index: block not indexed", "height", b.Height, "err", err)
		}
	})
	return nil
}

// fillTxIndex indexes the heights up to high (the app's height when the
// node started) that the index missed, a crash between the app's commit
// and the index's write, or an index newer than the home, from CometBFT's
// block store and block results, as far as those are kept.
func (n *Node) fillTxIndex(ctx context.Context, rpc *rpclocal.Local, high int64) {
	st, err := rpc.Status(ctx)
	if err != nil {
		n.log.Error("tx index: cannot fill the heights it missed: CometBFT status", "err", err)
		return
	}
	gap := n.txs.GapBelow(high, st.SyncInfo.EarliestBlockHeight)
	if gap.Low > gap.High {
		return
	}
	n.log.Info("tx index: filling the heights it missed from the block store", "from", gap.Low, "to", gap.High)
	heights, txs, err := n.txs.Fill(ctx, blockSource{rpc}, gap)
	if err != nil && !errors.Is(err, context.Canceled) {
		n.log.Error("tx index: filling stopped", "filled_heights", heights, "filled_txs", txs, "err", err)
		return
	}
	n.log.Info("tx index: filled the heights it missed", "from", gap.Low, "to", gap.High, "heights", heights, "txs", txs)
}

// blockSource reads committed blocks' outcomes from CometBFT.
type blockSource struct{ rpc *rpclocal.Local }

func (s blockSource) Block(ctx context.Context, height int64) ([]txindex.Tx, error) {
	blk, err := s.rpc.Block(ctx, &height)
	if err != nil {
		return nil, fmt.Errorf("block: %w", err)
	}
	res, err := s.rpc.BlockResults(ctx, &height)
	if err != nil {
		return nil, fmt.Errorf("block results: %w", err)
	}
	if len(res.TxsResults) != len(blk.Block.Txs) {
		return nil, fmt.Errorf("%d txs but %d results", len(blk.Block.Txs), len(res.TxsResults))
	}
	txs := make([]txindex.Tx, len(blk.Block.Txs))
	for i, tx := range blk.Block.Txs {
		txs[i] = txindex.Tx{Hash: types.TxHash(tx), Code: res.TxsResults[i].Code, Log: res.TxsResults[i].Log}
	}
	return txs, nil
}

// lookupTx answers GET /v1/txs/{hash} from the node's tx index.
func (n *Node) lookupTx(hash string) (api.TxResult, error) {
	r, ok, err := n.txs.Get(hash)
	if err != nil {
		return api.TxResult{}, fmt.Errorf("look up tx %s: %w", hash, err)
	}
	if ok {
		return api.TxResult{Hash: r.Hash, Height: r.Height, Code: r.Code, Log: r.Log}, nil
	}
	from, last := n.txs.Span()
	if from <= 1 {
		return api.TxResult{}, fmt.Errorf("no committed block holds tx %s (yet): %w", hash, api.ErrNotFound)
	}
	retain := n.txs.Retain()
	return api.TxResult{}, fmt.Errorf("no committed block in the last %d heights this node indexes (%d to %d; tx_index_retain_blocks %d) holds tx %s: it may be older, or not committed (yet): %w",
		last-from+1, from, last, retain, hash, api.ErrNotFound)
}
