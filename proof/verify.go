package proof

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"

	ics23 "github.com/cosmos/ics23/go"

	"github.com/bftmon/bftmon/app"
)

// spec is the proof format of the store's IAVL tree.
var spec = ics23.IavlSpec

// Verify checks every proof of b against appHash and returns a reader
// that serves only what they establish: Get of a key proven present (its
// value) or absent (nil), Iterate of a prefix whose whole range is proven
// (every key in it present and neighbour of the next in the tree, and the
// neighbours outside it on each side). Anything else fails with an error
// wrapping ErrNotProven that names the key or prefix. Verify fails, and
// returns no reader, if the bundle is over a size limit, does not decode,
// holds a proof that does not verify against appHash, or does not prove
// every key and range it lists.
func Verify(b *Bundle, appHash []byte) (app.Reader, error) {
	if b == nil {
		return nil, errors.New("verify proofs: no bundle")
	}
	if len(appHash) == 0 {
		return nil, errors.New("verify proofs: no app hash")
	}
	if n := len(b.Proof); n > MaxBundleBytes {
		return nil, fmt.Errorf("verify proofs: %d bytes of proof, over the limit of %d", n, MaxBundleBytes)
	}
	if n := len(b.Keys) + len(b.Ranges); n > MaxEntries {
		return nil, fmt.Errorf("verify proofs: %d keys and ranges, over the limit of %d", n, MaxEntries)
	}
	exist, err := decode(b.Proof)
	if err != nil {
		return nil, fmt.Errorf("verify proofs: %w", err)
	}
	v := &verified{}
	for _, e := range exist {
		if err := e.Verify(spec, appHash, e.Key, e.Value); err != nil {
			return nil, fmt.Errorf("verify proofs: proof of %q: %v", e.Key, err)
		}
	}
	slices.SortFunc(exist, func(a, b *ics23.ExistenceProof) int { return bytes.Compare(a.Key, b.Key) })
	for i, e := range exist {
		if i > 0 && bytes.Equal(e.Key, exist[i-1].Key) {
			if !bytes.Equal(e.Value, exist[i-1].Value) {
				return nil, fmt.Errorf("verify proofs: two values of %q", e.Key)
			}
			continue
		}
		v.keys = append(v.keys, e.Key)
		v.values = append(v.values, e.Value)
		v.paths = append(v.paths, e.Path)
	}
	n := len(v.keys)
	v.next = make([]bool, n)
	for i := 0; i+1 < n; i++ {
		v.next[i] = neighbours(v.paths[i], v.paths[i+1])
	}
	if n > 0 {
		v.leftmost = ics23.IsLeftMost(spec.InnerSpec, v.paths[0])
		v.rightmost = ics23.IsRightMost(spec.InnerSpec, v.paths[n-1])
	}
	v.paths = nil
	for _, k := range b.Keys {
		if _, err := v.Get(k); err != nil {
			return nil, fmt.Errorf("verify proofs: %w", err)
		}
	}
	for _, p := range b.Ranges {
		if _, _, err := v.span(p); err != nil {
			return nil, fmt.Errorf("verify proofs: %w", err)
		}
	}
	return v, nil
}

