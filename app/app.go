// Package app is bftmon's deterministic state machine: the catalog of
// services, observers' observation batches, the verdict of every check, hard
// states and alert records, and the replicated key/value store with its
// sessions and locks. Blocks go in, state and alerts come out. It does
// no I/O, reads no clock and starts no goroutines: time is the block time,
// and all state lives in a Store whose root hash is the app hash.
package app

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/bftmon/bftmon/app/types"
	"github.com/google/btree"
)

// Limits on what a transaction may carry.
const (
	MaxBatch     = 5000 // observations in one batch
	MaxOutput    = 4096 // bytes of output per observation
	MaxChecks    = 64   // checks per instance
	MaxNameLen   = 63
	MaxInstances = 10000 // instances per service name
)

type proto interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// App is the state machine. It is not safe for concurrent use: the ABCI
// layer calls it from one goroutine at a time. Reads for clients go through
// Query over a committed Reader instead.
type App struct {
	store  Store
	writes *writeCounter // store, counting the block's writes
	meta   types.Meta

	// Derived from the state at load and kept in step with it; never
	// hashed. observers is sorted by id.
	observers   []types.Observer
	totalWeight uint64 // of all observers
	byPub       map[string]*types.Observer
	operators   map[string]*types.Operator
	quotas      types.Quotas // of every operator, from genesis
	quietMs     int64        // genesis quiet_ms (0: every block is recorded)
	timers      *btree.BTreeG[timer]
	wake        map[string]int64                  // check ref → its timer's time
	instances   map[string]int                    // service name → number of instances
	catalog     map[string]*types.ServiceInstance // "service/instance" → its stored record (never mutated)
	// lapsed: observer id → the checks in its scope whose record of it was
	// not fresh when they were last evaluated; a vouch of the observer
	// re-evaluates them, since it may make them fresh again.
	lapsed map[string]map[string]int64 // … → the lapsed record's height
	// watches: check ref → what its timer waits on, when that is only its
	// fresh reports expiring (see rewake).
	watches map[string]*watch

	// Per block.
	before          types.Meta // the stored bookkeeping, as the block began
	busy            bool       // a transaction ran or a timer fired
	dirty           map[string]bool
	changed         map[string]bool // services whose agreed state changed
	verdicts        []VerdictChange // in the order evaluated (by check ref)
	alerts          []types.Alert
	deliveries      []types.Delivery
	catalogChanged  bool
	applied         int                   // observations applied in this block
	tallies         map[string]*[2]uint64 // observer id → reports agreeing, disagreeing with this block's verdicts
	swept           bool                  // the sessions whose TTL lapsed at the block time are invalidated
	critical        map[string]bool       // "service/instance" whose hard status a check made critical
	kvKeys          map[string]bool       // key/value keys written, deleted, locked or released
	kvTrees         map[string]bool       // prefixes of recursive deletes
	sessionsChanged bool
	stamps          map[string]*types.ObserverStamp // observer id → its stamp as this block left it (nil: none), read by evaluations

	// verified holds the SHA-256 of transactions whose signature verified
	// (in CheckTx or ProcessProposal), so that the same bytes are not
	// verified again when the block executes. Verification is a pure
	// function of the bytes, so the cache changes no result.
	verified map[[32]byte]struct{}
}

// maxVerified bounds the signature cache (about four full mempools).
const maxVerified = 20_000

// HaltGapMs is the longest gap between two blocks' times that is not a halt
// of the chain. After a longer one, reports that were fresh when the chain
// stopped stay fresh for a ttl after it resumed, and sessions alive then get
// a fresh TTL from it (as Consul resets every TTL when a new leader takes
// over): the network not committing is not the targets going stale, nor the
// session holders going away, and both need a moment to get their reports
// and renewals in again.
//
// It must be longer than any gap a network that keeps committing produces,
// however often single rounds fail: a crashed validator makes every round it
// proposes time out, and were such a gap a halt, a dead holder's session
// would get a fresh TTL on every turn of the crashed validator and never
// expire (issue 22: a 10 s session alive after 59 s with one of four nodes
// down, gaps of up to 5.5 s). At bftmon init's consensus timeouts (propose
// 3 s, growing 0.5 s a round; commit 0.5 s) a height with k failed rounds in
// a row takes about 3k + k²/4 + 1 s: 30 s covers six crashed proposers in a
// row, and one of four down (at most one failed round a height) gaps of
// about 5 s. So while more than two thirds of the validators commit, an
// unrenewed session ends at the first block at or after its TTL, within
// TTL + HaltGapMs of its last renewal, and a report goes stale within
// ttl + HaltGapMs of when it was observed.
const HaltGapMs = 30_000

