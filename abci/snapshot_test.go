package abci_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"testing"

	abcitypes "github.com/cometbft/cometbft/abci/types"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/snapshot"
	"github.com/bftmon/bftmon/store"
)

// snapshotSource is an app with services and observations that takes a
// snapshot at height 3 in small chunks, and the snapshot it took.
func snapshotSource(t *testing.T) (*abci.Application, *abcitypes.Snapshot, []byte) {
	t.Helper()
	st := store.NewMemory()
	a := initApp(t, st)
	m, err := snapshot.NewManager(t.TempDir(), st, 3, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.SetChunkSize(700) // many chunks, nodes cut across them
	a.UseSnapshots(m)
	insts := instances(20)
	finalize(t, a, 1, registerTxs(t, insts)...)
	finalize(t, a, 2, sign(t, "o1", 1, batch(insts, types.STATUS_PASSING, "ok")), sign(t, "o2", 1, batch(insts, types.STATUS_CRITICAL, "down")))
	res := finalize(t, a, 3, sign(t, "o3", 1, batch(insts, types.STATUS_CRITICAL, "down")))
	m.Wait()
	list, err := a.ListSnapshots(context.Background(), &abcitypes.RequestListSnapshots{})
	if err != nil || len(list.Snapshots) != 1 {
		t.Fatalf("ListSnapshots = %v, %v; want one snapshot", list, err)
	}
	s := list.Snapshots[0]
	if s.Height != 3 || s.Chunks < 2 {
		t.Fatalf("snapshot at %d in %d chunks, want height 3 in several", s.Height, s.Chunks)
	}
	return a, s, res.AppHash
}

func initApp(t *testing.T, st *store.Store) *abci.Application {
	t.Helper()
	a, err := abci.New(st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	initChain(t, a)
	return a
}

func chunk(t *testing.T, a *abci.Application, s *abcitypes.Snapshot, i uint32) []byte {
	t.Helper()
	res, err := a.LoadSnapshotChunk(context.Background(), &abcitypes.RequestLoadSnapshotChunk{Height: s.Height, Format: s.Format, Chunk: i})
	if err != nil || len(res.Chunk) == 0 {
		t.Fatalf("LoadSnapshotChunk %d: %v, %d bytes", i, err, len(res.Chunk))
	}
	return res.Chunk
}

// TestSnapshotRestore: a snapshot restored through the ABCI calls into a
// fresh app gives the same app hash, the same answers, and the same next
// block; a corrupted chunk is refused and asked for again, from another
// sender; a snapshot of an unknown format or whose hash lies is refused.
func TestSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	src, s, appHash := snapshotSource(t)

	for _, tc := range []struct {
		name string
		snap func() *abcitypes.Snapshot
		want abcitypes.ResponseOfferSnapshot_Result
	}{
		{"unknown format", func() *abcitypes.Snapshot { c := *s; c.Format = 99; return &c }, abcitypes.ResponseOfferSnapshot_REJECT_FORMAT},
		{"hash not the chunks'", func() *abcitypes.Snapshot { c := *s; c.Hash = bytes.Repeat([]byte{1}, 32); return &c }, abcitypes.ResponseOfferSnapshot_REJECT},
		{"no snapshot", func() *abcitypes.Snapshot { return nil }, abcitypes.ResponseOfferSnapshot_REJECT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst, _ := abci.New(store.NewMemory(), slog.New(slog.DiscardHandler))
			res, err := dst.OfferSnapshot(ctx, &abcitypes.RequestOfferSnapshot{Snapshot: tc.snap(), AppHash: appHash})
			if err != nil || res.Result != tc.want {
				t.Fatalf("OfferSnapshot = %v, %v; want %v", res.GetResult(), err, tc.want)
			}
		})
	}

	dst, err := abci.New(store.NewMemory(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	offer, err := dst.OfferSnapshot(ctx, &abcitypes.RequestOfferSnapshot{Snapshot: s, AppHash: appHash})
	if err != nil || offer.Result != abcitypes.ResponseOfferSnapshot_ACCEPT {
		t.Fatalf("OfferSnapshot = %v, %v; want ACCEPT", offer.GetResult(), err)
	}
	for i := uint32(0); i < s.Chunks; i++ {
		c := chunk(t, src, s, i)
		if i == 1 {
			bad := bytes.Clone(c)
			bad[len(bad)/2] ^= 0xff
			res, err := dst.ApplySnapshotChunk(ctx, &abcitypes.RequestApplySnapshotChunk{Index: i, Chunk: bad, Sender: "liar"})
			if err != nil || res.Result != abcitypes.ResponseApplySnapshotChunk_RETRY ||
				!reflect.DeepEqual(res.RefetchChunks, []uint32{1}) || !reflect.DeepEqual(res.RejectSenders, []string{"liar"}) {
				t.Fatalf("corrupted chunk: %v, %v; want RETRY refetching 1, rejecting liar", res, err)
			}
		}
		res, err := dst.ApplySnapshotChunk(ctx, &abcitypes.RequestApplySnapshotChunk{Index: i, Chunk: c, Sender: "honest"})
		if err != nil || res.Result != abcitypes.ResponseApplySnapshotChunk_ACCEPT {
			t.Fatalf("chunk %d: %v, %v; want ACCEPT", i, res.GetResult(), err)
		}
	}
	info, _ := dst.Info(ctx, &abcitypes.RequestInfo{})
	if info.LastBlockHeight != 3 || !bytes.Equal(info.LastBlockAppHash, appHash) {
		t.Fatalf("restored Info: height %d hash %X, want 3 and %X", info.LastBlockHeight, info.LastBlockAppHash, appHash)
	}
	if dst.ChainID() != chainID {
		t.Fatalf("restored chain id %q, want %q", dst.ChainID(), chainID)
	}
	services := func(a *abci.Application) any {
		q, err := a.Read()
		if err != nil {
			t.Fatal(err)
		}
		sv, err := q.Services()
		if err != nil {
			t.Fatal(err)
		}
		return sv
	}
	if got, want := services(dst), services(src); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored services %+v, want %+v", got, want)
	}
	next := sign(t, "o4", 1, batch(instances(20), types.STATUS_CRITICAL, "down"))
	a4, b4 := finalize(t, src, 4, next), finalize(t, dst, 4, next)
	if !bytes.Equal(a4.AppHash, b4.AppHash) {
		t.Fatalf("block 4 after restore: app hash %X, source %X", b4.AppHash, a4.AppHash)
	}
}

// TestSnapshotQuery: the /snapshots query lists what ListSnapshots lists
// (bftmon join reads it through CometBFT's /abci_query), and an empty list,
// not null, from an app that takes none.
func TestSnapshotQuery(t *testing.T) {
	a, s, _ := snapshotSource(t)
	res, err := a.Query(context.Background(), &abcitypes.RequestQuery{Path: abci.QuerySnapshots})
	if err != nil || res.Code != 0 {
		t.Fatalf("Query %s = %v, %v", abci.QuerySnapshots, res, err)
	}
	var list []snapshot.Info
	if err := json.Unmarshal(res.Value, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Height != s.Height || list[0].Chunks != s.Chunks || !bytes.Equal(list[0].Hash, s.Hash) {
		t.Errorf("queried snapshots %+v, want the one at %d", list, s.Height)
	}
	none := initApp(t, store.NewMemory())
	res, err = none.Query(context.Background(), &abcitypes.RequestQuery{Path: abci.QuerySnapshots})
	if err != nil || string(res.Value) != "[]" {
		t.Errorf("Query %s without snapshots = %q, %v; want []", abci.QuerySnapshots, res.Value, err)
	}
}

// TestSnapshotRetainHeight: with snapshots every 3 heights and 2 kept,
// Commit's retain height keeps the blocks after the oldest snapshot served,
// so that a node restoring either can fetch the blocks that follow it.
func TestSnapshotRetainHeight(t *testing.T) {
	st := store.NewMemory()
	a := initApp(t, st)
	m, err := snapshot.NewManager(t.TempDir(), st, 3, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a.UseSnapshots(m)
	a.RetainBlocks(2)
	var retain []int64
	for h := int64(1); h <= 10; h++ {
		if _, err := a.FinalizeBlock(context.Background(), &abcitypes.RequestFinalizeBlock{Height: h, Time: genesisTime}); err != nil {
			t.Fatal(err)
		}
		res, err := a.Commit(context.Background(), &abcitypes.RequestCommit{})
		if err != nil {
			t.Fatal(err)
		}
		m.Wait() // the snapshot of a multiple of 3 is written before the next block
		retain = append(retain, res.RetainHeight)
	}
	// Snapshots 3, then 3 and 6 (from 7 on), then 6 and 9 (from 10 on):
	// the oldest served bounds height-2. (Going by the newest, 7 and 8
	// would prune to 5 and 6, the blocks a node restoring 3 needs.)
	want := []int64{0, 0, 0, 2, 3, 3, 3, 3, 3, 6}
	if !reflect.DeepEqual(retain, want) {
		t.Errorf("retain heights %v, want %v", retain, want)
	}
}
