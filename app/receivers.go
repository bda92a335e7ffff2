package app

import (
	"crypto/ed25519"
	"fmt"

	"github.com/bftmon/bftmon/app/types"
)

// registerReceiver registers, replaces or (with an empty key) removes the
// acknowledgement key of a webhook receiver. The signer must be an operator
// whose prefixes cover the receiver's name.
func (a *App) registerReceiver(signer []byte, m *types.RegisterReceiver) (string, error) {
	if err := validRegisterReceiver(m); err != nil {
		return "", err
	}
	if err := a.authorizeOperator(signer, m.Name); err != nil {
		return "", err
	}
	key := receiverKey(m.Name)
	var old types.Receiver
	exists, err := a.get(key, &old)
	if err != nil {
		return "", err
	}
	if len(m.PubKey) == 0 {
		if !exists {
			return "", refuse(CodeNotFound, "remove receiver %s: no key is registered for it", m.Name)
		}
		if err := a.store.Delete(key); err != nil {
			return "", err
		}
		a.meta.ReceiversHeight = a.meta.Height
		return fmt.Sprintf("removed the key of receiver %s", m.Name), nil
	}
	rec := types.Receiver{Name: m.Name, PubKey: m.PubKey, Operator: signer, Height: a.meta.Height}
	if err := a.put(key, &rec); err != nil {
		return "", err
	}
	a.meta.ReceiversHeight = a.meta.Height
	verb := "registered"
	if exists {
		verb = "replaced"
	}
	return fmt.Sprintf("%s the key %s of receiver %s", verb, types.KeyID(m.PubKey), m.Name), nil
}

// validRegisterReceiver checks a receiver registration without looking at
// any state.
func validRegisterReceiver(m *types.RegisterReceiver) error {
	if m == nil {
		return refuse(CodeInvalid, "empty receiver registration")
	}
	if err := validName("receiver name", m.Name); err != nil {
		return refuse(CodeInvalid, "register receiver: %v", err)
	}
	if n := len(m.PubKey); n != 0 && n != ed25519.PublicKeySize {
		return refuse(CodeInvalid, "register receiver %s: public key is %d bytes, want an ed25519 key of %d (or none, to remove it)", m.Name, n, ed25519.PublicKeySize)
	}
	return nil
}

// verifyAck checks a receipt's acknowledgement against the receiver's
// registered key, over digest, the digest of the committed alert.
func (a *App) verifyAck(r *types.DeliveryReceipt, digest []byte) error {
	var rec types.Receiver
	ok, err := a.get(receiverKey(r.Receiver), &rec)
	if err != nil {
		return err
	}
	if !ok {
		return refuse(CodeBadAck, "receipt of %s for %s carries an acknowledgement, but no key is registered for receiver %s (bftmon receiver register)", r.AlertId, r.Receiver, r.Receiver)
	}
	if !ed25519.Verify(rec.PubKey, types.AckBytes(a.meta.ChainId, r.AlertId, r.Receiver, digest), r.Ack) {
		return refuse(CodeBadAck, "receipt of %s for %s: the acknowledgement does not verify under receiver %s's registered key %s for chain %q over the committed body (digest %x): it covers another body (a forged delivery?), or is not the receiver's", r.AlertId, r.Receiver, r.Receiver, types.KeyID(rec.PubKey), a.meta.ChainId, digest)
	}
	return nil
}

// Receiver returns the registered key of the webhook receiver name, or
// ErrNotFound.
func (q *Query) Receiver(name string) (types.Receiver, error) {
	var rec types.Receiver
	bz, err := q.r.Get(receiverKey(name))
	if err != nil {
		return rec, fmt.Errorf("read receiver %s: %w", name, err)
	}
	if bz == nil {
		return rec, fmt.Errorf("receiver %s: %w", name, ErrNotFound)
	}
	if err := rec.Unmarshal(bz); err != nil {
		return rec, fmt.Errorf("decode receiver %s: %w", name, err)
	}
	return rec, nil
}

// Receivers lists the registered webhook receivers, by name.
func (q *Query) Receivers() ([]types.Receiver, error) {
	out, err := scan[types.Receiver](q.r, prefixReceiver)
	if err != nil {
		return nil, fmt.Errorf("read receivers: %w", err)
	}
	return out, nil
}

// Operators lists the operators, by public key.
func (q *Query) Operators() ([]types.Operator, error) {
	out, err := scan[types.Operator](q.r, prefixOp)
	if err != nil {
		return nil, fmt.Errorf("read operators: %w", err)
	}
	return out, nil
}
