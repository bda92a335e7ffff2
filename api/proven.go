package api

import (
	"encoding/json"

	"github.com/bftmon/bftmon/proof"
)

// ProofParam is the query parameter that asks a read route for its proven
// form (?proof=1 or ?proof=true).
const ProofParam = "proof"

// MinHeightParam asks a read to be answered from a height at least this
// (?min_height=H): a node behind waits for it, up to the read's wait or
// MinHeightWait, and answers 503 if it does not get there. Verifying
// clients send the highest height they accepted, so a lagging node's
// honest answer is not refused as a step back, and a write's commit height,
// so the next read reflects the write.
const MinHeightParam = "min_height"

// Proven is the answer of a read route asked with ?proof=1: the plain
// answer the route gives at the state of Height, and the proofs of every
// record it was built from against that version's app hash (which the
// block header of Height+1 carries). A client checks the proofs
// (proof.Verify), rebuilds the answer from the proven records alone, and
// compares it with Answer.
type Proven struct {
	// Height is the version of the state read: the newest whose app hash
	// is in a committed header (the node's latest height minus one).
	Height int64 `json:"height"`
	// Code is the HTTP status the plain route gives at Height, such as
	// 404 for a service that is not registered (its absence is proven).
	Code int `json:"code"`
	// Index is the plain answer's index (X-Bftmon-Index) at Height.
	Index int64 `json:"index"`
	// Answer is the plain answer's body: its JSON, or, for a plain-text
	// answer (Consul's errors), its text as a JSON string.
	Answer json.RawMessage `json:"answer"`
	// Proofs prove the records the answer was built from.
	Proofs *proof.Bundle `json:"proofs"`
}