// neighbours tells whether right is the next leaf after left in the tree
// (both paths verified against the same root). ICS23's IsLeftNeighbor
// expects paths of real neighbours and runs off the end of others: it is
// guarded.
func neighbours(left, right []*ics23.InnerOp) (ok bool) {
	if len(left) == 0 || len(right) == 0 {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return ics23.IsLeftNeighbor(spec.InnerSpec, left, right)
}

// decode unmarshals a compressed (or plain) batch proof and decompresses
// it into its existence proofs (those of non-existence proofs included),
// after checking its sizes and every reference to a shared inner node.
func decode(bz []byte) ([]*ics23.ExistenceProof, error) {
	if len(bz) == 0 {
		return nil, nil
	}
	var cp ics23.CommitmentProof
	if err := cp.Unmarshal(bz); err != nil {
		return nil, fmt.Errorf("decode proof: %w", err)
	}
	var out []*ics23.ExistenceProof
	steps := 0
	addExist := func(e *ics23.ExistenceProof) error {
		if e == nil {
			return nil
		}
		if len(e.Path) > maxDepth {
			return fmt.Errorf("proof of %q: path of %d steps, over %d", e.Key, len(e.Path), maxDepth)
		}
		if len(out) >= MaxEntries {
			return fmt.Errorf("over %d proofs", MaxEntries)
		}
		if steps += len(e.Path); steps > MaxSteps {
			return fmt.Errorf("over %d path steps in all", MaxSteps)
		}
		out = append(out, e)
		return nil
	}
	addNonexist := func(n *ics23.NonExistenceProof) error {
		if n == nil {
			return errors.New("an empty proof")
		}
		if err := addExist(n.Left); err != nil {
			return err
		}
		return addExist(n.Right)
	}
	switch p := cp.Proof.(type) {
	case *ics23.CommitmentProof_Exist:
		if p.Exist == nil {
			return nil, errors.New("an empty proof")
		}
		return out, addExist(p.Exist)
	case *ics23.CommitmentProof_Nonexist:
		return out, addNonexist(p.Nonexist)
	case *ics23.CommitmentProof_Batch:
		if p.Batch == nil {
			return nil, errors.New("an empty batch proof")
		}
		if n := len(p.Batch.Entries); n > MaxEntries {
			return nil, fmt.Errorf("%d proofs in the batch, over %d", n, MaxEntries)
		}
		for _, e := range p.Batch.Entries {
			var err error
			switch {
			case e.GetExist() != nil:
				err = addExist(e.GetExist())
			case e.GetNonexist() != nil:
				err = addNonexist(e.GetNonexist())
			default:
				err = errors.New("an empty entry in the batch proof")
			}
			if err != nil {
				return nil, err
			}
		}
		return out, nil
	case *ics23.CommitmentProof_Compressed:
		c := p.Compressed
		if c == nil {
			return nil, errors.New("an empty compressed proof")
		}
		if n := len(c.Entries); n > MaxEntries {
			return nil, fmt.Errorf("%d proofs in the batch, over %d", n, MaxEntries)
		}
		if n := len(c.LookupInners); n > MaxEntries {
			return nil, fmt.Errorf("%d shared inner nodes, over %d", n, MaxEntries)
		}
		expand := func(ce *ics23.CompressedExistenceProof) (*ics23.ExistenceProof, error) {
			if ce == nil {
				return nil, nil
			}
			if len(ce.Path) > maxDepth {
				return nil, fmt.Errorf("proof of %q: path of %d steps, over %d", ce.Key, len(ce.Path), maxDepth)
			}
			if steps+len(ce.Path) > MaxSteps { // before expanding it
				return nil, fmt.Errorf("over %d path steps in all", MaxSteps)
			}
			e := &ics23.ExistenceProof{Key: ce.Key, Value: ce.Value, Leaf: ce.Leaf, Path: make([]*ics23.InnerOp, len(ce.Path))}
			for i, step := range ce.Path {
				if step < 0 || int(step) >= len(c.LookupInners) || c.LookupInners[step] == nil {
					return nil, fmt.Errorf("proof of %q: step %d refers to inner node %d of %d", ce.Key, i, step, len(c.LookupInners))
				}
				e.Path[i] = c.LookupInners[step]
			}
			return e, nil
		}
		for _, ce := range c.Entries {
			switch {
			case ce.GetExist() != nil:
				e, err := expand(ce.GetExist())
				if err != nil {
					return nil, err
				}
				if err := addExist(e); err != nil {
					return nil, err
				}
			case ce.GetNonexist() != nil:
				l, err := expand(ce.GetNonexist().Left)
				if err != nil {
					return nil, err
				}
				r, err := expand(ce.GetNonexist().Right)
				if err != nil {
					return nil, err
				}
				if l == nil && r == nil {
					return nil, errors.New("an empty non-existence proof")
				}
				if err := addExist(l); err != nil {
					return nil, err
				}
				if err := addExist(r); err != nil {
					return nil, err
				}
			default:
				return nil, errors.New("an empty entry in the batch proof")
			}
		}
		return out, nil
	default:
		return nil, errors.New("not a known kind of proof")
	}
}

// verified is what a bundle proves: keys present with their values, in key
// order, which of them are neighbours in the tree, and whether the first
// and last are the tree's first and last.
type verified struct {
	keys   [][]byte
	values [][]byte
	paths  [][]*ics23.InnerOp // while Verify builds it
	// next[i]: keys[i+1] is the key after keys[i] in the tree.
	next                []bool
	leftmost, rightmost bool
}

// emptyBefore tells whether no key lies between keys[i-1] and keys[i] (the
// start of the tree for i 0, its end for i len(keys)).
func (v *verified) emptyBefore(i int) bool {
	switch {
	case len(v.keys) == 0:
		return false
	case i == 0:
		return v.leftmost
	case i == len(v.keys):
		return v.rightmost
	default:
		return v.next[i-1]
	}
}

// Get returns the value of a key proven present, nil for a key proven
// absent, and an error wrapping ErrNotProven otherwise.
func (v *verified) Get(key []byte) ([]byte, error) {
	i := sort.Search(len(v.keys), func(i int) bool { return bytes.Compare(v.keys[i], key) >= 0 })
	if i < len(v.keys) && bytes.Equal(v.keys[i], key) {
		return bytes.Clone(v.values[i]), nil
	}
	if v.emptyBefore(i) {
		return nil, nil
	}
	return nil, fmt.Errorf("get %q: %w", key, ErrNotProven)
}

// span returns the indexes [from, to) of the keys with the prefix if the
// proofs show there is no other, an error wrapping ErrNotProven otherwise.
func (v *verified) span(prefix []byte) (from, to int, err error) {
	from = sort.Search(len(v.keys), func(i int) bool { return bytes.Compare(v.keys[i], prefix) >= 0 })
	// The range starts at its first key if that is the prefix itself,
	// after a proven gap otherwise.
	if (from == len(v.keys) || !bytes.Equal(v.keys[from], prefix)) && !v.emptyBefore(from) {
		return 0, 0, fmt.Errorf("range %q: %w", prefix, ErrNotProven)
	}
	for to = from; to < len(v.keys) && bytes.HasPrefix(v.keys[to], prefix); to++ {
		if !v.emptyBefore(to + 1) {
			return 0, 0, fmt.Errorf("range %q: after %q: %w", prefix, v.keys[to], ErrNotProven)
		}
	}
	return from, to, nil
}

// Iterate calls fn for each key with the prefix, in key order, if the
// whole range is proven; it fails with an error wrapping ErrNotProven,
// before calling fn, otherwise.
func (v *verified) Iterate(prefix []byte, fn func(key, value []byte) bool) error {
	from, to, err := v.span(prefix)
	if err != nil {
		return fmt.Errorf("iterate: %w", err)
	}
	for i := from; i < to; i++ {
		if !fn(bytes.Clone(v.keys[i]), bytes.Clone(v.values[i])) {
			return nil
		}
	}
	return nil
}
