package app

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/bftmon/bftmon/app/types"
)

// Limits of the key/value store.
const (
	// MaxKVKeyBytes bounds a key (Consul has no fixed bound; etcd's default
	// request limit is far larger, but a key is a name, and keys are
	// repeated in the held-lock and lock-delay records).
	MaxKVKeyBytes = 512
	// MaxKVValueBytes bounds a value, as Consul does.
	MaxKVValueBytes = 512 << 10
	// MaxTxnOps bounds the operations of a KVTxn, as Consul does.
	MaxTxnOps = 64
)

// KV txn verbs (Consul's names).
const (
	VerbSet            = "set"
	VerbCAS            = "cas"
	VerbLock           = "lock"
	VerbUnlock         = "unlock"
	VerbGet            = "get"
	VerbGetTree        = "get-tree"
	VerbCheckIndex     = "check-index"
	VerbCheckSession   = "check-session"
	VerbCheckNotExists = "check-not-exists"
	VerbDelete         = "delete"
	VerbDeleteTree     = "delete-tree"
	VerbDeleteCAS      = "delete-cas"
)

// kvVerbs tells each verb whether its key is a prefix.
var kvVerbs = map[string]bool{
	VerbSet: false, VerbCAS: false, VerbLock: false, VerbUnlock: false, VerbGet: false,
	VerbGetTree: true, VerbCheckIndex: false, VerbCheckSession: false, VerbCheckNotExists: false,
	VerbDelete: false, VerbDeleteTree: true, VerbDeleteCAS: false,
}

// ServicesKVPrefix is where the owners of a service may write without a
// scope covering the key: services/NAME/ belongs to whoever may register NAME.
const ServicesKVPrefix = "services/"

