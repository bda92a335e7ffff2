package txindex_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	dbm "github.com/cometbft/cometbft-db"

	"github.com/bftmon/bftmon/txindex"
)

// hash is the hex hash of a named transaction.
func hash(name string) string {
	h := sha256.Sum256([]byte(name))
	return fmt.Sprintf("%X", h[:])
}

// block is the outcomes of height in the tests' chains: transactions
// "tx<height>a" (accepted) and "tx<height>b" (refused, code 7).
func block(height int64) []txindex.Tx {
	return []txindex.Tx{
		{Hash: hash(fmt.Sprintf("tx%da", height)), Code: 0, Log: "ok"},
		{Hash: hash(fmt.Sprintf("tx%db", height)), Code: 7, Log: fmt.Sprintf("refused at %d", height)},
	}
}

func newIndex(t *testing.T, retain int64) *txindex.Index {
	t.Helper()
	x, err := txindex.New(dbm.NewMemDB(), retain)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// found reports whether tx "tx<height><ab>" is in x, at height.
func found(t *testing.T, x *txindex.Index, height int64, ab string) bool {
	t.Helper()
	r, ok, err := x.Get(hash(fmt.Sprintf("tx%d%s", height, ab)))
	if err != nil {
		t.Fatal(err)
	}
	if ok && r.Height != height {
		t.Fatalf("tx%d%s found at height %d", height, ab, r.Height)
	}
	return ok
}

// TestPutGetPrune: a chain of heights put one by one keeps exactly the last
// retain heights (all with retain 0), each outcome as it was put.
func TestPutGetPrune(t *testing.T) {
	for _, tc := range []struct {
		name          string
		retain, chain int64
		wantFrom      int64
	}{
		{"keep all", 0, 30, 1},
		{"retain above chain", 50, 30, 1},
		{"retain 10", 10, 30, 21},
		{"retain 1", 1, 30, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newIndex(t, tc.retain)
			for h := int64(1); h <= tc.chain; h++ {
				if err := x.Put(h, block(h)); err != nil {
					t.Fatal(err)
				}
			}
			if from, last := x.Span(); from != tc.wantFrom || last != tc.chain {
				t.Errorf("span %d..%d, want %d..%d", from, last, tc.wantFrom, tc.chain)
			}
			for h := int64(1); h <= tc.chain; h++ {
				want := h >= tc.wantFrom
				if got := found(t, x, h, "a"); got != want {
					t.Errorf("height %d accepted tx found %v, want %v", h, got, want)
				}
				if got := found(t, x, h, "b"); got != want {
					t.Errorf("height %d refused tx found %v, want %v", h, got, want)
				}
			}
			r, ok, err := x.Get(hash(fmt.Sprintf("tx%db", tc.chain)))
			if err != nil || !ok {
				t.Fatalf("newest refused tx: %v %v", ok, err)
			}
			want := txindex.Result{Hash: hash(fmt.Sprintf("tx%db", tc.chain)), Height: tc.chain, Code: 7, Log: fmt.Sprintf("refused at %d", tc.chain)}
			if r != want {
				t.Errorf("got %+v, want %+v", r, want)
			}
		})
	}
}

