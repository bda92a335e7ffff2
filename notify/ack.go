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
// types.AckBytes(chain id, alert id, receiver name). One acknowledged
// receipt settles the alert for that receiver on every node.
const HeaderAck = "Bftmon-Ack"

// Acknowledge is what a receiver answers in the Bftmon-Ack header to
// acknowledge a delivery: the base64 ed25519 signature by priv of
// types.AckBytes(chainID, alertID, receiver). The delivery's body names
// all three (chain_id, id, receiver); webhook-id is the alert id too.
func Acknowledge(priv ed25519.PrivateKey, chainID, alertID, receiver string) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(priv, types.AckBytes(chainID, alertID, receiver)))
}

// VerifyAck checks a Bftmon-Ack header value against a receiver's public
// key and returns the signature.
func VerifyAck(pub ed25519.PublicKey, chainID, alertID, receiver, header string) ([]byte, error) {
	sig, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return nil, fmt.Errorf("%s %q: not base64: %w", HeaderAck, header, err)
	}
	if len(sig) != ed25519.SignatureSize || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s is %d bytes, want an ed25519 signature of %d", HeaderAck, len(sig), ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, types.AckBytes(chainID, alertID, receiver), sig) {
		return nil, errors.New(HeaderAck + " does not verify for this chain, alert and receiver under the receiver's registered key")
	}
	return sig, nil
}
