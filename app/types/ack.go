package types

import "crypto/sha256"

// AckDomain starts every receiver acknowledgement's signed bytes, so that
// an acknowledgement can never be taken for any other signature.
const AckDomain = "bftmon-ack/v2\x00"

// AlertDigest is the digest of a committed alert's body: the SHA-256 of
// the alert's canonical protobuf bytes, the bytes the app stores (and a
// native delivery carries, base64, in its "record" field). An
// acknowledgement covers it, so that an acknowledgement of a forged body
// never settles the committed alert.
func AlertDigest(al *Alert) ([]byte, error) {
	bz, err := al.Marshal()
	if err != nil {
		return nil, err
	}
	return DigestOf(bz), nil
}

// DigestOf is the SHA-256 of an alert's canonical protobuf bytes.
func DigestOf(record []byte) []byte {
	d := sha256.Sum256(record)
	return d[:]
}

// AckBytes is what a webhook receiver signs, with the ed25519 key an
// operator registered for it, to acknowledge that it received an alert
// with a given body: "bftmon-ack/v2\x00" ‖ chain id ‖ "\x00" ‖ alert id ‖
// "\x00" ‖ receiver name ‖ "\x00" ‖ digest (AlertDigest of the body it
// received, 32 raw bytes). Alert ids (hex) and receiver names
// ([a-z0-9._-]) contain no NUL byte, and the digest is last and of fixed
// length, so the parts cannot run into each other.
func AckBytes(chainID, alertID, receiver string, digest []byte) []byte {
	b := make([]byte, 0, len(AckDomain)+len(chainID)+len(alertID)+len(receiver)+len(digest)+3)
	b = append(b, AckDomain...)
	b = append(b, chainID...)
	b = append(b, 0)
	b = append(b, alertID...)
	b = append(b, 0)
	b = append(b, receiver...)
	b = append(b, 0)
	return append(b, digest...)
}