// TestDuplicates: an accepted outcome is not replaced by a refused copy
// of the transaction committed later, and pruning the height of an older
// copy leaves the newer one's outcome in place.
func TestDuplicates(t *testing.T) {
	tx := hash("dup")
	for _, tc := range []struct {
		name       string
		codes      []uint32 // the copies' codes at heights 1, 2, ...
		wantHeight int64
		wantCode   uint32
	}{
		{"accepted then refused copy", []uint32{0, 5}, 1, 0},
		{"refused then accepted", []uint32{5, 0}, 2, 0},
		{"refused twice", []uint32{5, 6}, 2, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newIndex(t, 0)
			for i, code := range tc.codes {
				if err := x.Put(int64(i+1), []txindex.Tx{{Hash: tx, Code: code}}); err != nil {
					t.Fatal(err)
				}
			}
			r, ok, err := x.Get(tx)
			if err != nil || !ok || r.Height != tc.wantHeight || r.Code != tc.wantCode {
				t.Errorf("got %+v %v %v, want height %d code %d", r, ok, err, tc.wantHeight, tc.wantCode)
			}
		})
	}
	t.Run("older copy pruned", func(t *testing.T) {
		x := newIndex(t, 3)
		if err := x.Put(1, []txindex.Tx{{Hash: tx, Code: 5}}); err != nil {
			t.Fatal(err)
		}
		if err := x.Put(2, []txindex.Tx{{Hash: tx, Code: 6}}); err != nil {
			t.Fatal(err)
		}
		for h := int64(3); h <= 4; h++ { // height 1 is pruned with height 4
			if err := x.Put(h, nil); err != nil {
				t.Fatal(err)
			}
		}
		if r, ok, err := x.Get(tx); err != nil || !ok || r.Height != 2 {
			t.Errorf("got %+v %v %v, want the copy at height 2", r, ok, err)
		}
	})
	t.Run("same block prunes and re-indexes", func(t *testing.T) {
		x := newIndex(t, 2)
		if err := x.Put(1, []txindex.Tx{{Hash: tx, Code: 5}}); err != nil {
			t.Fatal(err)
		}
		if err := x.Put(2, nil); err != nil {
			t.Fatal(err)
		}
		if err := x.Put(3, []txindex.Tx{{Hash: tx, Code: 6}}); err != nil { // prunes height 1
			t.Fatal(err)
		}
		if r, ok, err := x.Get(tx); err != nil || !ok || r.Height != 3 {
			t.Errorf("got %+v %v %v, want the copy at height 3", r, ok, err)
		}
	})
}

// TestPruneBudget: a retention lowered on a large index deletes at most
// PruneBudget transactions per Put, and catches up over later Puts.
func TestPruneBudget(t *testing.T) {
	db := dbm.NewMemDB()
	x, err := txindex.New(db, 0)
	if err != nil {
		t.Fatal(err)
	}
	const heights = 3 * txindex.PruneBudget / 2 // 2 txs each: 3 budgets of txs
	for h := int64(1); h <= heights; h++ {
		if err := x.Put(h, block(h)); err != nil {
			t.Fatal(err)
		}
	}
	if x, err = txindex.New(db, 10); err != nil { // restarted with a retention of 10
		t.Fatal(err)
	}
	count := func() (n int) {
		it, err := db.Iterator([]byte("t/"), []byte("t0"))
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		for ; it.Valid(); it.Next() {
			n++
		}
		return n
	}
	before := count()
	h := int64(heights + 1)
	if err := x.Put(h, block(h)); err != nil {
		t.Fatal(err)
	}
	if deleted := before + 2 - count(); deleted != txindex.PruneBudget {
		t.Errorf("one Put deleted %d txs, want the budget %d", deleted, txindex.PruneBudget)
	}
	for range 3 {
		h++
		if err := x.Put(h, block(h)); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != 20 {
		t.Errorf("%d txs left after catching up, want 20 (10 heights)", n)
	}
	if from, last := x.Span(); from != h-9 || last != h {
		t.Errorf("span %d..%d, want %d..%d", from, last, h-9, h)
	}
}

// chain is a block source holding heights from base to top.
type chain struct{ base, top int64 }

func (c chain) Block(_ context.Context, h int64) ([]txindex.Tx, error) {
	if h < c.base || h > c.top {
		return nil, fmt.Errorf("height %d not kept (%d..%d)", h, c.base, c.top)
	}
	return block(h), nil
}

// TestFill: the heights a crash left out, or that an empty index never
// had, are filled from the block source as far as it and the retention
// keep them, and the span is then without a gap.
func TestFill(t *testing.T) {
	for _, tc := range []struct {
		name    string
		retain  int64
		indexed int64 // heights 1..indexed put before the crash
		store   int64 // the app's height at restart
		base    int64 // the block store's lowest height
		live    int64 // heights put after restart, before the fill
		want    txindex.Gap
		from    int64 // the span's low end after the fill
	}{
		{"crash after one commit", 0, 20, 21, 1, 0, txindex.Gap{Low: 21, High: 21}, 1},
		{"crash, blocks committed meanwhile", 0, 20, 23, 1, 3, txindex.Gap{Low: 21, High: 23}, 1},
		{"nothing missing", 0, 20, 20, 1, 0, txindex.Gap{Low: 21, High: 20}, 1},
		{"empty index, retention bounds", 10, 0, 50, 1, 2, txindex.Gap{Low: 41, High: 50}, 43},
		{"empty index, block store bounds", 100, 0, 50, 30, 0, txindex.Gap{Low: 30, High: 50}, 30},
		{"empty index, keep all", 0, 0, 50, 1, 0, txindex.Gap{Low: 1, High: 50}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newIndex(t, tc.retain)
			for h := int64(1); h <= tc.indexed; h++ {
				if err := x.Put(h, block(h)); err != nil {
					t.Fatal(err)
				}
			}
			gap := x.GapBelow(tc.store, tc.base)
			if gap != tc.want {
				t.Fatalf("gap %+v, want %+v", gap, tc.want)
			}
			for h := tc.store + 1; h <= tc.store+tc.live; h++ { // the node commits on
				if err := x.Put(h, block(h)); err != nil {
					t.Fatal(err)
				}
			}
			heights, txs, err := x.Fill(context.Background(), chain{base: tc.base, top: tc.store + tc.live}, gap)
			if err != nil {
				t.Fatal(err)
			}
			// The live Puts pruned what the retention no longer keeps, and
			// the fill stops there.
			top := tc.store + tc.live
			wantLow := gap.Low
			if tc.retain > 0 {
				wantLow = max(wantLow, top-tc.retain+1)
			}
			if n := max(0, gap.High-wantLow+1); int64(heights) != n || int64(txs) != 2*n {
				t.Errorf("filled %d heights, %d txs; want %d, %d", heights, txs, n, 2*n)
			}
			if from, last := x.Span(); from != tc.from || last != top {
				t.Errorf("span %d..%d, want %d..%d", from, last, tc.from, top)
			}
			for h := int64(1); h <= top; h++ {
				if want := h >= tc.from; found(t, x, h, "a") != want {
					t.Errorf("height %d found %v, want %v", h, !want, want)
				}
			}
		})
	}
}

