package notify

import (
	"encoding/json"
	"fmt"
	"strings"
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
	// Kind is the alert's kind and Pos its place in the chain's order of
	// alerts (older entries lack them: New fills them in from Alert).
	Kind string `json:"kind,omitempty"`
	Pos  pos    `json:"pos,omitzero"`
	// Ended is when this node found the disputed or stale verdict of a
	// delivered Alertmanager entry over: from then on it sends the
	// resolution (endsAt Ended) until Until.
	Ended time.Time `json:"ended,omitzero"`
}

// pos is an alert's place in the chain's order: its block height, then
// its index among the block's alerts.
type pos struct {
	Height int64  `json:"height"`
	Index  uint32 `json:"index"`
}

// before tells whether p comes before o.
func (p pos) before(o pos) bool {
	return p.Height < o.Height || p.Height == o.Height && p.Index < o.Index
}

// mark is, for one receiver and check, the newest alert this node has
// delivered, or dropped because a newer one or the committed receipts
// made it moot: nothing older than it is ever sent to that receiver.
type mark struct {
	Pos     pos    `json:"pos"`
	AlertID string `json:"alert_id"`
}

// seen records a receiver this node's outbox has known since From: alerts
// committed before From are never caught up for it (its "since").
type seen struct {
	From time.Time `json:"from"`
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

func markKey(receiver, check string) []byte { return []byte("m/" + receiver + "/" + check) }

func seenKey(receiver string) []byte { return []byte("r/" + receiver) }

// putMark records m as the mark of (receiver, check).
func (o *outbox) putMark(receiver, check string, m mark) error {
	return o.putJSON(markKey(receiver, check), m)
}

// putSeen records that the outbox knows receiver, from s.From.
func (o *outbox) putSeen(receiver string, s seen) error {
	return o.putJSON(seenKey(receiver), s)
}

func (o *outbox) putJSON(key []byte, v any) error {
	bz, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := o.db.SetSync(key, bz); err != nil {
		return fmt.Errorf("outbox: write %s: %w", key, err)
	}
	return nil
}

// marks reads every mark, by receiver then check.
func (o *outbox) marks() (map[string]map[string]mark, error) {
	out := map[string]map[string]mark{}
	err := o.scan("m/", func(key string, value []byte) error {
		receiver, check, ok := strings.Cut(key, "/")
		if !ok {
			return fmt.Errorf("outbox: bad mark key m/%s", key)
		}
		var m mark
		if err := json.Unmarshal(value, &m); err != nil {
			return fmt.Errorf("outbox: decode m/%s: %w", key, err)
		}
		if out[receiver] == nil {
			out[receiver] = map[string]mark{}
		}
		out[receiver][check] = m
		return nil
	})
	return out, err
}

// seenReceivers reads which receivers the outbox knows, and since when.
func (o *outbox) seenReceivers() (map[string]seen, error) {
	out := map[string]seen{}
	err := o.scan("r/", func(key string, value []byte) error {
		var s seen
		if err := json.Unmarshal(value, &s); err != nil {
			return fmt.Errorf("outbox: decode r/%s: %w", key, err)
		}
		out[key] = s
		return nil
	})
	return out, err
}

// scan calls f with every key under prefix (a letter and "/"), prefix cut.
func (o *outbox) scan(prefix string, f func(key string, value []byte) error) error {
	end := prefix[:len(prefix)-1] + "0" // '0' follows '/'
	it, err := o.db.Iterator([]byte(prefix), []byte(end))
	if err != nil {
		return fmt.Errorf("outbox: read %s: %w", prefix, err)
	}
	defer it.Close()
	for ; it.Valid(); it.Next() {
		if err := f(string(it.Key()[len(prefix):]), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

func (o *outbox) close() error { return o.db.Close() }
