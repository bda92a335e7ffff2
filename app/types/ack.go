package types

// AckDomain starts every receiver acknowledgement's signed bytes, so that
// an acknowledgement can never be taken for any other signature.
const AckDomain = "bftmon-ack/v1\x00"

// AckBytes is what a webhook receiver signs, with the ed25519 key an
// operator registered for it, to acknowledge that it received an alert:
// "bftmon-ack/v1\x00" ‖ chain id ‖ "\x00" ‖ alert id ‖ "\x00" ‖ receiver
// name. Alert ids (hex) and receiver names ([a-z0-9._-]) contain no NUL
// byte, so the parts cannot run into each other.
func AckBytes(chainID, alertID, receiver string) []byte {
	b := make([]byte, 0, len(AckDomain)+len(chainID)+len(alertID)+len(receiver)+2)
	b = append(b, AckDomain...)
	b = append(b, chainID...)
	b = append(b, 0)
	b = append(b, alertID...)
	b = append(b, 0)
	return append(b, receiver...)
}
