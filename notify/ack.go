package notify

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/bftmon/bftmon/app/types"
)

// HeaderAck is the response header in which a receiver acknowledges a
// native delivery: the base64 ed25519 signature, under the key an operator
// registered for the receiver (bftmon receiver register), of
// types.AckBytes(chain id, alert id, receiver name, digest), where digest
// is the body's "digest" field once the receiver has checked it (CheckBody).
// One acknowledged receipt settles the alert for that receiver on every
// node, and only if the digest is that of the committed alert.
const HeaderAck = "Bftmon-Ack"

// Acknowledge is what a receiver answers in the Bftmon-Ack header to
// acknowledge a delivery: the base64 ed25519 signature by priv of
// types.AckBytes(chainID, alertID, receiver, digest). The delivery's body
// names all four (chain_id, id, receiver, digest); webhook-id is the alert
// id too. An acknowledgement covers the body whose digest it signs: one of
// a forged body is refused by the app and settles nothing.
func Acknowledge(priv ed25519.PrivateKey, chainID, alertID, receiver string, digest []byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(priv, types.AckBytes(chainID, alertID, receiver, digest)))
}

// VerifyAck checks a Bftmon-Ack header value against a receiver's public
// key, over the digest of the alert's body, and returns the signature.
func VerifyAck(pub ed25519.PublicKey, chainID, alertID, receiver string, digest []byte, header string) ([]byte, error) {
	sig, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return nil, fmt.Errorf("%s %q: not base64: %w", HeaderAck, header, err)
	}
	if len(sig) != ed25519.SignatureSize || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s is %d bytes, want an ed25519 signature of %d", HeaderAck, len(sig), ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, types.AckBytes(chainID, alertID, receiver, digest), sig) {
		return nil, errors.New(HeaderAck + " does not verify for this chain, alert, receiver and the committed body's digest under the receiver's registered key")
	}
	return sig, nil
}