// timer asks for a check to be re-evaluated at the first block whose time is
// at or after at.
type timer struct {
	at  int64
	ref string
}

func timerLess(a, b timer) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.ref < b.ref
}

// New returns an app over store, loading whatever state it holds.
func New(store Store) (*App, error) {
	w := &writeCounter{Store: store}
	a := &App{store: w, writes: w}
	if err := a.load(); err != nil {
		return nil, err
	}
	return a, nil
}

// load rebuilds the derived in-memory indexes from the state.
func (a *App) load() error {
	a.observers = nil
	a.byPub = map[string]*types.Observer{}
	a.operators = map[string]*types.Operator{}
	a.timers = btree.NewG(32, timerLess)
	a.lapsed = map[string]map[string]int64{}
	a.watches = map[string]*watch{}
	a.wake = map[string]int64{}
	a.instances = map[string]int{}
	a.catalog = map[string]*types.ServiceInstance{}
	if _, err := a.get(keyInfo, &a.meta); err != nil {
		return err
	}
	if err := a.loadQuotas(); err != nil {
		return err
	}
	switch bz, err := a.store.Get(keyQuiet); {
	case err != nil:
		return fmt.Errorf("load quiet_ms: %w", err)
	case len(bz) == 8:
		a.quietMs = int64(binary.BigEndian.Uint64(bz))
	case bz != nil:
		return fmt.Errorf("load quiet_ms: %d bytes stored at %s, want 8: the state is damaged", len(bz), keyQuiet)
	default:
		a.quietMs = 0
	}
	var err error
	if a.observers, err = scan[types.Observer](a.store, prefixObs); err != nil {
		return fmt.Errorf("load observers: %w", err)
	}
	a.totalWeight = 0
	for i := range a.observers {
		a.byPub[string(a.observers[i].PubKey)] = &a.observers[i]
		a.totalWeight += a.observers[i].Weight
	}
	ops, err := scan[types.Operator](a.store, prefixOp)
	if err != nil {
		return fmt.Errorf("load operators: %w", err)
	}
	for i := range ops {
		a.operators[string(ops[i].PubKey)] = &ops[i]
	}
	// Timers: every check's next wake-up follows from its stored state.
	insts, err := scan[types.ServiceInstance](a.store, prefixService)
	if err != nil {
		return fmt.Errorf("load services: %w", err)
	}
	for i := range insts {
		a.instances[insts[i].Name]++
		a.catalog[insts[i].Name+"/"+insts[i].Id] = &insts[i]
		for j := range insts[i].Checks {
			c := &insts[i].Checks[j]
			ref := CheckRef(insts[i].Name, insts[i].Id, c.Id)
			var st types.CheckState
			if _, err := a.get(checkKey(ref), &st); err != nil {
				return err
			}
			reports, _, err := a.reports(a.store, ref, c, FreshAt(&a.meta))
			if err != nil {
				return err
			}
			a.noteLapsed(ref, reports)
			a.schedule(ref, a.nextWake(ref, c, &st, reports))
		}
	}
	return nil
}

// ChainID is the chain id from genesis.
func (a *App) ChainID() string { return a.meta.ChainId }

// Height is the height of the last block executed.
func (a *App) Height() int64 { return a.meta.Height }

// BeginBlock starts executing block height at block time timeMs (unix ms).
func (a *App) BeginBlock(height, timeMs int64) {
	a.before, a.busy = a.meta, false
	a.writes.n = 0
	a.meta.Height = height
	if prev := a.meta.TimeMs; prev > 0 && timeMs-prev > GapMs {
		a.meta.GapFromMs, a.meta.GapToMs = prev, timeMs
		if timeMs-prev > HaltGapMs {
			// The chain did not commit for a while (no quorum, or a
			// one-node network restarting): observers could not get
			// their reports in.
			a.meta.HaltedFromMs, a.meta.HaltedToMs = prev, timeMs
		}
	}
	a.meta.PrevTimeMs = a.meta.TimeMs
	if timeMs > a.meta.TimeMs { // block time never goes back
		a.meta.TimeMs = timeMs
	}
	a.dirty = map[string]bool{}
	a.stamps = map[string]*types.ObserverStamp{}
	a.changed = map[string]bool{}
	a.verdicts = nil
	a.alerts = nil
	a.deliveries = nil
	a.catalogChanged = false
	a.applied = 0
	a.swept = false
	a.critical = map[string]bool{}
	a.kvKeys = map[string]bool{}
	a.kvTrees = map[string]bool{}
	a.sessionsChanged = false
}

