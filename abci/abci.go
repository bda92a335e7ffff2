// Package abci is the ABCI 2.0 face of the application: it translates
// CometBFT's calls into calls on app.App and the store, and results back. It
// holds no business rules of its own.
package abci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/proto/tendermint/crypto"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/snapshot"
	"github.com/bftmon/bftmon/store"
)

// Version is reported in Info.
const Version = "bftmon/1"

// AppVersion is the application protocol version.
const AppVersion = 1

// TxOutcome is the committed result of one transaction.
type TxOutcome struct {
	Hash string
	// Content is the ContentID of what the signer signed ("" for bytes
	// that are no envelope).
	Content string
	Code    uint32
	Log     string
}

// Block is what a committed block did, handed to the commit listener.
type Block struct {
	Height int64
	// Time is the block time consensus agreed on.
	Time    time.Time
	AppHash []byte
	Txs     []TxOutcome
	Alerts  []types.Alert
	// Deliveries are the delivery receipts the block committed.
	Deliveries []types.Delivery
	// Changes is what the block changed in the agreed state.
	Changes app.Changes
	// Observations is the number of observations the block applied.
	Observations int
}

// Application is the ABCI application.
type Application struct {
	abci.BaseApplication

	store *store.Store
	app   *app.App
	log   *slog.Logger

	shares shares // of the mempool, per signer (CheckTx's, node-local)

	mu       sync.Mutex
	onCommit []func(Block)
	pending  *Block // FinalizeBlock's results, until Commit

	snaps   *snapshot.Manager  // nil: no snapshots taken or served
	restore *snapshot.Restorer // the state-sync restore under way
	retain  int64              // blocks CometBFT keeps (0: all)
}

// RetainBlocks makes Commit ask CometBFT to keep only the last n blocks
// (0: all), never pruning past the oldest snapshot served when snapshots are used.
// Call it before the node starts.
func (a *Application) RetainBlocks(n int64) { a.retain = n }

// UseSnapshots makes the application take snapshots with m after commits
// and serve them to syncing peers. Call it before the node starts.
func (a *Application) UseSnapshots(m *snapshot.Manager) { a.snaps = m }

var _ abci.Application = (*Application)(nil)

// New returns the application over st, loading its state.
func New(st *store.Store, logger *slog.Logger) (*Application, error) {
	a, err := app.New(st)
	if err != nil {
		return nil, fmt.Errorf("load application state: %w", err)
	}
	return &Application{store: st, app: a, log: logger}, nil
}

// OnCommit registers fn to be called after each Commit with what the block
// did. fn must not block.
func (a *Application) OnCommit(fn func(Block)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onCommit = append(a.onCommit, fn)
}

// Info reports the last committed height and app hash, so that CometBFT
// replays exactly the blocks the application has not committed.
func (a *Application) Info(context.Context, *abci.RequestInfo) (*abci.ResponseInfo, error) {
	return &abci.ResponseInfo{
		Data:             "bftmon",
		Version:          Version,
		AppVersion:       AppVersion,
		LastBlockHeight:  a.store.Version(),
		LastBlockAppHash: a.store.Hash(),
	}, nil
}

// InitChain writes the genesis observers and operators.
func (a *Application) InitChain(_ context.Context, req *abci.RequestInitChain) (*abci.ResponseInitChain, error) {
	g, err := app.ParseGenesis(req.AppStateBytes)
	if err != nil {
		return nil, err
	}
	if err := a.app.InitChain(req.ChainId, g); err != nil {
		return nil, fmt.Errorf("init chain: %w", err)
	}
	return &abci.ResponseInitChain{AppHash: a.store.WorkingHash()}, nil
}

// CheckTx admits a transaction to the mempool if it decodes, is signed, is
// not a replay and its signer may send it.
func (a *Application) CheckTx(_ context.Context, req *abci.RequestCheckTx) (*abci.ResponseCheckTx, error) {
	hash := types.TxHash(req.Tx)
	busy := func(signer string) error {
		return &app.TxError{Code: app.CodeBusy, Msg: fmt.Sprintf("signer %s has %d transactions waiting in this node's mempool already, its share: retry after the next block",
			types.KeyID([]byte(signer)), MempoolShare)}
	}
	if body, _, derr := types.DecodeUnverified(req.Tx); derr == nil && a.shares.full(string(body.Signer), hash) {
		return &abci.ResponseCheckTx{Code: uint32(app.CodeBusy), Log: busy(string(body.Signer)).Error(), Codespace: "bftmon"}, nil
	}
	adm, err := a.app.CheckTx(req.Tx)
	if err == nil && !a.shares.admit(adm.Signer, hash) {
		err = busy(adm.Signer)
	}
	if err != nil {
		code := app.CodeOf(err)
		if code == app.CodeInternal {
			return nil, err
		}
		if req.Type == abci.CheckTxType_Recheck {
			a.shares.done(hash) // evicted
		}
		return &abci.ResponseCheckTx{Code: uint32(code), Log: err.Error(), Codespace: "bftmon"}, nil
	}
	return &abci.ResponseCheckTx{Code: abci.CodeTypeOK, GasWanted: adm.Gas}, nil
}

