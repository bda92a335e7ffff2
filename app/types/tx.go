package types

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// MaxTxBytes bounds an encoded envelope; larger transactions are refused.
const MaxTxBytes = 1 << 20

// SignBytes is what a signer signs: the chain id followed by the body bytes.
func SignBytes(chainID string, body []byte) []byte {
	b := make([]byte, 0, len(chainID)+len(body))
	b = append(b, chainID...)
	return append(b, body...)
}

// SignTx builds a signed, encoded envelope carrying msg.
func SignTx(chainID string, key ed25519.PrivateKey, nonce uint64, msg Msg) ([]byte, error) {
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("sign tx: key is not ed25519")
	}
	body := TxBody{Signer: pub, Nonce: nonce, Msg: &msg}
	bz, err := body.Marshal()
	if err != nil {
		return nil, fmt.Errorf("sign tx: encode body: %w", err)
	}
	env := Envelope{Body: bz, Signature: ed25519.Sign(key, SignBytes(chainID, bz))}
	return env.Marshal()
}

// DecodeTx decodes an envelope and its body and verifies the signature.
// It does not look at any state: nonce and authorisation checks are the
// application's.
func DecodeTx(chainID string, tx []byte) (*TxBody, error) {
	body, env, err := DecodeUnverified(tx)
	if err != nil {
		return nil, err
	}
	if err := Verify(chainID, body, env); err != nil {
		return nil, err
	}
	return body, nil
}

// DecodeUnverified decodes an envelope and its body, checking sizes and the
// canonical encoding but not the signature (Verify does).
func DecodeUnverified(tx []byte) (*TxBody, *Envelope, error) {
	if len(tx) > MaxTxBytes {
		return nil, nil, fmt.Errorf("tx is %d bytes, over the %d-byte limit", len(tx), MaxTxBytes)
	}
	var env Envelope
	if err := env.Unmarshal(tx); err != nil {
		return nil, nil, fmt.Errorf("decode envelope: %w", err)
	}
	var body TxBody
	if err := body.Unmarshal(env.Body); err != nil {
		return nil, nil, fmt.Errorf("decode body: %w", err)
	}
	// One signed content, one encoding: otherwise anyone could re-encode a
	// signed envelope (a field appended, a default spelt out), get the copy
	// committed first, and turn the original into a "replay".
	if canon, err := env.Marshal(); err != nil || !bytes.Equal(canon, tx) {
		return nil, nil, ErrNotCanonical
	}
	if canon, err := body.Marshal(); err != nil || !bytes.Equal(canon, env.Body) {
		return nil, nil, ErrNotCanonical
	}
	if len(body.Signer) != ed25519.PublicKeySize {
		return nil, nil, fmt.Errorf("signer key is %d bytes, want %d", len(body.Signer), ed25519.PublicKeySize)
	}
	if body.Msg == nil || body.Msg.Sum == nil {
		return nil, nil, errors.New("tx carries no message")
	}
	return &body, &env, nil
}

// Verify checks an envelope's signature by its body's signer for chainID.
func Verify(chainID string, body *TxBody, env *Envelope) error {
	if len(env.Signature) != ed25519.SignatureSize || !ed25519.Verify(body.Signer, SignBytes(chainID, env.Body), env.Signature) {
		return ErrBadSignature
	}
	return nil
}

// ErrNotCanonical is returned for an envelope or body whose bytes are not the
// canonical encoding of what they decode to.
var ErrNotCanonical = errors.New("tx is not canonically encoded (unknown or repeated fields, or defaults spelt out): sign it with bftmon's encoder")

// ContentID identifies what a transaction's signer signed: the hex SHA-256
// of its envelope's body. Waiters follow it rather than the envelope hash.
// ok is false when tx does not decode as an envelope.
func ContentID(tx []byte) (id string, ok bool) {
	var env Envelope
	if err := env.Unmarshal(tx); err != nil || len(env.Body) == 0 {
		return "", false
	}
	h := sha256.Sum256(env.Body)
	return hex.EncodeToString(h[:]), true
}

// ErrBadSignature is returned for a signature that does not verify.
var ErrBadSignature = errors.New("signature does not verify for this signer and chain id")

// KeyID is the id of a public key: the hex of the first 20 bytes of its
// SHA-256, like a CometBFT address.
func KeyID(pub []byte) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:20])
}

// TxHash is the hash CometBFT uses for a transaction (SHA-256, upper-case hex).
func TxHash(tx []byte) string {
	h := sha256.Sum256(tx)
	return fmt.Sprintf("%X", h[:])
}

// Name names a status the way the API and CLI show it.
func (s Status) Name() string {
	switch s {
	case STATUS_PASSING:
		return "passing"
	case STATUS_WARNING:
		return "warning"
	case STATUS_CRITICAL:
		return "critical"
	case STATUS_UNKNOWN:
		return "unknown"
	case STATUS_STALE:
		return "stale"
	case STATUS_DISPUTED:
		return "disputed"
	default:
		return "pending"
	}
}

// ParseStatus is the inverse of Name for the four observer statuses and the
// two verdict-only ones.
func ParseStatus(s string) (Status, error) {
	for st := STATUS_NONE; st <= STATUS_DISPUTED; st++ {
		if st.Name() == s {
			return st, nil
		}
	}
	return STATUS_NONE, fmt.Errorf("unknown status %q (want passing, warning, critical, unknown)", s)
}

// FromExitCode maps a Nagios plugin exit code to a status (anything outside
// 0..3 is unknown).
func FromExitCode(code int) Status {
	switch code {
	case 0:
		return STATUS_PASSING
	case 1:
		return STATUS_WARNING
	case 2:
		return STATUS_CRITICAL
	default:
		return STATUS_UNKNOWN
	}
}

// ExitCode maps a status to the Nagios plugin exit code.
func (s Status) ExitCode() int {
	switch s {
	case STATUS_PASSING:
		return 0
	case STATUS_WARNING:
		return 1
	case STATUS_CRITICAL:
		return 2
	default:
		return 3
	}
}

// Severity orders statuses for "worst of": passing < pending < unknown <
// stale < disputed < warning < critical.
func (s Status) Severity() int {
	switch s {
	case STATUS_PASSING:
		return 0
	case STATUS_NONE:
		return 1
	case STATUS_UNKNOWN:
		return 2
	case STATUS_STALE:
		return 3
	case STATUS_DISPUTED:
		return 4
	case STATUS_WARNING:
		return 5
	default:
		return 6
	}
}