// EndBlock re-evaluates every check that the block's transactions touched or
// whose timer fell due, writes the block's bookkeeping, and returns the
// alerts the block raised and the working app hash.
func (a *App) EndBlock() ([]types.Alert, []byte, error) {
	now := a.meta.TimeMs
	if err := a.sweepSessions(); err != nil {
		return nil, nil, err
	}
	for {
		t, ok := a.timers.Min()
		if !ok || t.at > now {
			break
		}
		a.timers.DeleteMin()
		delete(a.wake, t.ref)
		if !a.dirty[t.ref] {
			if err := a.rewake(t.ref); err != nil {
				return nil, nil, err
			}
		}
		// A timer only set again (rewake) changes nothing: it must not
		// make the block count as busy, since a node restarted meanwhile
		// has that timer where the vouches put it, not where it was.
		if a.dirty[t.ref] {
			a.busy = true
		}
	}
	refs := make([]string, 0, len(a.dirty))
	for ref := range a.dirty {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		if err := a.evaluate(ref); err != nil {
			return nil, nil, fmt.Errorf("evaluate %s: %w", ref, err)
		}
	}
	if err := a.invalidateCritical(); err != nil {
		return nil, nil, err
	}
	if err := a.settleStanding(); err != nil {
		return nil, nil, fmt.Errorf("observer standing: %w", err)
	}
	if len(a.alerts) > 0 {
		a.meta.AlertHeight = a.meta.Height
	}
	for i := range a.alerts {
		k := alertKey(a.meta.Height, uint32(i))
		if err := a.put(k, &a.alerts[i]); err != nil {
			return nil, nil, err
		}
		if err := a.store.Set(alertIDKey(a.alerts[i].Id), k[len(prefixAlert):]); err != nil {
			return nil, nil, err
		}
	}
	if a.quiet() {
		// Nothing to record: the state, and so the app hash, stay as they
		// were, and CometBFT waits for transactions (or
		// create_empty_blocks_interval) before the next block instead of
		// proving this one at once (a block that changes the app hash
		// needs the next to carry it). The bookkeeping stays at the last
		// block that changed something, as a restarted node reads it.
		m, b := &a.meta, &a.before // field by field: ChainId is read concurrently
		m.Height, m.TimeMs, m.PrevTimeMs, m.HaltedFromMs, m.HaltedToMs = b.Height, b.TimeMs, b.PrevTimeMs, b.HaltedFromMs, b.HaltedToMs
		m.GapFromMs, m.GapToMs = b.GapFromMs, b.GapToMs
		return nil, a.store.WorkingHash(), nil
	}
	if err := a.put(keyInfo, &a.meta); err != nil {
		return nil, nil, err
	}
	return a.alerts, a.store.WorkingHash(), nil
}

// DefaultQuietMs is the genesis quiet_ms bftmon init and testnet write:
// how long blocks that change nothing may go unrecorded. A block with no
// transaction, no timer due and no write, less than quiet_ms after the last
// block that changed the state, leaves the state (its bookkeeping included)
// as it was. So an idle chain changes its app hash about once a quiet_ms, a
// gap between recorded blocks stays far below HaltGapMs while the chain
// commits, and freshness, which is judged at the time of the last recorded
// block before (FreshAt), lags the block before by less than quiet_ms: a
// block whose timer falls due and evaluates its check is always recorded
// (a timer only set again by rewake is not a change).
const DefaultQuietMs = 1000

// quiet tells whether the current block changed nothing worth recording.
func (a *App) quiet() bool {
	return a.quietMs > 0 && a.before.Height > 0 && !a.busy && a.writes.n == 0 &&
		a.meta.HaltedToMs == a.before.HaltedToMs && a.meta.GapToMs == a.before.GapToMs && a.meta.TimeMs-a.before.TimeMs < a.quietMs
}

// writeCounter counts the writes of a block, so that EndBlock can tell a
// block that changed nothing.
type writeCounter struct {
	Store
	n int
}

func (w *writeCounter) Set(key, value []byte) error {
	w.n++
	return w.Store.Set(key, value)
}

func (w *writeCounter) Delete(key []byte) error {
	w.n++
	return w.Store.Delete(key)
}

