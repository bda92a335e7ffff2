package app

import "fmt"

// Reader reads one version of the replicated state.
type Reader interface {
	// Get returns the value of key, or nil if it is absent.
	Get(key []byte) ([]byte, error)
	// Iterate calls fn for each key with the prefix in key order until fn
	// returns false.
	Iterate(prefix []byte, fn func(key, value []byte) bool) error
}

// Store is the working version the application writes into. Its root hash
// authenticates all replicated state; the store package implements it with
// an IAVL tree.
type Store interface {
	Reader
	Set(key, value []byte) error
	Delete(key []byte) error
	WorkingHash() []byte
}

// scan decodes every record under prefix, in key order.
func scan[T any, PT interface {
	*T
	proto
}](r Reader, prefix []byte) ([]T, error) {
	var out []T
	var derr error
	err := r.Iterate(prefix, func(k, v []byte) bool {
		var rec T
		if derr = PT(&rec).Unmarshal(v); derr != nil {
			derr = fmt.Errorf("decode %q: %w", k, derr)
			return false
		}
		out = append(out, rec)
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}
