// Package proof makes the answers of reads verifiable: a Recorder notes
// every key and range a read of the state touches, Prove proves them with
// ICS23 Merkle proofs against the version's app hash, and Verify checks a
// Bundle of such proofs against an app hash the client trusts and returns
// a reader that serves only what the proofs establish. It does no I/O.
package proof

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"

	ics23 "github.com/cosmos/ics23/go"

	"github.com/bftmon/bftmon/app"
)

// ErrNotProven is wrapped by the errors of a verified reader (Verify) for
// a key or a range its bundle does not prove.
var ErrNotProven = errors.New("not proven")

// Limits on a bundle, checked before anything in it is decompressed or
// verified.
const (
	// MaxBundleBytes caps the marshalled proof of a bundle.
	MaxBundleBytes = 64 << 20
	// MaxEntries caps the keys and ranges of a bundle, and the proofs
	// and shared inner nodes of its batch.
	MaxEntries = 1_000_000
	// MaxSteps caps the path steps of all the proofs of a bundle
	// together, which sharing inner nodes (compression) would otherwise
	// let a small bundle multiply: 130,000 proofs 32 deep.
	MaxSteps = 1 << 22
	// maxDepth caps the path of one proof (ICS23's own default limit).
	maxDepth = 128
)

// Bundle is the proof of a read: the keys it read with Get (each proven
// present or absent), the prefixes it iterated (each proven complete) and
// one compressed ICS23 batch proof of the records that establish them.
// It is the wire form of proofs over HTTP ([]byte fields are base64 in
// JSON).
type Bundle struct {
	// Keys are the keys read with Get, proven present or absent.
	Keys [][]byte `json:"keys,omitempty"`
	// Ranges are the prefixes iterated, proven complete.
	Ranges [][]byte `json:"ranges,omitempty"`
	// Proof is the protobuf of a compressed ICS23 batch CommitmentProof.
	Proof []byte `json:"proof"`
}

// Recorder is an app.Reader that reads through another one and records
// every key read with Get and every prefix iterated. A range is recorded
// whole even if the iteration stopped early, and is proven whole. It is
// safe for concurrent use.
type Recorder struct {
	r      app.Reader
	mu     sync.Mutex
	keys   map[string]bool
	ranges map[string]bool
}

// NewRecorder returns a Recorder reading r.
func NewRecorder(r app.Reader) *Recorder {
	return &Recorder{r: r, keys: map[string]bool{}, ranges: map[string]bool{}}
}

// Get reads key from the underlying reader and records it.
func (rec *Recorder) Get(key []byte) ([]byte, error) {
	rec.mu.Lock()
	rec.keys[string(key)] = true
	rec.mu.Unlock()
	return rec.r.Get(key)
}

// Iterate iterates the underlying reader and records the prefix.
func (rec *Recorder) Iterate(prefix []byte, fn func(key, value []byte) bool) error {
	rec.mu.Lock()
	rec.ranges[string(prefix)] = true
	rec.mu.Unlock()
	return rec.r.Iterate(prefix, fn)
}

// Keys returns the keys read with Get so far, sorted.
func (rec *Recorder) Keys() [][]byte { return rec.sorted(rec.keys) }

// Ranges returns the prefixes iterated so far, sorted.
func (rec *Recorder) Ranges() [][]byte { return rec.sorted(rec.ranges) }

func (rec *Recorder) sorted(m map[string]bool) [][]byte {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := make([][]byte, 0, len(m))
	for k := range m {
		out = append(out, []byte(k))
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}

// Prover proves keys of one version of the state and iterates it; a
// *store.Reader is one.
type Prover interface {
	// Proof returns an ICS23 existence proof of key if it is present, a
	// non-existence proof otherwise.
	Proof(key []byte) (*ics23.CommitmentProof, error)
	// Iterate calls fn for each key with the prefix in key order until fn
	// returns false.
	Iterate(prefix []byte, fn func(key, value []byte) bool) error
}

// Prove proves every key and range rec recorded, from p (which must read
// the same version rec read). A range is proven by the existence proofs of
// all its keys, which Verify checks are neighbours in the tree, and of the
// neighbours outside it on each side (the non-existence proofs of the
// prefix and of the last key followed by 0x00).
func Prove(p Prover, rec *Recorder) (*Bundle, error) {
	b := &Bundle{Keys: rec.Keys(), Ranges: rec.Ranges()}
	exist := map[string]*ics23.ExistenceProof{}
	add := func(cp *ics23.CommitmentProof, of []byte) error {
		var es []*ics23.ExistenceProof
		switch {
		case cp.GetExist() != nil:
			es = append(es, cp.GetExist())
		case cp.GetNonexist() != nil:
			es = append(es, cp.GetNonexist().GetLeft(), cp.GetNonexist().GetRight())
		default:
			return fmt.Errorf("prove %q: neither an existence nor a non-existence proof", of)
		}
		for _, e := range es {
			if e == nil {
				continue
			}
			if len(e.Value) == 0 {
				return fmt.Errorf("prove %q: key %q holds an empty value, which ICS23 cannot prove", of, e.Key)
			}
			exist[string(e.Key)] = e
		}
		return nil
	}
	prove := func(key []byte) error {
		if _, ok := exist[string(key)]; ok {
			return nil
		}
		cp, err := p.Proof(key)
		if err != nil {
			return fmt.Errorf("prove %q: %w", key, err)
		}
		return add(cp, key)
	}
	for _, k := range b.Keys {
		if err := prove(k); err != nil {
			return nil, err
		}
	}
	for _, prefix := range b.Ranges {
		var keys [][]byte
		if err := p.Iterate(prefix, func(k, _ []byte) bool {
			keys = append(keys, k)
			return true
		}); err != nil {
			return nil, fmt.Errorf("prove range %q: %w", prefix, err)
		}
		// The left edge: the prefix itself, or its neighbours.
		if len(prefix) > 0 {
			if err := prove(prefix); err != nil {
				return nil, fmt.Errorf("prove range %q: %w", prefix, err)
			}
		} else if len(keys) == 0 {
			// The whole state, empty: nothing to prove it with.
			return nil, fmt.Errorf("prove range %q: the state is empty", prefix)
		}
		for _, k := range keys {
			if err := prove(k); err != nil {
				return nil, fmt.Errorf("prove range %q: %w", prefix, err)
			}
		}
		// The right edge: the last key's right neighbour.
		if n := len(keys); n > 0 {
			if err := prove(append(bytes.Clone(keys[n-1]), 0)); err != nil {
				return nil, fmt.Errorf("prove range %q: %w", prefix, err)
			}
		}
	}
	if len(exist) == 0 {
		return b, nil
	}
	names := make([]string, 0, len(exist))
	for k := range exist {
		names = append(names, k)
	}
	slices.Sort(names)
	cps := make([]*ics23.CommitmentProof, len(names))
	for i, k := range names {
		cps[i] = &ics23.CommitmentProof{Proof: &ics23.CommitmentProof_Exist{Exist: exist[k]}}
	}
	batch, err := ics23.CombineProofs(cps)
	if err != nil {
		return nil, fmt.Errorf("combine %d proofs: %w", len(cps), err)
	}
	if b.Proof, err = batch.Marshal(); err != nil {
		return nil, fmt.Errorf("encode %d proofs: %w", len(cps), err)
	}
	return b, nil
}