// PrepareProposal builds an honest proposal: the mempool's transactions in
// order, without those that fail the proposal checks (app.Admit) or would
// break the block limits (app.BlockBudget) or CometBFT's byte limit, so
// that ProcessProposal of every honest validator accepts it.
func (a *Application) PrepareProposal(_ context.Context, req *abci.RequestPrepareProposal) (*abci.ResponsePrepareProposal, error) {
	txs := make([][]byte, 0, len(req.Txs))
	var budget app.BlockBudget
	var size int64
	dropped := 0
	for _, tx := range req.Txs {
		adm, err := a.app.Admit(tx)
		if err == nil {
			err = budget.Fit(adm, len(tx))
		}
		if err == nil && req.MaxTxBytes > 0 && size+int64(len(tx)) > req.MaxTxBytes {
			err = fmt.Errorf("over the block's %d bytes", req.MaxTxBytes)
		}
		if err != nil {
			dropped++
			continue
		}
		budget.Add(adm, len(tx))
		size += int64(len(tx))
		txs = append(txs, tx)
	}
	if dropped > 0 {
		a.log.Debug("proposal leaves out transactions", "height", req.Height, "kept", len(txs), "left_out", dropped)
	}
	return &abci.ResponsePrepareProposal{Txs: txs}, nil
}

// ProcessProposal accepts a proposal only if every transaction passes the
// proposal checks and the block keeps the block limits: a Byzantine
// proposer cannot stuff blocks with junk that every node must execute and
// store. What depends on the state FinalizeBlock still refuses per
// transaction, deterministically.
func (a *Application) ProcessProposal(_ context.Context, req *abci.RequestProcessProposal) (*abci.ResponseProcessProposal, error) {
	if err := a.checkProposal(req.Txs); err != nil {
		a.log.Warn("proposal rejected", "height", req.Height, "proposer", fmt.Sprintf("%X", req.ProposerAddress), "txs", len(req.Txs), "err", err)
		return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_REJECT}, nil
	}
	return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_ACCEPT}, nil
}

// checkProposal says why a proposed block's transactions are not
// acceptable (nil: they are).
func (a *Application) checkProposal(txs [][]byte) error {
	if len(txs) > app.MaxBlockGas { // every tx costs at least 1: no need to decode them all
		return fmt.Errorf("%d transactions, over the block's %d gas", len(txs), app.MaxBlockGas)
	}
	var budget app.BlockBudget
	for i, tx := range txs {
		adm, err := a.app.Admit(tx)
		if err == nil {
			err = budget.Fit(adm, len(tx))
		}
		if err != nil {
			return fmt.Errorf("tx %d: %w", i, err)
		}
		budget.Add(adm, len(tx))
	}
	return nil
}

// FinalizeBlock executes a decided block.
func (a *Application) FinalizeBlock(_ context.Context, req *abci.RequestFinalizeBlock) (*abci.ResponseFinalizeBlock, error) {
	a.app.BeginBlock(req.Height, req.Time.UnixMilli())
	blk := &Block{Height: req.Height, Time: req.Time, Txs: make([]TxOutcome, len(req.Txs))}
	results := make([]*abci.ExecTxResult, len(req.Txs))
	a.shares.height = req.Height
	for i, tx := range req.Txs {
		hash := types.TxHash(tx)
		a.shares.done(hash)
		log, err := a.app.DeliverTx(tx)
		code := app.CodeOf(err)
		if code == app.CodeInternal {
			return nil, fmt.Errorf("block %d tx %d: %w", req.Height, i, err)
		}
		if err != nil {
			log = err.Error()
		}
		results[i] = &abci.ExecTxResult{Code: uint32(code), Log: log}
		if code != app.CodeOK {
			results[i].Codespace = "bftmon"
		}
		content, _ := types.ContentID(tx)
		blk.Txs[i] = TxOutcome{Hash: hash, Content: content, Code: uint32(code), Log: log}
	}
	alerts, hash, err := a.app.EndBlock()
	if err != nil {
		return nil, fmt.Errorf("end block %d: %w", req.Height, err)
	}
	blk.AppHash, blk.Alerts, blk.Deliveries, blk.Changes, blk.Observations = hash, alerts, a.app.Deliveries(), a.app.Changed(), a.app.Applied()
	events := make([]abci.Event, 0, len(alerts))
	for _, al := range alerts {
		events = append(events, abci.Event{Type: "alert", Attributes: []abci.EventAttribute{
			{Key: "id", Value: al.Id, Index: true},
			{Key: "kind", Value: al.Kind, Index: true},
			{Key: "check", Value: app.CheckRef(al.Service, al.Instance, al.Check), Index: true},
			{Key: "from", Value: al.From.Name()},
			{Key: "to", Value: al.To.Name()},
			{Key: "height", Value: strconv.FormatInt(al.Height, 10)},
		}})
	}
	a.mu.Lock()
	a.pending = blk
	a.mu.Unlock()
	return &abci.ResponseFinalizeBlock{TxResults: results, AppHash: hash, Events: events}, nil
}

