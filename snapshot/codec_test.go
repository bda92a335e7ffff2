package snapshot

import (
	"reflect"
	"testing"

	"github.com/bftmon/bftmon/store"
)

// TestDecodeNode: a node cut anywhere (as at a chunk boundary) is "not yet",
// never an error or a wrong node; whole, it decodes to what was encoded,
// keeping an inner node's nil value apart from a leaf's empty one.
func TestDecodeNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    store.ExportNode
	}{
		{"leaf", store.ExportNode{Key: []byte("k/1"), Value: []byte("value"), Version: 7, Height: 0}},
		{"empty leaf value", store.ExportNode{Key: []byte("k"), Value: []byte{}, Version: 1, Height: 0}},
		{"inner", store.ExportNode{Key: []byte("m"), Value: nil, Version: 300, Height: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := encodeNode(nil, &tc.n)
			for i := range len(b) {
				if _, _, ok, err := decodeNode(b[:i]); ok || err != nil {
					t.Fatalf("prefix of %d of %d bytes: ok %v err %v, want not yet", i, len(b), ok, err)
				}
			}
			got, used, ok, err := decodeNode(append(b, 0xAA))
			if !ok || err != nil || used != len(b) {
				t.Fatalf("decode: ok %v err %v used %d, want %d", ok, err, used, len(b))
			}
			if !reflect.DeepEqual(*got, tc.n) {
				t.Fatalf("decoded %+v, want %+v", *got, tc.n)
			}
		})
	}
}
