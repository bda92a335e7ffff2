package app

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// NonceWindow is how many of a signer's most recent nonces the state keeps.
// A nonce is fresh if it is above the signer's floor and not among them, so
// transactions of one signer may commit in any order within the window (a
// proposer that reorders an observer's batches voids neither), and each
// nonce means one thing once. When the window is full its lowest nonce
// becomes the floor.
const NonceWindow = 64

// nonces is a signer's nonce record: a floor, at or below which every nonce
// counts as used, and the used nonces above it, ascending.
//
// Encoding: the floor (8 bytes BE) followed by the window's nonces (8 bytes
// BE each). A record of one 8-byte floor is what older versions stored.
type nonces struct {
	floor uint64
	used  []uint64
}

func decodeNonces(bz []byte) (nonces, error) {
	var n nonces
	if len(bz) == 0 {
		return n, nil
	}
	if len(bz)%8 != 0 || len(bz)/8-1 > NonceWindow {
		return n, fmt.Errorf("nonce record of %d bytes", len(bz))
	}
	n.floor = binary.BigEndian.Uint64(bz)
	for i := 8; i < len(bz); i += 8 {
		n.used = append(n.used, binary.BigEndian.Uint64(bz[i:]))
	}
	return n, nil
}

func (n nonces) encode() []byte {
	bz := binary.BigEndian.AppendUint64(make([]byte, 0, 8*(1+len(n.used))), n.floor)
	for _, u := range n.used {
		bz = binary.BigEndian.AppendUint64(bz, u)
	}
	return bz
}

// fresh tells whether nonce has not been used (nor fallen below the floor).
func (n nonces) fresh(nonce uint64) bool {
	if nonce <= n.floor {
		return false
	}
	_, found := slices.BinarySearch(n.used, nonce)
	return !found
}

// use records nonce, which must be fresh.
func (n *nonces) use(nonce uint64) {
	i, _ := slices.BinarySearch(n.used, nonce)
	n.used = slices.Insert(n.used, i, nonce)
	if len(n.used) > NonceWindow {
		n.floor = n.used[0]
		n.used = slices.Delete(n.used, 0, 1)
	}
}

// signerNonces reads the nonce record of signer.
func (a *App) signerNonces(signer []byte) (nonces, error) {
	bz, err := a.store.Get(nonceKey(signer))
	if err != nil {
		return nonces{}, err
	}
	n, err := decodeNonces(bz)
	if err != nil {
		return n, fmt.Errorf("signer %x: %w", signer, err)
	}
	return n, nil
}

// useNonce records that signer used nonce.
func (a *App) useNonce(signer []byte, nonce uint64) error {
	n, err := a.signerNonces(signer)
	if err != nil {
		return err
	}
	n.use(nonce)
	return a.store.Set(nonceKey(signer), n.encode())
}
