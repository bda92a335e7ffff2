package app

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/bftmon/bftmon/app/types"
)

// KVGet returns the entry of key, or ErrNotFound.
func (q *Query) KVGet(key string) (types.KVEntry, error) {
	var e types.KVEntry
	bz, err := q.r.Get(kvKey(key))
	if err != nil {
		return e, fmt.Errorf("read kv %q: %w", key, err)
	}
	if bz == nil {
		return e, fmt.Errorf("kv %q: %w", key, ErrNotFound)
	}
	if err := e.Unmarshal(bz); err != nil {
		return e, fmt.Errorf("decode kv %q: %w", key, err)
	}
	return e, nil
}

// KVList returns every entry whose key starts with prefix, in key order
// (Consul's ?recurse).
func (q *Query) KVList(prefix string) ([]types.KVEntry, error) {
	out, err := scan[types.KVEntry](q.r, kvKey(prefix))
	if err != nil {
		return nil, fmt.Errorf("list kv %q: %w", prefix, err)
	}
	return out, nil
}

// KVKeys lists the keys that start with prefix, in key order (Consul's
// ?keys). With a separator, a key is cut after the first separator that
// follows the prefix, and each such cut key is listed once: the "folders"
// of Consul's ?keys&separator=/.
func (q *Query) KVKeys(prefix, separator string) ([]string, error) {
	var out []string
	err := q.r.Iterate(kvKey(prefix), func(k, _ []byte) bool {
		key := string(k[len(prefixKV):])
		if separator != "" {
			if i := strings.Index(key[len(prefix):], separator); i >= 0 {
				key = key[:len(prefix)+i+len(separator)]
			}
		}
		if len(out) == 0 || out[len(out)-1] != key {
			out = append(out, key)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("list kv keys %q: %w", prefix, err)
	}
	return out, nil
}

// LockDelay is the block time until which key cannot be locked after its
// holder's session was invalidated (0 or a time already past: none).
func (q *Query) LockDelay(key string) (int64, error) {
	bz, err := q.r.Get(delayKey(key))
	if err != nil {
		return 0, fmt.Errorf("read lock-delay of %q: %w", key, err)
	}
	if len(bz) != 8 {
		return 0, nil
	}
	return int64(binary.BigEndian.Uint64(bz)), nil
}

// Session returns a live session, or ErrNotFound (never created, or
// invalidated).
func (q *Query) Session(id string) (types.Session, error) {
	var s types.Session
	bz, err := q.r.Get(sessionKey(id))
	if err != nil {
		return s, fmt.Errorf("read session %s: %w", id, err)
	}
	if bz == nil {
		return s, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	if err := s.Unmarshal(bz); err != nil {
		return s, fmt.Errorf("decode session %s: %w", id, err)
	}
	return s, nil
}

// Sessions lists the live sessions, by id.
func (q *Query) Sessions() ([]types.Session, error) {
	out, err := scan[types.Session](q.r, prefixSession)
	if err != nil {
		return nil, fmt.Errorf("read sessions: %w", err)
	}
	return out, nil
}

// InstanceSessions lists the live sessions of one instance, by id.
func (q *Query) InstanceSessions(service, instance string) ([]types.Session, error) {
	prefix := instSessPrefix(service, instance)
	var ids []string
	if err := q.r.Iterate(prefix, func(k, _ []byte) bool {
		ids = append(ids, string(k[len(prefix):]))
		return true
	}); err != nil {
		return nil, fmt.Errorf("read sessions of %s/%s: %w", service, instance, err)
	}
	out := make([]types.Session, 0, len(ids))
	for _, id := range ids {
		s, err := q.Session(id)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// SessionKeys lists the keys a session holds the locks of, in key order.
func (q *Query) SessionKeys(id string) ([]string, error) {
	prefix := heldPrefix(id)
	var out []string
	if err := q.r.Iterate(prefix, func(k, _ []byte) bool {
		out = append(out, string(k[len(prefix):]))
		return true
	}); err != nil {
		return nil, fmt.Errorf("read locks of session %s: %w", id, err)
	}
	return out, nil
}

// LockHolder is the holder of a key's lock.
type LockHolder struct {
	Entry   types.KVEntry
	Session types.Session
}

// LockHolder returns who holds key's lock: the entry and its session, or
// ErrNotFound if the key is absent or not locked.
func (q *Query) LockHolder(key string) (LockHolder, error) {
	e, err := q.KVGet(key)
	if err != nil {
		return LockHolder{}, err
	}
	if e.Session == "" {
		return LockHolder{}, fmt.Errorf("lock %q is free: %w", key, ErrNotFound)
	}
	s, err := q.Session(e.Session)
	if err != nil {
		return LockHolder{}, fmt.Errorf("holder of lock %q: %w", key, err)
	}
	return LockHolder{Entry: e, Session: s}, nil
}

// readVerbs are the verbs a read-only txn may use.
var readVerbs = map[string]bool{VerbGet: true, VerbGetTree: true, VerbCheckIndex: true, VerbCheckSession: true, VerbCheckNotExists: true}

// ReadOnlyTxn tells whether every operation only reads: such a txn is
// answered by KVTxnRead from a committed version, without a transaction
// (as Consul answers a read-only txn without raft).
func ReadOnlyTxn(ops []types.KVOp) bool {
	for i := range ops {
		if !readVerbs[ops[i].Verb] {
			return false
		}
	}
	return len(ops) > 0
}

// KVTxnRead answers a read-only txn (get, get-tree and the checks) from the
// version: the entries its get and get-tree operations read, in order, or
// the refusal (a *TxError, with the codes and messages of a committed txn)
// of the first operation that fails.
func (q *Query) KVTxnRead(ops []types.KVOp) ([]types.KVEntry, error) {
	what, ops, err := kvOps(&types.KVTxn{Ops: ops})
	if err != nil {
		return nil, err
	}
	if err := validKVOps(what, ops); err != nil {
		return nil, err
	}
	if !ReadOnlyTxn(ops) {
		return nil, refuse(CodeInvalid, "kv txn: a txn that writes is a signed transaction, not a read")
	}
	x := &kvExecution{p: &pending{r: q.r}, index: uint64(q.meta.Height), now: q.meta.TimeMs}
	var out []types.KVEntry
	for i := range ops {
		op := &ops[i]
		if err := x.apply(op); err != nil {
			if CodeOf(err) == CodeInternal {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %w", opName(what, ops, i), err)
		}
		switch op.Verb {
		case VerbGet:
			e, err := q.KVGet(op.Key)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		case VerbGetTree:
			list, err := q.KVList(op.Key)
			if err != nil {
				return nil, err
			}
			out = append(out, list...)
		}
	}
	return out, nil
}
