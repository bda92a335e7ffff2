package verify

import (
	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/proof"
)

// proven is a node's answer to a read with proof=1.
type proven = api.Proven

// verifyProofs checks the proof bundle against appHash and returns a
// reader of what it proves (proof.Verify).
func verifyProofs(b *proof.Bundle, appHash []byte) (app.Reader, error) {
	return proof.Verify(b, appHash)
}
