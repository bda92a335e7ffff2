package app

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"

	"github.com/bftmon/bftmon/app/types"
)

// MaxReceivers bounds the receiver names one observer's receipts may
// record per alert, so that no signer can grow the state without limit.
// The bound is per observer: one observer filling it does not keep the
// others' receipts out.
const MaxReceivers = 32

// receipt records that the signer's node delivered an alert to a receiver.
// The signer must be an observer (a node signs receipts with its observer
// key) and the alert must be committed. A receipt that carries the
// receiver's acknowledgement is refused unless it verifies against the
// receiver's registered key over the digest of the alert as committed
// (types.AlertDigest): an acknowledgement of any other body, such as one a
// // faulty node forged under the alert's id, settles nothing. A receipt
// already recorded for the same alert, receiver and observer changes
// nothing, but for an acknowledgement that a receipt without one lacked.
func (a *App) receipt(signer []byte, r *types.DeliveryReceipt) (string, error) {
	ob := a.byPub[string(signer)]
	if ob == nil {
		return "", refuse(CodeUnauthorized, "signer %s is not an observer: only observers' nodes deliver alerts", types.KeyID(signer))
	}
	if err := validReceipt(r); err != nil {
		return "", err
	}
	loc, err := a.store.Get(alertIDKey(r.AlertId))
	if err != nil {
		return "", err
	}
	if loc == nil {
		return "", refuse(CodeNotFound, "alert %s is not committed", r.AlertId)
	}
	acked := len(r.Ack) > 0
	if acked {
		if len(loc) != 12 {
			return "", fmt.Errorf("alert %s: location %x is not 12 bytes", r.AlertId, loc)
		}
		record, err := a.store.Get(alertKey(int64(binary.BigEndian.Uint64(loc)), binary.BigEndian.Uint32(loc[8:])))
		if err != nil || record == nil {
			return "", fmt.Errorf("alert %s: record missing (%v)", r.AlertId, err)
		}
		if err := a.verifyAck(r, types.DigestOf(record)); err != nil {
			return "", err
		}
	}
	key := deliveryKey(r.AlertId, r.Receiver, ob.Id)
	var old types.Delivery
	if found, err := a.get(key, &old); err != nil {
		return "", err
	} else if found && (old.Acknowledged || !acked) {
		return fmt.Sprintf("delivery of %s to %s by %s already recorded", r.AlertId, r.Receiver, ob.Name), nil
	} else if found {
		// An acknowledgement that came after the receipt: it settles.
		old.Acknowledged = true
		if err := a.put(key, &old); err != nil {
			return "", err
		}
		a.deliveries = append(a.deliveries, old)
		a.meta.AlertHeight = a.meta.Height
		return fmt.Sprintf("delivery of %s to %s by %s now acknowledged by the receiver", r.AlertId, r.Receiver, ob.Name), nil
	}
	// The receivers this observer's receipts already name for the alert
	// (each key is one receiver: the repeat was caught above).
	mine := 0
	var derr error
	if err := a.store.Iterate(cat(prefixDelivery, r.AlertId, ""), func(_, v []byte) bool {
		var d types.Delivery
		if derr = d.Unmarshal(v); derr != nil {
			return false
		}
		if d.Observer == ob.Id {
			mine++
		}
		return true
	}); err != nil {
		return "", err
	} else if derr != nil {
		return "", derr
	}
	if mine >= MaxReceivers {
		return "", refuse(CodeTooLarge, "alert %s has receipts by %s for %d receivers already, the limit per observer", r.AlertId, ob.Name, MaxReceivers)
	}
	d := types.Delivery{AlertId: r.AlertId, Receiver: r.Receiver, Observer: ob.Id, Height: a.meta.Height, TimeMs: a.meta.TimeMs, Acknowledged: acked}
	if err := a.put(key, &d); err != nil {
		return "", err
	}
	a.deliveries = append(a.deliveries, d)
	a.meta.AlertHeight = a.meta.Height
	what := ""
	if acked {
		what = ", acknowledged by the receiver"
	}
	return fmt.Sprintf("delivery of %s to %s by %s recorded%s", r.AlertId, r.Receiver, ob.Name, what), nil
}

