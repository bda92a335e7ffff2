package proof_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	ics23 "github.com/cosmos/ics23/go"
	"pgregory.net/rapid"

	"github.com/bftmon/bftmon/proof"
	"github.com/bftmon/bftmon/store"
)

// tb is what the helpers need of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
}

// alphabet makes keys that are often prefixes of each other, k and k+0x00
// both, and at both ends of the key space.
var alphabet = []byte{0x00, 0x01, 'a', 'b', 0xfe, 0xff}

func genKey() *rapid.Generator[[]byte] {
	return rapid.SliceOfN(rapid.SampledFrom(alphabet), 1, 4)
}

// genState is a model of the state: key → non-empty value.
func genState(t *rapid.T, label string) map[string][]byte {
	m := map[string][]byte{}
	n := rapid.IntRange(1, 40).Draw(t, label+" size")
	for range n {
		k := genKey().Draw(t, label+" key")
		m[string(k)] = rapid.SliceOfN(rapid.Byte(), 1, 8).Draw(t, label+" value")
	}
	return m
}

// commit writes a model into s (deleting what is not in it) and commits.
func commit(t tb, s *store.Store, m map[string][]byte) *store.Reader {
	t.Helper()
	var old [][]byte
	if err := s.Iterate(nil, func(k, _ []byte) bool { old = append(old, k); return true }); err != nil {
		t.Fatal(err)
	}
	for _, k := range old {
		if _, ok := m[string(k)]; !ok {
			if err := s.Delete(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k, v := range m {
		if err := s.Set([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Reader(0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// reads performs random reads through rec: Gets and Iterates, some of
// which stop early.
func reads(t *rapid.T, rec *proof.Recorder, m map[string][]byte) {
	known := make([][]byte, 0, len(m))
	for k := range m {
		known = append(known, []byte(k))
	}
	slices.SortFunc(known, bytes.Compare)
	n := rapid.IntRange(1, 8).Draw(t, "reads")
	for range n {
		var k []byte
		switch rapid.IntRange(0, 3).Draw(t, "read kind") {
		case 0: // a key present
			k = rapid.SampledFrom(known).Draw(t, "present key")
			if _, err := rec.Get(k); err != nil {
				t.Fatal(err)
			}
		case 1: // any key
			if _, err := rec.Get(genKey().Draw(t, "key")); err != nil {
				t.Fatal(err)
			}
		case 2: // a range, maybe empty, maybe the whole state
			p := rapid.SliceOfN(rapid.SampledFrom(alphabet), 0, 3).Draw(t, "prefix")
			stop := rapid.IntRange(0, 5).Draw(t, "stop after")
			i := 0
			if err := rec.Iterate(p, func(_, _ []byte) bool { i++; return i < stop }); err != nil {
				t.Fatal(err)
			}
		case 3: // the range of a present key's prefix
			k = rapid.SampledFrom(known).Draw(t, "key of prefix")
			p := k[:rapid.IntRange(0, len(k)).Draw(t, "prefix length")]
			if err := rec.Iterate(p, func(_, _ []byte) bool { return true }); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// modelRange is the model's keys with the prefix, in order.
func modelRange(m map[string][]byte, prefix []byte) [][2][]byte {
	var out [][2][]byte
	for k, v := range m {
		if bytes.HasPrefix([]byte(k), prefix) {
			out = append(out, [2][]byte{[]byte(k), v})
		}
	}
	slices.SortFunc(out, func(a, b [2][]byte) int { return bytes.Compare(a[0], b[0]) })
	return out
}

// roundTrip sends a bundle through its JSON wire form.
func roundTrip(t tb, b *proof.Bundle) *proof.Bundle {
	t.Helper()
	bz, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var out proof.Bundle
	if err := json.Unmarshal(bz, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// checkEqual asserts that the verified reader serves every recorded read
// as the model has it.
func checkEqual(t *rapid.T, vr interface {
	Get([]byte) ([]byte, error)
	Iterate([]byte, func(k, v []byte) bool) error
}, b *proof.Bundle, m map[string][]byte) {
	for _, k := range b.Keys {
		got, err := vr.Get(k)
		if err != nil {
			t.Fatalf("get %q: %v", k, err)
		}
		want, ok := m[string(k)]
		if !ok && got != nil || ok && !bytes.Equal(got, want) {
			t.Fatalf("get %q: %q, want %q (present %v)", k, got, want, ok)
		}
	}
	for _, p := range b.Ranges {
		var got [][2][]byte
		if err := vr.Iterate(p, func(k, v []byte) bool { got = append(got, [2][]byte{k, v}); return true }); err != nil {
			t.Fatalf("iterate %q: %v", p, err)
		}
		want := modelRange(m, p)
		if len(got) != len(want) {
			t.Fatalf("iterate %q: %d keys, want %d", p, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i][0], want[i][0]) || !bytes.Equal(got[i][1], want[i][1]) {
				t.Fatalf("iterate %q: #%d %q=%q, want %q=%q", p, i, got[i][0], got[i][1], want[i][0], want[i][1])
			}
		}
	}
}

// TestProveVerify: for random states and random reads, Prove then Verify
// gives a reader equal to the state on every recorded read, and one that
// refuses what was not recorded and not otherwise proven.
func TestProveVerify(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := store.NewMemory()
		defer s.Close()
		m := genState(t, "state")
		r := commit(t, s, m)
		rec := proof.NewRecorder(r)
		reads(t, rec, m)
		b, err := proof.Prove(r, rec)
		if err != nil {
			t.Fatal(err)
		}
		b = roundTrip(t, b)
		vr, err := proof.Verify(b, r.Hash())
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		checkEqual(t, vr, b, m)
		// Whatever else it serves agrees with the state too.
		k := genKey().Draw(t, "other key")
		got, err := vr.Get(k)
		switch {
		case errors.Is(err, proof.ErrNotProven):
		case err != nil:
			t.Fatalf("get %q: %v", k, err)
		case !bytes.Equal(got, m[string(k)]):
			t.Fatalf("get %q: %q, want %q", k, got, m[string(k)])
		}
	})
}

// entries decompresses a bundle's batch into its existence proofs.
func entries(t tb, b *proof.Bundle) []*ics23.ExistenceProof {
	t.Helper()
	var cp ics23.CommitmentProof
	if err := cp.Unmarshal(b.Proof); err != nil {
		t.Fatal(err)
	}
	var out []*ics23.ExistenceProof
	for _, e := range ics23.Decompress(&cp).GetBatch().GetEntries() {
		out = append(out, e.GetExist())
	}
	return out
}

// rebatch encodes existence proofs as a bundle's proof.
func rebatch(t tb, es []*ics23.ExistenceProof) []byte {
	t.Helper()
	cps := make([]*ics23.CommitmentProof, len(es))
	for i, e := range es {
		cps[i] = &ics23.CommitmentProof{Proof: &ics23.CommitmentProof_Exist{Exist: e}}
	}
	c, err := ics23.CombineProofs(cps)
	if err != nil {
		t.Fatal(err)
	}
	bz, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return bz
}

// TestMutationsRefused: a bundle with any one proof left out (a key of a
// range, a neighbour), a value swapped, verified against another version's
// hash, garbage or truncated, is refused, never turned into a reader.
func TestMutationsRefused(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := store.NewMemory()
		defer s.Close()
		m := genState(t, "state")
		r := commit(t, s, m)
		rec := proof.NewRecorder(r)
		reads(t, rec, m)
		b, err := proof.Prove(r, rec)
		if err != nil {
			t.Fatal(err)
		}
		es := entries(t, b)
		if len(es) == 0 {
			t.Fatal("no proofs")
		}
		hash := r.Hash()
		refused := func(what string, mb *proof.Bundle, h []byte) {
			if vr, err := proof.Verify(mb, h); err == nil || vr != nil {
				t.Fatalf("%s: accepted (err %v)", what, err)
			}
		}
		i := rapid.IntRange(0, len(es)-1).Draw(t, "entry")

		// Every proof is needed: leave one out.
		dropped := slices.Delete(slices.Clone(es), i, i+1)
		refused("drop "+string(es[i].Key), &proof.Bundle{Keys: b.Keys, Ranges: b.Ranges, Proof: rebatch(t, dropped)}, hash)

		// Swap a value.
		swapped := slices.Clone(es)
		e := *es[i]
		e.Value = append(bytes.Clone(e.Value), 'x')
		swapped[i] = &e
		refused("swap value of "+string(e.Key), &proof.Bundle{Keys: b.Keys, Ranges: b.Ranges, Proof: rebatch(t, swapped)}, hash)

		// Another version: the same reads at a changed state.
		m2 := genState(t, "next state")
		m2["m/changed"] = []byte{1}
		r2 := commit(t, s, m2)
		refused("proof of the previous version", b, r2.Hash())

		// Garbage and truncation.
		refused("garbage", &proof.Bundle{Keys: b.Keys, Ranges: b.Ranges, Proof: rapid.SliceOf(rapid.Byte()).Draw(t, "garbage")}, hash)
		cut := rapid.IntRange(0, len(b.Proof)-1).Draw(t, "cut")
		refused("truncated", &proof.Bundle{Keys: b.Keys, Ranges: b.Ranges, Proof: b.Proof[:cut]}, hash)
		refused("no hash", b, nil)
	})
}

// TestProofOfAnotherKey: a key's proof stands for another key only if the
// other key is that key, one of its neighbours, or absent in the same gap
// (checked against a naive model of the sorted keys).
func TestProofOfAnotherKey(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := store.NewMemory()
		defer s.Close()
		m := genState(t, "state")
		r := commit(t, s, m)
		a, b := genKey().Draw(t, "claimed key"), genKey().Draw(t, "proven key")
		rec := proof.NewRecorder(r)
		if _, err := rec.Get(b); err != nil {
			t.Fatal(err)
		}
		pb, err := proof.Prove(r, rec)
		if err != nil {
			t.Fatal(err)
		}
		_, err = proof.Verify(&proof.Bundle{Keys: [][]byte{a}, Proof: pb.Proof}, r.Hash())
		if covers(m, b, a) != (err == nil) {
			t.Fatalf("proof of %q for %q: err %v, want accepted %v", b, a, err, covers(m, b, a))
		}
	})
}

// covers tells, naively, whether the proof of key b (itself if present,
// its neighbours if absent) proves key a present or absent: a is one of
// those keys, or absent between two of them next to each other in the
// state, or before the first key or after the last if that key is one.
func covers(m map[string][]byte, b, a []byte) bool {
	var keys [][]byte
	for k := range m {
		keys = append(keys, []byte(k))
	}
	slices.SortFunc(keys, bytes.Compare)
	// around returns the keys of the state just below and above x (nil:
	// none).
	around := func(x []byte) (lo, hi []byte) {
		for _, k := range keys {
			if bytes.Compare(k, x) < 0 {
				lo = k
			} else if bytes.Compare(k, x) > 0 && hi == nil {
				hi = k
			}
		}
		return lo, hi
	}
	var proven [][]byte
	if _, ok := m[string(b)]; ok {
		proven = [][]byte{b}
	} else {
		lo, hi := around(b)
		proven = [][]byte{lo, hi}
	}
	in := func(x []byte) bool {
		return x != nil && slices.ContainsFunc(proven, func(p []byte) bool { return bytes.Equal(p, x) })
	}
	if _, ok := m[string(a)]; ok {
		return in(a)
	}
	lo, hi := around(a)
	switch {
	case lo == nil:
		return in(hi)
	case hi == nil:
		return in(lo)
	default:
		return in(lo) && in(hi)
	}
}

// TestNotProven: a verified reader refuses, with ErrNotProven naming it, a
// key or a range its proofs do not cover.
func TestNotProven(t *testing.T) {
	s := store.NewMemory()
	defer s.Close()
	m := map[string][]byte{"a/1": {1}, "a/2": {2}, "b/1": {3}, "c/1": {4}, "c/2": {5}}
	r := commit(t, s, m)
	rec := proof.NewRecorder(r)
	if _, err := rec.Get([]byte("a/1")); err != nil {
		t.Fatal(err)
	}
	if err := rec.Iterate([]byte("c/"), func(_, _ []byte) bool { return false }); err != nil {
		t.Fatal(err)
	}
	b, err := proof.Prove(r, rec)
	if err != nil {
		t.Fatal(err)
	}
	vr, err := proof.Verify(b, r.Hash())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		read func() error
		want string
	}{
		{"key not read", func() error { _, err := vr.Get([]byte("a/2")); return err }, `get "a/2": not proven`},
		{"range not read", func() error { return vr.Iterate([]byte("a/"), func(_, _ []byte) bool { return true }) }, `iterate: range "a/": after "a/1": not proven`},
		{"whole state", func() error { return vr.Iterate(nil, func(_, _ []byte) bool { return true }) }, `iterate: range "": after "a/1": not proven`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.read()
			if !errors.Is(err, proof.ErrNotProven) || err.Error() != tt.want {
				t.Fatalf("err %v, want %q wrapping ErrNotProven", err, tt.want)
			}
		})
	}
	// What the proofs cover is served: the key read, the range read whole
	// though the read stopped at its first key, an absent key in it, and
	// the range's left neighbour.
	if v, err := vr.Get([]byte("a/1")); err != nil || !bytes.Equal(v, []byte{1}) {
		t.Fatalf("get a/1: %q %v", v, err)
	}
	var n int
	if err := vr.Iterate([]byte("c/"), func(_, _ []byte) bool { n++; return true }); err != nil || n != 2 {
		t.Fatalf("iterate c/: %d keys, %v", n, err)
	}
	if v, err := vr.Get([]byte("c/1x")); err != nil || v != nil {
		t.Fatalf("get c/1x: %q %v", v, err)
	}
	if v, err := vr.Get([]byte("b/1")); err != nil || !bytes.Equal(v, []byte{3}) {
		t.Fatalf("get b/1: %q %v", v, err)
	}
}

// TestLimits: an over-large bundle is refused before it is decoded.
func TestLimits(t *testing.T) {
	hash := bytes.Repeat([]byte{1}, 32)
	if _, err := proof.Verify(&proof.Bundle{Proof: make([]byte, proof.MaxBundleBytes+1)}, hash); err == nil {
		t.Fatal("an over-large proof accepted")
	}
	if _, err := proof.Verify(&proof.Bundle{Keys: make([][]byte, proof.MaxEntries+1)}, hash); err == nil {
		t.Fatal("too many keys accepted")
	}
	// A compressed batch referring to a shared node it does not have.
	bad := &ics23.CommitmentProof{Proof: &ics23.CommitmentProof_Compressed{Compressed: &ics23.CompressedBatchProof{
		Entries: []*ics23.CompressedBatchEntry{{Proof: &ics23.CompressedBatchEntry_Exist{Exist: &ics23.CompressedExistenceProof{Key: []byte("k"), Value: []byte("v"), Path: []int32{7}}}}},
	}}}
	bz, err := bad.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proof.Verify(&proof.Bundle{Keys: [][]byte{[]byte("k")}, Proof: bz}, hash); err == nil {
		t.Fatal("a dangling reference accepted")
	}
	// Shared inner nodes cannot multiply a small bundle past MaxSteps:
	// 4 MiB of references to one node, refused before expanding them all.
	path := make([]int32, 128)
	entry := &ics23.CompressedBatchEntry{Proof: &ics23.CompressedBatchEntry_Exist{Exist: &ics23.CompressedExistenceProof{Key: []byte("k"), Value: []byte("v"), Path: path}}}
	c := &ics23.CompressedBatchProof{LookupInners: []*ics23.InnerOp{{Hash: ics23.HashOp_SHA256, Prefix: []byte{1}}}}
	for range proof.MaxSteps/len(path) + 1 {
		c.Entries = append(c.Entries, entry)
	}
	big := &ics23.CommitmentProof{Proof: &ics23.CommitmentProof_Compressed{Compressed: c}}
	if bz, err = big.Marshal(); err != nil {
		t.Fatal(err)
	}
	if _, err := proof.Verify(&proof.Bundle{Keys: [][]byte{[]byte("k")}, Proof: bz}, hash); err == nil || !strings.Contains(err.Error(), "path steps") {
		t.Fatalf("%d bytes expanding to %d steps: %v", len(bz), len(c.Entries)*len(path), err)
	}
}