// instance returns the registered instance (nil if none). The record is
// shared: callers must not modify it.
func (a *App) instance(service, id string) *types.ServiceInstance {
	return a.catalog[service+"/"+id]
}

// Applied is the number of observations the current block applied.
func (a *App) Applied() int { return a.applied }

// DeliverTx validates tx against the working state and applies it. A refused
// tx changes nothing, but for one thing: a tx whose signature verified, of a
// known signer, uses up its nonce even when its message is refused, so that
// it can never execute later, in another state (a refused deregistration
// does not come true fifty blocks on). The error is a *TxError with its code.
func (a *App) DeliverTx(tx []byte) (string, error) {
	a.busy = true
	defer a.forget(tx)
	if err := a.sweepSessions(); err != nil {
		return "", err
	}
	body, err := a.precheck(tx)
	if err != nil {
		return "", err
	}
	var log string
	switch m := body.Msg.Sum.(type) {
	case *types.Msg_Register:
		log, err = a.register(body.Signer, &m.Register.Instance)
	case *types.Msg_Deregister:
		log, err = a.deregister(body.Signer, m.Deregister)
	case *types.Msg_Observe:
		log, err = a.observe(body.Signer, body.Nonce, m.Observe)
	case *types.Msg_Receipt:
		log, err = a.receipt(body.Signer, m.Receipt)
	case *types.Msg_RegisterReceiver:
		log, err = a.registerReceiver(body.Signer, m.RegisterReceiver)
	case *types.Msg_KvSet:
		log, err = a.kvWrite(body.Signer, m.KvSet)
	case *types.Msg_KvDelete:
		log, err = a.kvWrite(body.Signer, m.KvDelete)
	case *types.Msg_KvTxn:
		log, err = a.kvWrite(body.Signer, m.KvTxn)
	case *types.Msg_SessionCreate:
		log, err = a.sessionCreate(body.Signer, tx, m.SessionCreate)
	case *types.Msg_SessionRenew:
		log, err = a.sessionRenew(body.Signer, m.SessionRenew)
	case *types.Msg_SessionDestroy:
		log, err = a.sessionDestroy(body.Signer, m.SessionDestroy)
	case *types.Msg_Equivocation:
		log, err = a.equivocation(body.Signer, m.Equivocation)
	default:
		err = refuse(CodeInvalid, "transaction without a message")
	}
	if err != nil && CodeOf(err) == CodeInternal {
		return "", err
	}
	if uerr := a.useNonce(body.Signer, body.Nonce); uerr != nil {
		return "", uerr
	}
	return log, err
}

// CheckTx is the cheap admission test: decoding, signature, nonce, and that
// the signer may send this kind of message. It changes nothing, and says
// who signed and what the transaction costs (Gas).
func (a *App) CheckTx(tx []byte) (Admitted, error) {
	body, err := a.precheck(tx)
	if err != nil {
		return Admitted{}, err
	}
	return admitted(tx, body), a.checkMsg(body)
}

// checkMsg is CheckTx's look at the message.
func (a *App) checkMsg(body *types.TxBody) error {
	switch m := body.Msg.Sum.(type) {
	case *types.Msg_Register:
		if err := a.authorizeOperator(body.Signer, m.Register.Instance.Name); err != nil {
			return err
		}
		if err := validateInstance(&m.Register.Instance); err != nil {
			return err
		}
		return a.checkScopes(&m.Register.Instance)
	case *types.Msg_Deregister:
		return a.authorizeOperator(body.Signer, m.Deregister.Name)
	case *types.Msg_Observe:
		if a.byPub[string(body.Signer)] == nil {
			return refuse(CodeUnauthorized, "signer %s is not an observer", types.KeyID(body.Signer))
		}
		return checkBatchShape(m.Observe)
	case *types.Msg_Receipt:
		if a.byPub[string(body.Signer)] == nil {
			return refuse(CodeUnauthorized, "signer %s is not an observer: only observers' nodes deliver alerts", types.KeyID(body.Signer))
		}
		return validReceipt(m.Receipt)
	case *types.Msg_RegisterReceiver:
		if err := validRegisterReceiver(m.RegisterReceiver); err != nil {
			return err
		}
		return a.authorizeOperator(body.Signer, m.RegisterReceiver.Name)
	case *types.Msg_KvSet:
		_, _, err := a.checkKV(body.Signer, m.KvSet)
		return err
	case *types.Msg_KvDelete:
		_, _, err := a.checkKV(body.Signer, m.KvDelete)
		return err
	case *types.Msg_KvTxn:
		_, _, err := a.checkKV(body.Signer, m.KvTxn)
		return err
	case *types.Msg_SessionCreate:
		if err := validSessionCreate(m.SessionCreate); err != nil {
			return err
		}
		return a.authorizeOperator(body.Signer, m.SessionCreate.Service)
	case *types.Msg_SessionRenew, *types.Msg_SessionDestroy:
		if a.operators[string(body.Signer)] == nil {
			return refuse(CodeUnauthorized, "signer %s is not an operator", types.KeyID(body.Signer))
		}
	case *types.Msg_Equivocation:
		return validEquivocation(m.Equivocation) // any known signer may submit it
	default:
		return refuse(CodeInvalid, "transaction without a message")
	}
	return nil
}

