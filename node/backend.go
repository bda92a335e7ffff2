package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	rpccore "github.com/cometbft/cometbft/rpc/core"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app"
)

// Version is the bftmon version reported by the API.
var Version = "dev"

// backend answers the HTTP API from this node.
type backend struct{ n *Node }

func (b *backend) Read() (*app.Query, error) { return b.n.app.Read() }

func (b *backend) Status(context.Context) (api.Status, error) {
	q, err := b.n.app.Read()
	if err != nil {
		return api.Status{}, err
	}
	info := q.Info()
	st := api.Status{
		ChainID: b.n.app.ChainID(), Height: info.Height, AppHash: fmt.Sprintf("%X", b.n.store.Hash()),
		BlockTime: time.UnixMilli(info.BlockTime).UTC(), NodeID: b.n.nodeID, Version: Version,
		RPC: b.n.RPCURL(),
	}
	_, since, problem := b.n.health.state()
	st.Committing, st.LastCommit = problem == nil, since.UTC()
	if problem != nil {
		st.Problem = problem.Error()
	}
	st.CatchingUp, st.Peers, st.ExpectedPeers, st.PeerHeight = b.n.syncState()
	if o := b.n.observer; o != nil {
		st.ObserverID, st.ObserverName = o.key.ID(), o.key.Name
		for _, ob := range q.Observers() {
			if ob.Id == st.ObserverID {
				st.Datacenter = ob.Datacenter
			}
		}
	}
	return st, nil
}

func (b *backend) BroadcastTx(ctx context.Context, tx []byte) (api.TxResult, error) {
	r, err := b.n.bcast.Commit(ctx, tx)
	if errors.Is(err, rpccore.ErrEndpointClosedCatchingUp) {
		// CometBFT refused it before its mempool saw it: nothing was taken.
		_, peers, expected, peerHeight := b.n.syncState()
		return api.TxResult{}, fmt.Errorf("the node is catching up (%s, %d of %d peers connected) and takes no transactions yet: send it again later: %w",
			heightText(b.n.store.Version(), peerHeight), peers, expected, api.ErrNotReady)
	}
	return api.TxResult{Hash: r.Hash, Height: r.Height, Code: r.Code, Log: r.Log}, err
}

func (b *backend) Tx(_ context.Context, hash string) (api.TxResult, error) {
	if _, err := hex.DecodeString(hash); err != nil {
		return api.TxResult{}, fmt.Errorf("tx hash %q: %v: %w", hash, err, api.ErrBadRequest)
	}
	return b.n.lookupTx(hash)
}

func (b *backend) Observe(_ context.Context, r api.PassiveResult) (api.ObserveAck, error) {
	if b.n.observer == nil {
		return api.ObserveAck{}, fmt.Errorf("this node runs no observer (settings: observer_key is empty): %w", api.ErrBadRequest)
	}
	return b.n.observer.passive(r)
}

func (b *backend) AppHash(height int64) ([]byte, error) {
	if height > b.n.store.Version() {
		return nil, fmt.Errorf("height %d is above this node's last committed height %d: %w", height, b.n.store.Version(), api.ErrNotFound)
	}
	h, err := b.n.AppHashAt(height)
	if err != nil {
		return nil, fmt.Errorf("app hash at height %d (this node keeps the last 1000 versions): %v: %w", height, err, api.ErrNotFound)
	}
	return h, nil
}

// ReadAt reads a committed version of the store (0: the latest), which
// proves what it reads.
func (b *backend) ReadAt(version int64) (server.ProvingReader, error) {
	r, err := b.n.store.Reader(version)
	if err != nil {
		return nil, fmt.Errorf("read version %d: %w", version, err)
	}
	return r, nil
}
