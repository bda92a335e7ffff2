package proof_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/bftmon/bftmon/proof"
	"github.com/bftmon/bftmon/store"
)

// FuzzVerify feeds Verify's decoder arbitrary bundles (their JSON wire
// form) against the hash of a fixed state: it must never panic, and a
// bundle it accepts must serve exactly the state on everything it lists.
func FuzzVerify(f *testing.F) {
	s := store.NewMemory()
	defer s.Close()
	m := map[string][]byte{"a": {1}, "a\x00": {2}, "ab": {3}, "b/1": {4}, "b/2": {5}, "\xff": {6}, "\x00": {7}}
	r := commit(f, s, m)
	hash := r.Hash()
	for _, read := range []func(*proof.Recorder) error{
		func(rec *proof.Recorder) error { _, err := rec.Get([]byte("a")); return err },
		func(rec *proof.Recorder) error { _, err := rec.Get([]byte("zz")); return err },
		func(rec *proof.Recorder) error {
			return rec.Iterate([]byte("b/"), func(_, _ []byte) bool { return true })
		},
		func(rec *proof.Recorder) error { return rec.Iterate(nil, func(_, _ []byte) bool { return true }) },
		func(rec *proof.Recorder) error {
			return rec.Iterate([]byte("c"), func(_, _ []byte) bool { return true })
		},
	} {
		rec := proof.NewRecorder(r)
		if err := read(rec); err != nil {
			f.Fatal(err)
		}
		b, err := proof.Prove(r, rec)
		if err != nil {
			f.Fatal(err)
		}
		bz, err := json.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bz)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b proof.Bundle
		if json.Unmarshal(data, &b) != nil {
			return
		}
		vr, err := proof.Verify(&b, hash)
		if err != nil {
			if vr != nil {
				t.Fatalf("a reader with an error: %v", err)
			}
			return
		}
		for _, k := range b.Keys {
			got, err := vr.Get(k)
			if err != nil || !bytes.Equal(got, m[string(k)]) {
				t.Fatalf("accepted bundle serves %q=%q (%v), state has %q", k, got, err, m[string(k)])
			}
		}
		for _, p := range b.Ranges {
			want := modelRange(m, p)
			i := 0
			err := vr.Iterate(p, func(k, v []byte) bool {
				if i >= len(want) || !bytes.Equal(k, want[i][0]) || !bytes.Equal(v, want[i][1]) {
					t.Fatalf("accepted bundle serves %q=%q in range %q, not the state's", k, v, p)
				}
				i++
				return true
			})
			if err != nil || i != len(want) {
				t.Fatalf("accepted bundle serves range %q with %d keys (%v), the state has %d", p, i, err, len(want))
			}
		}
		if _, err := vr.Get([]byte("b/3")); err != nil && !errors.Is(err, proof.ErrNotProven) {
			t.Fatalf("get b/3: %v", err)
		}
	})
}