// precheck decodes tx, verifies its signature, that its signer is known (an
// observer or an operator: nobody else may write anything, not even a nonce)
// and that its nonce is fresh.
func (a *App) precheck(tx []byte) (*types.TxBody, error) {
	body, err := a.decodeKnown(tx)
	if err != nil {
		return nil, err
	}
	ns, err := a.signerNonces(body.Signer)
	if err != nil {
		return nil, err
	}
	if !ns.fresh(body.Nonce) {
		return nil, refuse(CodeReplay, "nonce %d was used already, or is at or below the signer's floor %d (its last %d nonces are kept): replay?",
			body.Nonce, ns.floor, NonceWindow)
	}
	return body, nil
}

// decode decodes tx and verifies its signature, once per distinct bytes.
func (a *App) decode(tx []byte) (*types.TxBody, error) {
	if len(tx) > types.MaxTxBytes {
		return nil, refuse(CodeTooLarge, "tx is %d bytes, over the %d-byte limit", len(tx), types.MaxTxBytes)
	}
	body, env, err := types.DecodeUnverified(tx)
	if err != nil {
		return nil, refuse(CodeMalformed, "%v", err)
	}
	sum := sha256.Sum256(tx)
	if _, ok := a.verified[sum]; ok {
		return body, nil
	}
	if err := types.Verify(a.meta.ChainId, body, env); err != nil {
		return nil, refuse(CodeBadSignature, "%v (chain id %q)", err, a.meta.ChainId)
	}
	if a.verified == nil || len(a.verified) >= maxVerified {
		a.verified = make(map[[32]byte]struct{}, 1024)
	}
	a.verified[sum] = struct{}{}
	return body, nil
}

// decodeKnown is decode, and refuses a signer that is neither an observer
// nor an operator of the chain.
func (a *App) decodeKnown(tx []byte) (*types.TxBody, error) {
	body, err := a.decode(tx)
	if err != nil {
		return nil, err
	}
	if a.byPub[string(body.Signer)] == nil && a.operators[string(body.Signer)] == nil {
		return nil, refuse(CodeUnauthorized, "signer %s is neither an observer nor an operator of this chain", types.KeyID(body.Signer))
	}
	return body, nil
}

// forget drops tx from the signature cache once its block executed it.
func (a *App) forget(tx []byte) { delete(a.verified, sha256.Sum256(tx)) }

func (a *App) get(key []byte, m proto) (bool, error) {
	bz, err := a.store.Get(key)
	if err != nil {
		return false, err
	}
	if bz == nil {
		return false, nil
	}
	if err := m.Unmarshal(bz); err != nil {
		return false, fmt.Errorf("decode %q: %w", key, err)
	}
	return true, nil
}

func (a *App) put(key []byte, m proto) error {
	bz, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("encode %q: %w", key, err)
	}
	return a.store.Set(key, bz)
}

// putIfChanged writes m unless the stored bytes are already equal.
func (a *App) putIfChanged(key []byte, m proto) error {
	bz, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("encode %q: %w", key, err)
	}
	old, err := a.store.Get(key)
	if err != nil {
		return err
	}
	if old != nil && bytes.Equal(old, bz) {
		return nil
	}
	return a.store.Set(key, bz)
}

// schedule sets the timer of ref to at (0: no timer).
func (a *App) schedule(ref string, at int64) {
	if old, ok := a.wake[ref]; ok {
		if old == at {
			return
		}
		a.timers.Delete(timer{old, ref})
		delete(a.wake, ref)
	}
	if at > 0 {
		a.timers.ReplaceOrInsert(timer{at, ref})
		a.wake[ref] = at
	}
}