// validReceipt checks a receipt without looking at any state.
func validReceipt(r *types.DeliveryReceipt) error {
	if r == nil {
		return refuse(CodeInvalid, "empty receipt")
	}
	if len(r.AlertId) != 32 {
		return refuse(CodeInvalid, "alert id %q: want the 32 hex digits of a committed alert's id", r.AlertId)
	}
	for _, c := range r.AlertId {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return refuse(CodeInvalid, "alert id %q: want lower-case hex digits", r.AlertId)
		}
	}
	if err := validName("receiver", r.Receiver); err != nil {
		return refuse(CodeInvalid, "%v", err)
	}
	if n := len(r.Ack); n != 0 && n != ed25519.SignatureSize {
		return refuse(CodeInvalid, "receipt of %s for %s: acknowledgement is %d bytes, want an ed25519 signature of %d", r.AlertId, r.Receiver, n, ed25519.SignatureSize)
	}
	return nil
}

// Settlement says how far the committed receipts of one alert to one
// receiver go towards settling its delivery in mode one.
type Settlement struct {
	// Weight is the summed weight of the observers whose receipts are
	// committed (suspect or not); Total the weight of all observers.
	Weight, Total uint64
	// Acknowledged is set when one of the receipts carried the receiver's
	// own acknowledgement, verified when it was committed.
	Acknowledged bool
	// Settled is 3·Weight > Total or Acknowledged: then at least one
	// honest node delivered (faulty observers hold less than a third of
	// the weight), or the receiver said it got the alert, and the nodes
	// that have not delivered stand down.
	Settled bool
}

// Settled is the one rule by which a node in delivery mode one stops
// owing an alert to a receiver: the committed receipts for (alertID,
// receiver) come from observers holding more than a third of all the
// observer weight, or one of them is acknowledged by the receiver. Fewer
// receipts settle nothing, so no coalition below a third of the weight can
// keep an alert from a receiver that is up.
func (q *Query) Settled(alertID, receiver string) (Settlement, error) {
	ds, err := scan[types.Delivery](q.r, deliveryPrefix(alertID, receiver))
	if err != nil {
		return Settlement{}, fmt.Errorf("read receipts of %s for %s: %w", alertID, receiver, err)
	}
	return settlement(q.observers, ds), nil
}

// settlement applies the settle rule to the receipts ds of one alert and
// receiver, with the observer set observers (sorted by id).
func settlement(observers []types.Observer, ds []types.Delivery) Settlement {
	var s Settlement
	for _, o := range observers {
		s.Total += o.Weight
	}
	for _, d := range ds {
		s.Acknowledged = s.Acknowledged || d.Acknowledged
		// Keys are unique per observer: each observer counts once. An
		// observer no longer in the set counts nothing.
		for _, o := range observers {
			if o.Id == d.Observer {
				s.Weight += o.Weight
			}
		}
	}
	// 3·W > T without overflow: for integers, W > floor(T/3).
	s.Settled = s.Acknowledged || s.Weight > s.Total/3
	return s
}

// Deliveries are the receipts the current block committed, in order.
func (a *App) Deliveries() []types.Delivery { return a.deliveries }

// Deliveries lists the committed receipts of an alert, by receiver, then
// observer id.
func (q *Query) Deliveries(alertID string) ([]types.Delivery, error) {
	ds, err := scan[types.Delivery](q.r, cat(prefixDelivery, alertID, ""))
	if err != nil {
		return nil, fmt.Errorf("read deliveries of %s: %w", alertID, err)
	}
	return ds, nil
}

// Alert returns the committed alert with id, or ErrNotFound.
func (q *Query) Alert(id string) (types.Alert, error) {
	var al types.Alert
	loc, err := q.r.Get(alertIDKey(id))
	if err != nil {
		return al, err
	}
	if len(loc) != 12 {
		return al, fmt.Errorf("alert %s: %w", id, ErrNotFound)
	}
	bz, err := q.r.Get(alertKey(int64(binary.BigEndian.Uint64(loc)), binary.BigEndian.Uint32(loc[8:])))
	if err != nil || bz == nil {
		return al, fmt.Errorf("alert %s: record missing (%v)", id, err)
	}
	if err := al.Unmarshal(bz); err != nil {
		return al, fmt.Errorf("decode alert %s: %w", id, err)
	}
	return al, nil
}
