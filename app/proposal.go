package app

import (
	"fmt"
	"strconv"

	"github.com/bftmon/bftmon/app/types"
)

// Block limits. A proposer can put anything into a block, so honest
// validators refuse a proposal that breaks them (ProcessProposal) and never
// make one (PrepareProposal). Genesis sets the consensus block.max_bytes
// and block.max_gas to MaxBlockBytes and MaxBlockGas, so the mempool reaps
// within them too.
const (
	// MaxBlockBytes bounds a block's transactions: room for a 10,000-check
	// network's observations of one second several times over.
	MaxBlockBytes = 8 << 20
	// MaxBlockGas bounds a block's work: a transaction costs 1, and 1 more
	// per observation or check it carries (Gas). At about 36k observations/s
	// of execution on one core, a full block executes in under 2 s.
	MaxBlockGas = 60_000
)

// Gas is what executing a decoded transaction costs, in the units of
// MaxBlockGas.
func Gas(body *types.TxBody) int64 {
	switch m := body.Msg.Sum.(type) {
	case *types.Msg_Observe:
		return 1 + int64(len(m.Observe.Observations))
	case *types.Msg_Register:
		return 1 + int64(len(m.Register.Instance.Checks))
	case *types.Msg_KvTxn:
		if m.KvTxn != nil {
			return 1 + int64(len(m.KvTxn.Ops))
		}
	case *types.Msg_Equivocation:
		return 3 // two more signatures to verify
	}
	return 1
}

// Admitted is a transaction that passed the proposal checks.
type Admitted struct {
	Signer string // the signer's public key, as bytes in a string
	Nonce  uint64
	// Content is ContentID: what the signer signed.
	Content string
	Gas     int64
}

// Admit runs the checks a block's every transaction must pass, whoever
// proposed it: size, decoding, canonical encoding, signature, and a signer
// that is an observer or operator of the chain. They depend on nothing a
// block changes, so every honest validator reaches the same answer for the
// same proposal. What depends on the state (nonces, scopes, the catalog)
// FinalizeBlock decides, with a code per transaction.
func (a *App) Admit(tx []byte) (Admitted, error) {
	body, err := a.decodeKnown(tx)
	if err != nil {
		return Admitted{}, err
	}
	return admitted(tx, body), nil
}

func admitted(tx []byte, body *types.TxBody) Admitted {
	id, _ := types.ContentID(tx)
	return Admitted{Signer: string(body.Signer), Nonce: body.Nonce, Content: id, Gas: Gas(body)}
}

// BlockBudget adds up a block's transactions against the block limits. It
// does not cap one signer's share: a flooding observer would then keep the
// mempool full of its own transactions and the honest observers' batches
// out of it; the nonce window and the gas limit bound what it costs.
type BlockBudget struct {
	bytes, gas int64
	seen       map[string]bool // signer and nonce
}

// Fit tells whether adm, of size n bytes, fits in the block beside what
// Add took, and why not.
func (b *BlockBudget) Fit(adm Admitted, n int) error {
	nonceKey := adm.Signer + strconv.FormatUint(adm.Nonce, 10)
	switch {
	case b.bytes+int64(n) > MaxBlockBytes:
		return fmt.Errorf("block over %d bytes", MaxBlockBytes)
	case b.gas+adm.Gas > MaxBlockGas:
		return fmt.Errorf("block over %d gas", MaxBlockGas)
	case b.seen[nonceKey]:
		return fmt.Errorf("signer %s's nonce %d is in the block twice", types.KeyID([]byte(adm.Signer)), adm.Nonce)
	}
	return nil
}

// Add counts adm, of size n bytes, into the block.
func (b *BlockBudget) Add(adm Admitted, n int) {
	if b.seen == nil {
		b.seen = map[string]bool{}
	}
	b.bytes += int64(n)
	b.gas += adm.Gas
	b.seen[adm.Signer+strconv.FormatUint(adm.Nonce, 10)] = true
}
