package verify

import (
	"encoding/json"
	"fmt"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/proof"
)

// proven is a node's answer to a read with proof=1 (api.Proven), its
// proofs kept raw until they are verified.
type proven struct {
	Height int64           `json:"height"`
	Code   int             `json:"code"`
	Index  int64           `json:"index"`
	Answer json.RawMessage `json:"answer"`
	Proofs json.RawMessage `json:"proofs"`
}

// verifyProofs decodes the proof bundle, checks it against appHash and
// returns a reader of what it proves (proof.Verify).
func verifyProofs(raw json.RawMessage, appHash []byte) (app.Reader, error) {
	var b proof.Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("decode the proof bundle: %w", err)
	}
	return proof.Verify(&b, appHash)
}