// Commit persists the block's state atomically and tells the listeners.
func (a *Application) Commit(context.Context, *abci.RequestCommit) (*abci.ResponseCommit, error) {
	_, height, err := a.store.Commit()
	if err != nil {
		return nil, err
	}
	if a.snaps != nil {
		a.snaps.Committed(height)
	}
	a.mu.Lock()
	blk, fns := a.pending, append([]func(Block){}, a.onCommit...)
	a.pending = nil
	a.mu.Unlock()
	if blk != nil {
		for _, fn := range fns {
			fn(*blk)
		}
	}
	return &abci.ResponseCommit{RetainHeight: a.retainHeight(height)}, nil
}

// retainHeight is the lowest height CometBFT must keep after committing
// height (0: keep all).
func (a *Application) retainHeight(height int64) int64 {
	if a.retain <= 0 || height <= a.retain {
		return 0
	}
	h := height - a.retain
	if a.snaps != nil && a.snaps.Interval() > 0 {
		// A node syncing from a snapshot this node serves needs the blocks
		// from its height on: keep them from the oldest one served (a
		// joining node picks among the snapshots it heard of seconds
		// before, often not the newest by then). With no snapshot yet,
		// nothing is pruned.
		h = min(h, a.snaps.Oldest())
	}
	return h
}

// QuerySnapshots is the query path that lists the snapshots this node
// serves, newest first, as the JSON of []snapshot.Info (what bftmon join
// reads through CometBFT's /abci_query to pick a height to trust).
const QuerySnapshots = "/snapshots"

// ProofOpICS23 is the type of the one proof operation a proven "/key"
// query answers with: its data is the protobuf of an ICS23
// CommitmentProof (existence or non-existence) of the key against the app
// hash of the version read, which the header of the next height carries.
const ProofOpICS23 = "ics23:iavl"

// Query reads a raw key of the replicated state at a height (0: latest):
// path "/key", data = the key, with Prove a ProofOpICS23 proof of its value
// or its absence; or lists the snapshots this node serves: path
// QuerySnapshots.
func (a *Application) Query(_ context.Context, req *abci.RequestQuery) (*abci.ResponseQuery, error) {
	if req.Path == QuerySnapshots {
		return a.querySnapshots()
	}
	if req.Path != "/key" {
		return &abci.ResponseQuery{Code: uint32(app.CodeInvalid), Log: fmt.Sprintf("unknown query path %q (known: /key, %s)", req.Path, QuerySnapshots)}, nil
	}
	r, err := a.store.Reader(req.Height)
	if err != nil {
		return &abci.ResponseQuery{Code: uint32(app.CodeNotFound), Log: err.Error(), Height: req.Height}, nil
	}
	v, err := r.Get(req.Data)
	if err != nil {
		return nil, err
	}
	res := &abci.ResponseQuery{Key: req.Data, Value: v, Height: r.Version()}
	if req.Prove {
		p, err := r.Proof(req.Data)
		if err != nil {
			return &abci.ResponseQuery{Code: uint32(app.CodeInvalid), Log: err.Error(), Key: req.Data, Height: r.Version()}, nil
		}
		bz, err := p.Marshal()
		if err != nil {
			return nil, fmt.Errorf("query %q: encode proof: %w", req.Data, err)
		}
		res.ProofOps = &crypto.ProofOps{Ops: []crypto.ProofOp{{Type: ProofOpICS23, Key: req.Data, Data: bz}}}
	}
	return res, nil
}

// querySnapshots answers QuerySnapshots: a node taking none answers an
// empty list.
func (a *Application) querySnapshots() (*abci.ResponseQuery, error) {
	list := []snapshot.Info{}
	if a.snaps != nil {
		var err error
		if list, err = a.snaps.List(); err != nil {
			return &abci.ResponseQuery{Code: uint32(app.CodeInvalid), Log: err.Error()}, nil
		}
	}
	if list == nil {
		list = []snapshot.Info{}
	}
	bz, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("query snapshots: %w", err)
	}
	return &abci.ResponseQuery{Key: []byte(QuerySnapshots), Value: bz, Height: a.store.Version()}, nil
}

