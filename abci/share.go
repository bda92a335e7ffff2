package abci

import "github.com/bftmon/bftmon/app"

// MempoolShare is how many transactions of one signer this node's mempool
// takes at once. CometBFT's mempool is first come, first served: without a
// share, one observer flooding valid transactions would fill it and keep
// the honest observers' batches waiting until they are stale. An honest
// signer has a few in flight; the nonce window (app.NonceWindow) makes more
// than that many pointless anyway.
const MempoolShare = app.NonceWindow

// shareExpiry is how many heights an admitted transaction counts against its
// signer's share without being rechecked (CometBFT rechecks every mempool
// transaction after each block; one that left the mempool otherwise stops
// being rechecked and stops counting after this many heights).
const shareExpiry = 5

// shares tracks, per signer, the transactions this node's mempool holds:
// node-local admission policy, never part of the replicated state.
type shares struct {
	height  int64                       // of the last committed block
	pending map[string]map[string]int64 // signer → tx hash → height last seen
	signer  map[string]string           // tx hash → its signer, for done
}

// full tells whether signer's share has no room for tx (which it does not
// hold yet), after dropping what expired. It is cheap: CheckTx asks it
// before verifying a signature.
func (s *shares) full(signer, hash string) bool {
	txs := s.pending[signer]
	if _, ok := txs[hash]; ok || len(txs) < MempoolShare {
		return false
	}
	for h, seen := range txs {
		if seen < s.height-shareExpiry {
			delete(txs, h)
			delete(s.signer, h)
		}
	}
	return len(txs) >= MempoolShare
}

// admit counts tx of signer, whose signature verified, against its share,
// if there is room.
func (s *shares) admit(signer, hash string) bool {
	if s.full(signer, hash) {
		return false
	}
	if s.pending == nil {
		s.pending, s.signer = map[string]map[string]int64{}, map[string]string{}
	}
	txs := s.pending[signer]
	if txs == nil {
		txs = map[string]int64{}
		s.pending[signer] = txs
	}
	txs[hash] = s.height
	s.signer[hash] = signer
	return true
}

// done takes the tx with hash out of its signer's share: committed, or
// evicted by a recheck.
func (s *shares) done(hash string) {
	signer, ok := s.signer[hash]
	if !ok {
		return
	}
	delete(s.signer, hash)
	if txs := s.pending[signer]; txs != nil {
		delete(txs, hash)
		if len(txs) == 0 {
			delete(s.pending, signer)
		}
	}
}