// ValidKVKey checks a key (prefix: a prefix of a recursive operation, which
// may be empty): at most MaxKVKeyBytes of valid UTF-8.
func ValidKVKey(key string, prefix bool) error {
	switch {
	case key == "" && !prefix:
		return fmt.Errorf("key is empty")
	case len(key) > MaxKVKeyBytes:
		return fmt.Errorf("key is %d bytes, at most %d", len(key), MaxKVKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("key %q is not valid UTF-8", key)
	}
	return nil
}

// kvOps turns a KV message into txn operations, and names it for refusals.
func kvOps(msg any) (string, []types.KVOp, error) {
	switch m := msg.(type) {
	case *types.KVSet:
		if m == nil {
			return "", nil, refuse(CodeInvalid, "empty kv set")
		}
		what := "kv set " + quoteKey(m.Key)
		if m.Acquire != "" && m.Release != "" {
			return "", nil, refuse(CodeInvalid, "%s: acquire and release at once", what)
		}
		var ops []types.KVOp
		write := types.KVOp{Verb: VerbSet, Key: m.Key, Value: m.Value, Flags: m.Flags}
		switch {
		case m.Acquire != "":
			write.Verb, write.Session = VerbLock, m.Acquire
		case m.Release != "":
			write.Verb, write.Session = VerbUnlock, m.Release
		case m.Cas:
			write.Verb, write.Index = VerbCAS, m.CasIndex
		}
		if m.Cas && write.Verb != VerbCAS {
			ops = append(ops, casCheck(m.Key, m.CasIndex))
		}
		return what, append(ops, write), nil
	case *types.KVDelete:
		if m == nil {
			return "", nil, refuse(CodeInvalid, "empty kv delete")
		}
		what := "kv delete " + quoteKey(m.Key)
		switch {
		case m.Recurse && m.Cas:
			return "", nil, refuse(CodeInvalid, "%s: cas with recurse", what)
		case m.Recurse:
			return what, []types.KVOp{{Verb: VerbDeleteTree, Key: m.Key}}, nil
		case m.Cas:
			return what, []types.KVOp{{Verb: VerbDeleteCAS, Key: m.Key, Index: m.CasIndex}}, nil
		}
		return what, []types.KVOp{{Verb: VerbDelete, Key: m.Key}}, nil
	case *types.KVTxn:
		if m == nil || len(m.Ops) == 0 {
			return "", nil, refuse(CodeInvalid, "kv txn without operations")
		}
		if len(m.Ops) > MaxTxnOps {
			return "", nil, refuse(CodeTooLarge, "kv txn of %d operations, at most %d: split it", len(m.Ops), MaxTxnOps)
		}
		return "kv txn", m.Ops, nil
	}
	return "", nil, refuse(CodeInvalid, "not a kv message")
}

// casCheck is the check of a cas index: 0 means the key must be absent.
func casCheck(key string, index uint64) types.KVOp {
	if index == 0 {
		return types.KVOp{Verb: VerbCheckNotExists, Key: key}
	}
	return types.KVOp{Verb: VerbCheckIndex, Key: key, Index: index}
}

func quoteKey(k string) string {
	if len(k) > 80 {
		k = k[:80] + "…"
	}
	return fmt.Sprintf("%q", k)
}

// opName names op i of a message for its refusal.
func opName(what string, ops []types.KVOp, i int) string {
	if what != "kv txn" {
		return what
	}
	return fmt.Sprintf("kv txn op %d (%s %s)", i, ops[i].Verb, quoteKey(ops[i].Key))
}

// validKVOps checks the operations without looking at any state.
func validKVOps(what string, ops []types.KVOp) error {
	for i := range ops {
		op := &ops[i]
		name := opName(what, ops, i)
		prefix, known := kvVerbs[op.Verb]
		if !known {
			return refuse(CodeInvalid, "%s: unknown verb %q", name, op.Verb)
		}
		if err := ValidKVKey(op.Key, prefix); err != nil {
			return refuse(CodeInvalid, "%s: %v", name, err)
		}
		if len(op.Value) > MaxKVValueBytes {
			return refuse(CodeTooLarge, "%s: value is %d bytes, at most %d", name, len(op.Value), MaxKVValueBytes)
		}
		needSession := op.Verb == VerbLock || op.Verb == VerbUnlock || op.Verb == VerbCheckSession
		if needSession && op.Session == "" {
			return refuse(CodeInvalid, "%s: no session", name)
		}
	}
	return nil
}

// authorizeKV checks that signer is an operator whose scope covers key
// (tree: key is the prefix of a recursive operation, which reaches every
// key starting with it). Operator prefixes are service-name prefixes, and a
// key is matched by what it belongs to, never raw across that boundary:
//
//   - a key under services/NAME/ (services/ belongs to the services) is
//     covered only if a prefix of the operator's starts NAME; a key or tree
//     under services/ with no whole NAME/ segment (services/web, the tree
//     services/we) belongs to no one service, and only the all-covering
//     prefix "" covers it;
//   - a tree that reaches into services/ from above (the prefix "", "s",
//     "services") reaches every service's keys, so only the all-covering
//     prefix "" covers it;
//   - any other key is covered by a prefix of the operator's it starts with.
//
// So the operator of the service prefix "s" may write s/x and
// services/search/..., but not services/web/config (issue 22: it did, the
// prefix matched raw against the key).
func (a *App) authorizeKV(signer []byte, key string, tree bool) error {
	op := a.operators[string(signer)]
	if op == nil {
		return refuse(CodeUnauthorized, "signer %s is not an operator", types.KeyID(signer))
	}
	covered := func(s string) bool {
		for _, p := range op.Prefixes {
			if strings.HasPrefix(s, p) {
				return true
			}
		}
		return false
	}
	switch rest, under := strings.CutPrefix(key, ServicesKVPrefix); {
	case under:
		name, _, named := strings.Cut(rest, "/")
		if !named {
			// services/web (a key, or a tree reaching services/web/ and
			// services/webshop/ alike) belongs to no one service.
			if slices.Contains(op.Prefixes, "") {
				return nil
			}
			return refuse(CodeUnauthorized, "operator %s: %s is under services/ but not under one service's services/NAME/, which only an operator of the prefix \"\" may touch: end the service's name with a slash",
				op.Name, quoteKey(key))
		}
		if covered(name) {
			return nil
		}
		return refuse(CodeUnauthorized, "operator %s may write under services/NAME/ only for service names starting with %s, and %s belongs to the service %q: ask an operator whose scope covers it",
			op.Name, quoteList(op.Prefixes), quoteKey(key), name)
	case tree && strings.HasPrefix(ServicesKVPrefix, key):
		if slices.Contains(op.Prefixes, "") {
			return nil
		}
		return refuse(CodeUnauthorized, "operator %s: the prefix %s reaches every service's keys under services/, which only an operator of the prefix \"\" may touch: narrow the prefix",
			op.Name, quoteKey(key))
	case covered(key):
		return nil
	}
	return refuse(CodeUnauthorized, "operator %s may write keys starting with %s or under services/NAME/ for services named so, not %s",
		op.Name, quoteList(op.Prefixes), quoteKey(key))
}

// checkKV is the state-free part of a KV message's admission: shape and
// authorization of every key.
func (a *App) checkKV(signer []byte, msg any) (string, []types.KVOp, error) {
	what, ops, err := kvOps(msg)
	if err != nil {
		return "", nil, err
	}
	if err := validKVOps(what, ops); err != nil {
		return "", nil, err
	}
	for i := range ops {
		if err := a.authorizeKV(signer, ops[i].Key, kvVerbs[ops[i].Verb]); err != nil {
			return "", nil, fmt.Errorf("%s: %w", opName(what, ops, i), err)
		}
	}
	return what, ops, nil
}

// kvWrite applies a KV message: every operation or, if one fails, none.
func (a *App) kvWrite(signer []byte, msg any) (string, error) {
	what, ops, err := a.checkKV(signer, msg)
	if err != nil {
		return "", err
	}
	x := a.kvExec()
	x.signer = signer
	for i := range ops {
		if err := x.apply(&ops[i]); err != nil {
			if CodeOf(err) == CodeInternal {
				return "", err
			}
			return "", fmt.Errorf("%s: %w", opName(what, ops, i), err)
		}
	}
	// The quota binds the net effect: a txn that deletes as much as it
	// writes is never refused. Only the signer's usage can grow.
	if err := a.checkQuota(signer, x.usageOf(signer)); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if err := x.commit(); err != nil {
		return "", err
	}
	if what == "kv txn" {
		return fmt.Sprintf("kv txn of %d operations applied at index %d", len(ops), a.meta.Height), nil
	}
	return fmt.Sprintf("%s applied at index %d", what, a.meta.Height), nil
}

// pending holds the writes of one KV transaction over the working state:
// its reads see them, and nothing reaches the store before commit.
type pending struct {
	r      Reader
	s      Store // nil for a read-only txn
	writes map[string]pendingWrite
}

type pendingWrite struct {
	value   []byte
	deleted bool
}

func (p *pending) get(k []byte) ([]byte, error) {
	if w, ok := p.writes[string(k)]; ok {
		if w.deleted {
			return nil, nil
		}
		return w.value, nil
	}
	return p.r.Get(k)
}

func (p *pending) set(k, v []byte) { p.writes[string(k)] = pendingWrite{value: v} }
func (p *pending) del(k []byte)    { p.writes[string(k)] = pendingWrite{deleted: true} }

// keys lists the keys under prefix as the transaction sees them, sorted.
func (p *pending) keys(prefix []byte) ([]string, error) {
	seen := map[string]bool{}
	if err := p.r.Iterate(prefix, func(k, _ []byte) bool {
		seen[string(k)] = true
		return true
	}); err != nil {
		return nil, err
	}
	for k, w := range p.writes {
		if strings.HasPrefix(k, string(prefix)) {
			seen[k] = !w.deleted
		}
	}
	var out []string
	for k, live := range seen {
		if live {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out, nil
}

// commit writes the pending writes into the store in key order.
func (p *pending) commit() error {
	keys := make([]string, 0, len(p.writes))
	for k := range p.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := p.writes[k]
		var err error
		if w.deleted {
			err = p.s.Delete([]byte(k))
		} else {
			err = p.s.Set([]byte(k), w.value)
		}
		if err != nil {
			return fmt.Errorf("kv write %q: %w", k, err)
		}
	}
	return nil
}

// kvExecution applies KV operations at the current block.
type kvExecution struct {
	a       *App
	p       *pending
	index   uint64 // the current height
	now     int64  // the block time
	changed []string
	trees   []string
	// signer is the operator whose message this is (nil: the application
	// itself, releasing a session's locks): what it writes is charged to it.
	signer []byte
	usage  map[string]*usageDelta // operator pubkey → change of its usage
}

// usageOf is the change of operator pub's usage so far.
func (x *kvExecution) usageOf(pub []byte) usageDelta {
	if d := x.usage[string(pub)]; d != nil {
		return *d
	}
	return usageDelta{}
}

// charge counts entry e against its writer (sign 1) or frees it (sign -1).
func (x *kvExecution) charge(e *types.KVEntry, sign int64) {
	if e != nil {
		addDelta(x.usage, e.Writer, usageDelta{kvBytes: sign * entryCharge(e), kvKeys: sign})
	}
}

func (a *App) kvExec() *kvExecution {
	return &kvExecution{a: a, p: &pending{r: a.store, s: a.store, writes: map[string]pendingWrite{}}, index: uint64(a.meta.Height), now: a.meta.TimeMs,
		usage: map[string]*usageDelta{}}
}

// commit writes the execution's changes and records them for the block.
func (x *kvExecution) commit() error {
	if err := x.p.commit(); err != nil {
		return err
	}
	if err := x.a.addUsage(x.usage); err != nil {
		return err
	}
	x.a.kvTouched(x.changed, x.trees)
	return nil
}

// kvTouched records keys and trees the current block changed.
func (a *App) kvTouched(keys, trees []string) {
	if len(keys) == 0 && len(trees) == 0 {
		return
	}
	a.meta.KvHeight = a.meta.Height
	for _, k := range keys {
		a.kvKeys[k] = true
	}
	for _, t := range trees {
		a.kvTrees[t] = true
	}
}

func (x *kvExecution) entry(key string) (*types.KVEntry, error) {
	bz, err := x.p.get(kvKey(key))
	if err != nil || bz == nil {
		return nil, err
	}
	e := new(types.KVEntry)
	if err := e.Unmarshal(bz); err != nil {
		return nil, fmt.Errorf("decode kv entry %q: %w", key, err)
	}
	return e, nil
}

// put stores e, moving the charge of the entry it replaces to e's writer.
func (x *kvExecution) put(e *types.KVEntry) error {
	old, err := x.entry(e.Key)
	if err != nil {
		return err
	}
	x.charge(old, -1)
	x.charge(e, 1)
	bz, err := e.Marshal()
	if err != nil {
		return fmt.Errorf("encode kv entry %q: %w", e.Key, err)
	}
	x.p.set(kvKey(e.Key), bz)
	x.changed = append(x.changed, e.Key)
	return nil
}

// remove deletes an entry (and the record of its lock's holder).
func (x *kvExecution) remove(e *types.KVEntry) {
	if e.Session != "" {
		x.p.del(heldKey(e.Session, e.Key))
	}
	x.p.del(kvKey(e.Key))
	x.charge(e, -1)
	x.changed = append(x.changed, e.Key)
}

// write sets value and flags of key's entry (created if absent); the
// signer becomes its writer, charged for it.
func (x *kvExecution) write(e *types.KVEntry, key string, op *types.KVOp) *types.KVEntry {
	if e == nil {
		e = &types.KVEntry{Key: key, CreateIndex: x.index}
	}
	e.Value, e.Flags, e.ModifyIndex = op.Value, op.Flags, x.index
	if x.signer != nil {
		e.Writer = x.signer
	}
	return e
}

// lockedUntil is the block time until which key cannot be locked (0: none).
func (x *kvExecution) lockedUntil(key string) (int64, error) {
	bz, err := x.p.get(delayKey(key))
	if err != nil || len(bz) != 8 {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(bz)), nil
}

func (x *kvExecution) session(id string) (*types.Session, error) {
	var s types.Session
	ok, err := x.a.get(sessionKey(id), &s)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, refuse(CodeNotFound, "session %q is unknown or was invalidated", id)
	}
	return &s, nil
}

// apply applies one operation, or refuses it.
func (x *kvExecution) apply(op *types.KVOp) error {
	e, err := x.entry(op.Key)
	if err != nil {
		return err
	}
	switch op.Verb {
	case VerbSet:
		return x.put(x.write(e, op.Key, op))
	case VerbCAS:
		if err := checkIndex(e, op.Index); err != nil {
			return err
		}
		return x.put(x.write(e, op.Key, op))
	case VerbCheckIndex:
		if e == nil {
			return refuse(CodeConflict, "check-index %d: the key does not exist", op.Index)
		}
		return checkIndex(e, op.Index)
	case VerbCheckNotExists:
		if e != nil {
			return refuse(CodeConflict, "the key exists (modify index %d)", e.ModifyIndex)
		}
		return nil
	case VerbGet:
		if e == nil {
			return refuse(CodeNotFound, "the key does not exist")
		}
		return nil
	case VerbGetTree:
		return nil
	case VerbCheckSession:
		if e == nil {
			return refuse(CodeConflict, "check-session %s: the key does not exist", op.Session)
		}
		if e.Session != op.Session {
			return refuse(CodeConflict, "check-session %s: the key is held by %s", op.Session, holderName(e.Session))
		}
		return nil
	case VerbLock:
		if _, err := x.session(op.Session); err != nil {
			return err
		}
		if e != nil && e.Session != "" {
			if e.Session != op.Session {
				return refuse(CodeConflict, "lock: the key is held by session %s (lock index %d)", e.Session, e.LockIndex)
			}
			return x.put(x.write(e, op.Key, op)) // the holder updates its value
		}
		until, err := x.lockedUntil(op.Key)
		if err != nil {
			return err
		}
		if until > x.now {
			return refuse(CodeConflict, "lock: the key is in its lock-delay until block time %d (%d ms from now)", until, until-x.now)
		}
		if until != 0 {
			x.p.del(delayKey(op.Key))
		}
		e = x.write(e, op.Key, op)
		e.LockIndex++
		e.Session = op.Session
		x.p.set(heldKey(op.Session, op.Key), []byte{1})
		return x.put(e)
	case VerbUnlock:
		if e == nil || e.Session != op.Session {
			held := ""
			if e != nil {
				held = e.Session
			}
			return refuse(CodeConflict, "unlock: the key is not held by session %s (held by %s)", op.Session, holderName(held))
		}
		x.p.del(heldKey(e.Session, e.Key))
		e = x.write(e, op.Key, op)
		e.Session = ""
		return x.put(e)
	case VerbDelete:
		if e != nil {
			x.remove(e)
		}
		return nil
	case VerbDeleteCAS:
		if e == nil { // nothing to delete, as Consul answers
			return nil
		}
		if err := checkIndex(e, op.Index); err != nil {
			return err
		}
		x.remove(e)
		return nil
	case VerbDeleteTree:
		keys, err := x.p.keys(kvKey(op.Key))
		if err != nil {
			return err
		}
		for _, k := range keys {
			te, err := x.entry(k[len(prefixKV):])
			if err != nil {
				return err
			}
			if te.Session != "" {
				x.p.del(heldKey(te.Session, te.Key))
			}
			x.p.del([]byte(k))
			x.charge(te, -1)
		}
		x.trees = append(x.trees, op.Key)
		return nil
	}
	return refuse(CodeInvalid, "unknown verb %q", op.Verb)
}

// checkIndex refuses a cas whose index is not the entry's modify index,
// naming the current one.
func checkIndex(e *types.KVEntry, want uint64) error {
	switch {
	case e == nil && want == 0:
		return nil
	case e == nil:
		return refuse(CodeConflict, "cas on modify index %d: the key does not exist (cas index 0 creates it)", want)
	case want == 0:
		return refuse(CodeConflict, "cas index 0 creates only: the key exists, at modify index %d", e.ModifyIndex)
	case e.ModifyIndex != want:
		return refuse(CodeConflict, "cas on modify index %d: the key's current modify index is %d", want, e.ModifyIndex)
	}
	return nil
}

func holderName(s string) string {
	if s == "" {
		return "no session"
	}
	return "session " + s
}

// releaseHeld releases (or, for behavior delete, deletes) every key session
// s holds and sets each key's lock-delay, as s is invalidated.
func (a *App) releaseHeld(s *types.Session) error {
	x := a.kvExec()
	keys, err := x.p.keys(heldPrefix(s.Id))
	if err != nil {
		return err
	}
	until := a.meta.TimeMs + s.LockDelayMs
	for _, hk := range keys {
		key := hk[len(heldPrefix(s.Id)):]
		x.p.del([]byte(hk))
		e, err := x.entry(key)
		if err != nil {
			return err
		}
		if e != nil && e.Session == s.Id {
			if s.Behavior == BehaviorDelete {
				x.remove(e)
			} else {
				e.Session, e.ModifyIndex = "", x.index
				if err := x.put(e); err != nil {
					return err
				}
			}
		}
		if s.LockDelayMs > 0 {
			old, err := x.lockedUntil(key)
			if err != nil {
				return err
			}
			if until > old {
				x.p.set(delayKey(key), binary.BigEndian.AppendUint64(nil, uint64(until)))
			}
		}
	}
	return x.commit()
}