// ChainID is the chain id the application was initialised with.
func (a *Application) ChainID() string { return a.app.ChainID() }

// Read returns a reader of the latest committed state for clients. It is
// safe to call concurrently with block execution.
func (a *Application) Read() (*app.Query, error) {
	r, err := a.store.Reader(0)
	if err != nil {
		return nil, err
	}
	return app.NewQuery(r)
}

// ListSnapshots lists the snapshots this node serves.
func (a *Application) ListSnapshots(context.Context, *abci.RequestListSnapshots) (*abci.ResponseListSnapshots, error) {
	if a.snaps == nil {
		return &abci.ResponseListSnapshots{}, nil
	}
	list, err := a.snaps.List()
	if err != nil {
		return nil, err
	}
	res := &abci.ResponseListSnapshots{}
	for _, s := range list {
		res.Snapshots = append(res.Snapshots, &abci.Snapshot{Height: s.Height, Format: s.Format, Chunks: s.Chunks, Hash: s.Hash, Metadata: s.Metadata})
	}
	return res, nil
}

// LoadSnapshotChunk returns one chunk of a snapshot this node serves.
func (a *Application) LoadSnapshotChunk(_ context.Context, req *abci.RequestLoadSnapshotChunk) (*abci.ResponseLoadSnapshotChunk, error) {
	if a.snaps == nil {
		return &abci.ResponseLoadSnapshotChunk{}, nil
	}
	bz, err := a.snaps.LoadChunk(req.Height, req.Format, req.Chunk)
	if err != nil {
		return nil, err
	}
	return &abci.ResponseLoadSnapshotChunk{Chunk: bz}, nil
}

// OfferSnapshot starts restoring a snapshot a peer offers, if its format
// is known and this node's state is empty; req.AppHash is the app hash the
// light client verified at the snapshot's height.
func (a *Application) OfferSnapshot(_ context.Context, req *abci.RequestOfferSnapshot) (*abci.ResponseOfferSnapshot, error) {
	if req.Snapshot == nil {
		return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT}, nil
	}
	if a.restore != nil {
		a.restore.Close()
		a.restore = nil
	}
	s := req.Snapshot
	r, err := snapshot.NewRestorer(a.store, snapshot.Info{Height: s.Height, Format: s.Format, Chunks: s.Chunks, Hash: s.Hash, Metadata: s.Metadata}, req.AppHash)
	switch {
	case errors.Is(err, snapshot.ErrFormat):
		a.log.Info("snapshot offer refused", "height", s.Height, "err", err)
		return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT_FORMAT}, nil
	case err != nil:
		a.log.Warn("snapshot offer refused", "height", s.Height, "err", err)
		return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT}, nil
	}
	a.restore = r
	a.log.Info("restoring snapshot", "height", s.Height, "chunks", s.Chunks)
	return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_ACCEPT}, nil
}

// ApplySnapshotChunk imports one chunk of the snapshot being restored: a
// chunk whose hash is not the metadata's is fetched again from another
// peer; after the last, the restored root must be the agreed app hash and
// the application reloads its derived state from it.
func (a *Application) ApplySnapshotChunk(_ context.Context, req *abci.RequestApplySnapshotChunk) (*abci.ResponseApplySnapshotChunk, error) {
	if a.restore == nil {
		return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_RETRY_SNAPSHOT}, nil
	}
	done, err := a.restore.Apply(req.Index, req.Chunk)
	switch {
	case errors.Is(err, snapshot.ErrChunkHash):
		a.log.Warn("snapshot chunk refused", "index", req.Index, "sender", req.Sender, "err", err)
		res := &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_RETRY, RefetchChunks: []uint32{req.Index}}
		if req.Sender != "" {
			res.RejectSenders = []string{req.Sender}
		}
		return res, nil
	case errors.Is(err, snapshot.ErrSnapshot):
		a.log.Warn("snapshot refused", "index", req.Index, "err", err)
		a.restore.Close()
		a.restore = nil
		return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT}, nil
	case err != nil:
		a.log.Error("snapshot restore failed", "index", req.Index, "err", err)
		a.restore = nil
		return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ABORT}, nil
	}
	if !done {
		return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ACCEPT}, nil
	}
	a.restore = nil
	na, err := app.New(a.store)
	if err != nil {
		return nil, fmt.Errorf("load restored state at %d: %w (empty the data directory and sync again)", a.store.Version(), err)
	}
	a.app = na
	a.log.Info("snapshot restored", "height", a.store.Version())
	return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ACCEPT}, nil
}
