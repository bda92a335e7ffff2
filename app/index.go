package app

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/bftmon/bftmon/app/types"
)

// Indexes are the heights at which parts of the agreed state last changed.
// They are replicated state, so every node gives the same index for the
// same answer: a client may move between nodes and keep blocking.
//
// An index moves when what was agreed moves: an instance registered,
// updated or deregistered, a check's verdict or hard status, an alert, an
// observer's suspect flag. Observers' individual reports, their outputs and
// latencies refresh every block and do not move it.
type Indexes struct {
	Catalog   int64 // the set of instances, their addresses, tags and meta
	State     int64 // the catalog or any check's verdict or hard status
	Alerts    int64 // the alert log
	Observers int64 // the observer set's suspect flags
	Receivers int64 // the registered webhook receivers' keys
	KV        int64 // any key/value entry: written, deleted, locked or released
	Sessions  int64 // the sessions: created, renewed or invalidated
}

// Changes is what a block changed in the agreed state: what blocking
// queries wait for.
type Changes struct {
	// Services whose instances or check verdicts or hard statuses changed,
	// sorted.
	Services  []string
	Catalog   bool
	Alerts    bool
	Observers bool
	// Receivers: a receiver's key was registered, replaced or removed.
	Receivers bool
	// Verdicts lists the checks whose verdict changed, by check ref.
	Verdicts []VerdictChange
	// KVKeys lists the key/value keys written, deleted, locked or released,
	// sorted; KVTrees the prefixes of recursive deletes, under which any
	// key may have gone (KVChanged answers for a key or prefix).
	KVKeys  []string
	KVTrees []string
	// Sessions: a session was created, renewed or invalidated.
	Sessions bool
}

// KVChanged tells whether the block changed a key/value entry that starts
// with prefix (a key, for a query of one key).
func (c Changes) KVChanged(prefix string) bool {
	i := sort.SearchStrings(c.KVKeys, prefix)
	if i < len(c.KVKeys) && strings.HasPrefix(c.KVKeys[i], prefix) {
		return true
	}
	for _, t := range c.KVTrees {
		if strings.HasPrefix(t, prefix) || strings.HasPrefix(prefix, t) {
			return true
		}
	}
	return false
}

// VerdictChange is a check's verdict moving in a block.
type VerdictChange struct {
	Service, Instance, Check string
	From, To                 types.Status
}

// Any tells whether the block changed anything a blocking query watches.
func (c Changes) Any() bool {
	return len(c.Services) > 0 || c.Catalog || c.Alerts || c.Observers || c.Receivers ||
		len(c.KVKeys) > 0 || len(c.KVTrees) > 0 || c.Sessions
}

// touch records that service's agreed state changed in the current block.
func (a *App) touch(service string) error {
	h := a.meta.Height
	a.meta.StateHeight = h
	if a.changed[service] {
		return nil
	}
	a.changed[service] = true
	if err := a.store.Set(serviceIndexKey(service), binary.BigEndian.AppendUint64(nil, uint64(h))); err != nil {
		return fmt.Errorf("index of %s: %w", service, err)
	}
	return nil
}

// Changed is what the current block changed, for blocking queries.
func (a *App) Changed() Changes {
	c := Changes{
		Catalog:   a.catalogChanged,
		Alerts:    len(a.alerts) > 0 || len(a.deliveries) > 0,
		Observers: a.meta.ObserversHeight == a.meta.Height && a.meta.Height > 0,
		Receivers: a.meta.ReceiversHeight == a.meta.Height && a.meta.Height > 0,
		Verdicts:  a.verdicts,
		KVKeys:    sortedKeys(a.kvKeys),
		KVTrees:   sortedKeys(a.kvTrees),
		Sessions:  a.sessionsChanged,
	}
	for s := range a.changed {
		c.Services = append(c.Services, s)
	}
	sort.Strings(c.Services)
	return c
}

func sortedKeys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Indexes are the version's indexes.
func (q *Query) Indexes() Indexes {
	return Indexes{Catalog: q.meta.CatalogHeight, State: q.meta.StateHeight, Alerts: q.meta.AlertHeight, Observers: q.meta.ObserversHeight, Receivers: q.meta.ReceiversHeight,
		KV: q.meta.KvHeight, Sessions: q.meta.SessionsHeight}
}

// ServiceIndex is the height at which service's instances or check states
// last changed; 0 if it was never registered.
func (q *Query) ServiceIndex(service string) (int64, error) {
	bz, err := q.r.Get(serviceIndexKey(service))
	if err != nil {
		return 0, fmt.Errorf("index of %s: %w", service, err)
	}
	if len(bz) != 8 {
		return 0, nil
	}
	return int64(binary.BigEndian.Uint64(bz)), nil
}
