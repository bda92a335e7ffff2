package notify

import (
	"encoding/json"
	"fmt"
	"time"

	dbm "github.com/cometbft/cometbft-db"
)

// entry is what a node owes one receiver for one alert.
type entry struct {
	// Alert is the committed alert (types.Alert, protobuf).
	Alert []byte `json:"alert"`
	// AlertID, Receiver and Check ("service/instance/check", "" for
	// observer alerts) identify it.
	AlertID  string `json:"alert_id"`
	Receiver string `json:"receiver"`
	Check    string `json:"check,omitempty"`
	// Committed is when the alert was committed (its block time); Due when
	// the next attempt is.
	Committed time.Time `json:"committed"`
	Due       time.Time `json:"due"`
	// Attempts counts failed attempts since the last success.
	Attempts int `json:"attempts"`
	// Delivered is set once this node delivered it; the entry stays only
	// while it is re-sent to Alertmanager (until Until).
	Delivered bool      `json:"delivered,omitempty"`
	Until     time.Time `json:"until,omitzero"`
	// Receipted is set once this node's receipt is committed.
	Receipted bool `json:"receipted,omitempty"`
}

func (e *entry) key() []byte { return entryKey(e.AlertID, e.Receiver) }

func entryKey(alertID, receiver string) []byte { return []byte("o/" + alertID + "/" + receiver) }

// outbox keeps entries in the node's local database, written through (with
// fsync) so that nothing owed is forgotten across a crash.
type outbox struct {
	db dbm.DB
}

func openOutbox(dir string) (*outbox, error) {
	db, err := dbm.NewGoLevelDB("notify", dir)
	if err != nil {
		return nil, fmt.Errorf("open the outbox in %s: %w", dir, err)
	}
	return &outbox{db: db}, nil
}

func (o *outbox) put(e *entry) error {
	bz, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := o.db.SetSync(e.key(), bz); err != nil {
		return fmt.Errorf("outbox: write %s: %w", e.key(), err)
	}
	return nil
}

func (o *outbox) delete(e *entry) error {
	if err := o.db.DeleteSync(e.key()); err != nil {
		return fmt.Errorf("outbox: delete %s: %w", e.key(), err)
	}
	return nil
}

// load reads every entry.
func (o *outbox) load() ([]*entry, error) {
	it, err := o.db.Iterator([]byte("o/"), []byte("o0"))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []*entry
	for ; it.Valid(); it.Next() {
		var e entry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return nil, fmt.Errorf("outbox: decode %s: %w", it.Key(), err)
		}
		out = append(out, &e)
	}
	return out, it.Error()
}

func (o *outbox) close() error { return o.db.Close() }
