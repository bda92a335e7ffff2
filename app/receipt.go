package app

import (
	"encoding/binary"
	"fmt"

	"github.com/bftmon/bftmon/app/types"
)

// MaxReceivers bounds the receiver names receipts may record per alert, so
// that no signer can grow the state without limit.
const MaxReceivers = 32

// receipt records that the signer's node delivered an alert to a receiver.
// The signer must be an observer (a node signs receipts with its observer
// key) and the alert must be committed. A receipt already recorded for the
// same alert, receiver and observer changes nothing.
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
	key := deliveryKey(r.AlertId, r.Receiver, ob.Id)
	if old, err := a.store.Get(key); err != nil {
		return "", err
	} else if old != nil {
		return fmt.Sprintf("delivery of %s to %s by %s already recorded", r.AlertId, r.Receiver, ob.Name), nil
	}
	receivers := map[string]bool{r.Receiver: true}
	var derr error
	if err := a.store.Iterate(cat(prefixDelivery, r.AlertId, ""), func(_, v []byte) bool {
		var d types.Delivery
		if derr = d.Unmarshal(v); derr != nil {
			return false
		}
		receivers[d.Receiver] = true
		return true
	}); err != nil {
		return "", err
	} else if derr != nil {
		return "", derr
	}
	if len(receivers) > MaxReceivers {
		return "", refuse(CodeTooLarge, "alert %s has receipts for %d receivers already, the limit", r.AlertId, MaxReceivers)
	}
	d := types.Delivery{AlertId: r.AlertId, Receiver: r.Receiver, Observer: ob.Id, Height: a.meta.Height, TimeMs: a.meta.TimeMs}
	if err := a.put(key, &d); err != nil {
		return "", err
	}
	a.deliveries = append(a.deliveries, d)
	a.meta.AlertHeight = a.meta.Height
	return fmt.Sprintf("delivery of %s to %s by %s recorded", r.AlertId, r.Receiver, ob.Name), nil
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
	return nil
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
