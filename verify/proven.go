package verify

import (
	"encoding/json"
	"errors"

	"github.com/bftmon/bftmon/app"
)

// proven is a node's answer to a read with proof=1 (api.Proven).
type proven struct {
	Height int64           `json:"height"`
	Code   int             `json:"code"`
	Index  int64           `json:"index"`
	Answer json.RawMessage `json:"answer"`
	Proofs json.RawMessage `json:"proofs"`
}

// verifyProofs checks the proof bundle against appHash and returns a
// reader of what it proves.
func verifyProofs(raw json.RawMessage, appHash []byte) (app.Reader, error) {
	return nil, errors.New("proof verification not available yet")
}