// TestFillStopsOnError: a height the source no longer has ends the fill
// with an error naming it, keeping what was filled.
func TestFillStopsOnError(t *testing.T) {
	x := newIndex(t, 0)
	heights, _, err := x.Fill(context.Background(), chain{base: 5, top: 10}, txindex.Gap{Low: 1, High: 10})
	if err == nil || heights != 6 {
		t.Fatalf("filled %d heights, err %v; want 6 and an error", heights, err)
	}
	if from, last := x.Span(); from != 5 || last != 10 {
		t.Errorf("span %d..%d, want 5..10", from, last)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := newIndex(t, 0).Fill(ctx, chain{base: 1, top: 10}, txindex.Gap{Low: 1, High: 10}); !errors.Is(err, context.Canceled) {
		t.Errorf("fill with a cancelled context: %v", err)
	}
}

// TestReopen: the index and its span survive closing and opening the
// database again.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	x, err := txindex.Open(dir, "txs", 5)
	if err != nil {
		t.Fatal(err)
	}
	for h := int64(1); h <= 8; h++ {
		if err := x.Put(h, block(h)); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if x, err = txindex.Open(dir, "txs", 5); err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if from, last := x.Span(); from != 4 || last != 8 {
		t.Errorf("span after reopening %d..%d, want 4..8", from, last)
	}
	if !found(t, x, 8, "b") || found(t, x, 3, "a") {
		t.Error("reopened index lost height 8 or kept height 3")
	}
}

// TestGetBadHash: a hash that is not hex is an error, not a miss.
func TestGetBadHash(t *testing.T) {
	if _, _, err := newIndex(t, 0).Get("xyz"); err == nil {
		t.Error("Get(\"xyz\") gave no error")
	}
}
