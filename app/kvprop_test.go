package app_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// kvModel is a deliberately naive model of the key/value store: entries by
// key, the live sessions, the lock-delays; ops apply to a copy, kept only
// if every one succeeds.
type kvModel struct {
	entries  map[string]types.KVEntry
	sessions map[string]bool
	delay    map[string]int64
}

func (m kvModel) clone() kvModel {
	c := kvModel{entries: map[string]types.KVEntry{}, sessions: m.sessions, delay: map[string]int64{}}
	for k, v := range m.entries {
		c.entries[k] = v
	}
	for k, v := range m.delay {
		c.delay[k] = v
	}
	return c
}

// apply returns the model after the txn, and whether it commits.
func (m kvModel) apply(ops []types.KVOp, h uint64, now int64) (kvModel, bool) {
	c := m.clone()
	for _, op := range ops {
		e, ok := c.entries[op.Key]
		write := func() {
			if e.Key == "" {
				e.Key, e.CreateIndex = op.Key, h
			}
			e.Value, e.Flags, e.ModifyIndex, e.Writer = op.Value, op.Flags, h, pubOf("root")
			c.entries[op.Key] = e
		}
		switch op.Verb {
		case "set":
			write()
		case "cas":
			if (op.Index == 0) == ok || ok && e.ModifyIndex != op.Index {
				return m, false
			}
			write()
		case "check-index":
			if !ok || e.ModifyIndex != op.Index {
				return m, false
			}
		case "check-not-exists":
			if ok {
				return m, false
			}
		case "get":
			if !ok {
				return m, false
			}
		case "check-session":
			if !ok || e.Session != op.Session {
				return m, false
			}
		case "lock":
			if !c.sessions[op.Session] || ok && e.Session != "" && e.Session != op.Session {
				return m, false
			}
			if !ok || e.Session == "" {
				if c.delay[op.Key] > now {
					return m, false
				}
				e.LockIndex++
				e.Session = op.Session
			}
			write()
		case "unlock":
			if !ok || e.Session != op.Session {
				return m, false
			}
			e.Session = ""
			write()
		case "delete":
			delete(c.entries, op.Key)
		case "delete-cas":
			if ok && e.ModifyIndex != op.Index {
				return m, false
			}
			delete(c.entries, op.Key)
		case "delete-tree":
			for k := range c.entries {
				if len(k) >= len(op.Key) && k[:len(op.Key)] == op.Key {
					delete(c.entries, k)
				}
			}
		}
	}
	return c, true
}

// acquiredAfterDelay counts the acquisitions of keys that had been in a
// lock-delay, so that TestAtMostOneLockHolder knows it exercised them.
var acquiredAfterDelay int

var modelVerbs = []string{"set", "cas", "lock", "unlock", "get", "check-index", "check-session", "check-not-exists", "delete", "delete-tree", "delete-cas"}

// TestKVTxnAllOrNothing: a random txn over random state either applies
// exactly what a naive model of the operations says, or is refused and
// leaves the app hash as a twin network's, which ran the same blocks but
// was sent a txn refused at once (the same signer and nonce) instead.
func TestKVTxnAllOrNothing(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		type step struct {
			signer string
			msg    types.Msg
		}
		// history is the committed blocks, one tx each: each round replays
		// it into two fresh networks.
		history := []step{{"root", register(webInstance(0))}, {"root", kvSet("x/0", "a")}, {"root", kvSet("x/1", "b")},
			{"root", kvSet("y", "c")}, {"root", sessionCreate("web", "web-1", 0)}}
		replay := func() *net {
			n := newNet(t)
			for _, st := range history {
				n.run(1000, n.tx(st.signer, st.msg))
			}
			return n
		}
		var s1 string // the id of the replayed session create
		{
			n := newNet(t)
			var last []byte
			for _, st := range history {
				last = n.tx(st.signer, st.msg)
				n.run(1000, last)
			}
			s1 = app.SessionID(last)
		}
		history = append(history, step{"root", kvAcquire("x/1", "held", s1)})
		keys := []string{"x/0", "x/1", "x/2", "y", "x/"}
		a := replay()
		model := kvModel{entries: map[string]types.KVEntry{}, sessions: map[string]bool{s1: true}, delay: map[string]int64{}}
		for _, e := range mustList(rt, a) {
			model.entries[e.Key] = e
		}
		if model.entries["x/1"].Session != s1 {
			rt.Fatalf("setup: x/1 = %+v", model.entries["x/1"])
		}
		for round := range rapid.IntRange(1, 4).Draw(rt, "rounds") {
			var ops []types.KVOp
			for range rapid.IntRange(1, 6).Draw(rt, "ops") {
				op := types.KVOp{
					Verb:  rapid.SampledFrom(modelVerbs).Draw(rt, "verb"),
					Key:   rapid.SampledFrom(keys).Draw(rt, "key"),
					Value: []byte(rapid.StringN(0, 3, 3).Draw(rt, "value")),
					Flags: rapid.Uint64Range(0, 2).Draw(rt, "flags"),
				}
				if e, ok := model.entries[op.Key]; ok && rapid.Bool().Draw(rt, "current index") {
					op.Index = e.ModifyIndex
				} else {
					op.Index = rapid.Uint64Range(0, uint64(a.height)+1).Draw(rt, "index")
				}
				op.Session = rapid.SampledFrom([]string{s1, "no-such-session"}).Draw(rt, "session")
				if op.Verb == "delete-tree" {
					op.Key = rapid.SampledFrom([]string{"x/", "x/1", "z"}).Draw(rt, "prefix")
				}
				ops = append(ops, op)
			}
			a, b := replay(), replay()
			h := uint64(a.height + 1)
			want, commits := model.apply(ops, h, a.now+1000)
			err := a.run(1000, a.tx("root", kvTxn(ops...)))[0]
			b.run(1000, b.tx("root", kvSet("", "refused at once")))
			if commits != (err == nil) {
				rt.Fatalf("round %d: txn %v: the model says commits=%v, the app %v", round, ops, commits, err)
			}
			if err != nil {
				if !bytes.Equal(a.store.WorkingHash(), b.store.WorkingHash()) {
					rt.Fatalf("round %d: a refused txn (%v) changed the app hash", round, err)
				}
				history = append(history, step{"root", kvSet("", "refused at once")})
			} else {
				model = want
				history = append(history, step{"root", kvTxn(ops...)})
			}
			got := mustList(rt, a)
			if len(got) != len(model.entries) {
				rt.Fatalf("round %d: %d entries, the model has %d: %v", round, len(got), len(model.entries), got)
			}
			for _, e := range got {
				if w := model.entries[e.Key]; w.String() != e.String() {
					rt.Fatalf("round %d: entry %s:\n got %v\nwant %v", round, e.Key, e, w)
				}
			}
			checkLocks(rt, a)
		}
	})
}

func mustList(t *rapid.T, n *net) []types.KVEntry {
	list, err := n.query().KVList("")
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// checkLocks asserts that every lock is held by one live session that
// knows it holds it, and that no key is on two sessions' lists.
func checkLocks(t *rapid.T, n *net) {
	q := n.query()
	sessions, err := q.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	holderOf := map[string]string{}
	for _, s := range sessions {
		keys, err := q.SessionKeys(s.Id)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if other, ok := holderOf[k]; ok {
				t.Fatalf("height %d: key %s held by sessions %s and %s", n.height, k, other, s.Id)
			}
			holderOf[k] = s.Id
		}
	}
	for _, e := range mustList(t, n) {
		if holderOf[e.Key] != e.Session {
			t.Fatalf("height %d: key %s names session %q, the sessions' lists %q", n.height, e.Key, e.Session, holderOf[e.Key])
		}
		delete(holderOf, e.Key)
	}
	if len(holderOf) > 0 {
		t.Fatalf("height %d: sessions hold absent keys: %v", n.height, holderOf)
	}
}

// TestAtMostOneLockHolder: contenders of web-1 and web-2 create sessions,
// acquire, release, renew and destroy them while the instances go down and
// come back, TTLs lapse and keys are deleted; at every height each lock is
// held by at most one live session, a key is acquired only outside its
// lock-delay, and its lock index only grows while it exists.
func TestAtMostOneLockHolder(t *testing.T) {
	acquiredAfterDelay = 0
	defer func() {
		if acquiredAfterDelay == 0 && !testing.Short() {
			t.Error("no history acquired a key after its lock-delay")
		}
	}()
	rapid.Check(t, func(rt *rapid.T) {
		n := newNet(t)
		twoInstances(n, rapid.SampledFrom([]int64{0, 2000}).Draw(rt, "confirm"))
		keys := []string{"lead", "lead2"}
		var sessions []string
		lockIndex := map[string]uint64{}
		status := map[string]types.Status{"web-1": P, "web-2": P}
		for blk := range rapid.IntRange(5, 40).Draw(rt, "blocks") {
			var txs [][]byte
			for _, inst := range []string{"web-1", "web-2"} {
				if rapid.IntRange(0, 5).Draw(rt, "flip") == 0 {
					status[inst] = rapid.SampledFrom([]types.Status{P, C}).Draw(rt, "status")
				}
			}
			for _, o := range observerNames {
				x, y := obsOf(status["web-1"]), obsOf(status["web-2"])
				y.Instance = "web-2"
				txs = append(txs, n.tx(o, observe(x, y)))
			}
			delays := map[string]int64{}
			q := n.query()
			for _, k := range keys {
				delays[k], _ = q.LockDelay(k)
			}
			deleted := false // a key may go and come back in the block
			for range rapid.IntRange(0, 4).Draw(rt, "actions") {
				k := rapid.SampledFrom(keys).Draw(rt, "key")
				var s string
				if len(sessions) > 0 {
					s = rapid.SampledFrom(sessions).Draw(rt, "session")
				}
				switch rapid.IntRange(0, 6).Draw(rt, "action") {
				case 0:
					inst := rapid.SampledFrom([]string{"web-1", "web-2"}).Draw(rt, "instance")
					m := &types.SessionCreate{Service: "web", Instance: inst, TtlMs: rapid.SampledFrom([]int64{0, 10_000}).Draw(rt, "ttl"),
						Behavior: rapid.SampledFrom([]string{"", "release", "delete"}).Draw(rt, "behavior"), LockDelayMs: rapid.SampledFrom([]int64{0, 1000, 3000}).Draw(rt, "delay")}
					tx := n.tx("root", types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: m}})
					sessions = append(sessions, app.SessionID(tx))
					txs = append(txs, tx)
				case 1, 2:
					txs = append(txs, n.tx("root", kvAcquire(k, fmt.Sprint(blk), s)))
				case 3:
					txs = append(txs, n.tx("root", kvRelease(k, s)))
				case 4:
					txs = append(txs, n.tx("root", sessionRenew(s)))
				case 5:
					txs = append(txs, n.tx("root", sessionDestroy(s)))
				case 6:
					txs = append(txs, n.tx("root", kvDelete(k, rapid.Bool().Draw(rt, "recurse"))))
					deleted = true
				}
			}
			n.run(rapid.SampledFrom([]int64{500, 1000, 3000}).Draw(rt, "dt"), txs...)
			checkLocks(rt, n)
			for _, k := range keys {
				e, ok := n.entry(k)
				if !ok {
					delete(lockIndex, k)
					continue
				}
				if deleted { // it may be a new key: no history to compare
					lockIndex[k] = e.LockIndex
				}
				if e.LockIndex < lockIndex[k] {
					rt.Fatalf("height %d: lock index of %s went from %d to %d", n.height, k, lockIndex[k], e.LockIndex)
				}
				if e.LockIndex > lockIndex[k] && delays[k] > n.now {
					rt.Fatalf("height %d: %s acquired at %d, in its lock-delay until %d", n.height, k, n.now, delays[k])
				}
				if e.LockIndex > lockIndex[k] && delays[k] > 0 {
					acquiredAfterDelay++
				}
				lockIndex[k] = e.LockIndex
				if e.Session != "" {
					s, err := n.query().Session(e.Session)
					if err != nil {
						rt.Fatalf("height %d: %s held by a dead session: %v", n.height, k, err)
					}
					if h, _ := n.query().Service("web"); slices.ContainsFunc(h, func(iv app.InstanceView) bool {
						return iv.Instance.Id == s.Instance && iv.Checks[0].State.Hard == C
					}) {
						rt.Fatalf("height %d: %s held by a session of the critical %s", n.height, k, s.Instance)
					}
				}
			}
		}
	})
}

// TestLockSurvivesCoalition draws observer sets with random weights over
// datacenters and a coalition below a third of all the weight that always
// reports the leader's healthy instance critical, while a Byzantine
// proposer holds back honest batches at random: the agreed hard status never
// becomes critical, so the leader keeps its session and lock at every
// height.
func TestLockSurvivesCoalition(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		nObs := rapid.IntRange(4, 9).Draw(rt, "observers")
		g := &app.Genesis{Operators: []app.GenesisOperator{{Name: "root", PubKey: pub64(key("root")), Prefixes: []string{""}}}}
		names := make([]string, nObs)
		weights := make([]uint64, nObs)
		var total uint64
		for i := range names {
			names[i] = fmt.Sprintf("ob%d", i)
			weights[i] = rapid.Uint64Range(1, 3).Draw(rt, "weight")
			total += weights[i]
		}
		faulty := make([]bool, nObs)
		var fw uint64
		for _, i := range rapid.Permutation(seq(nObs)).Draw(rt, "order") {
			if 3*(fw+weights[i]) < total && rapid.Bool().Draw(rt, "faulty") {
				faulty[i], fw = true, fw+weights[i]
			}
		}
		for i := range names {
			dc := fmt.Sprintf("dc%d", rapid.IntRange(1, 2).Draw(rt, "dc"))
			g.Observers = append(g.Observers, app.GenesisObserver{Name: names[i], PubKey: pub64(key(names[i])), Datacenter: dc, Weight: weights[i]})
		}
		n := newNetWith(t, g)
		n.must(1000, "root", register(webInstance(rapid.SampledFrom([]int64{0, 2000}).Draw(rt, "confirm"))))
		s := n.newSession(1000, &types.SessionCreate{Service: "web", Instance: "web-1", TtlMs: 10_000})
		n.must(1000, "root", kvAcquire("lead", "web-1", s))
		var held [][]byte
		for blk := range rapid.IntRange(5, 30).Draw(rt, "blocks") {
			var txs [][]byte
			for i, nm := range names {
				st := P
				if faulty[i] {
					st = C
				}
				tx := n.tx(nm, observe(obsOf(st)))
				if !faulty[i] && rapid.IntRange(0, 3).Draw(rt, "hold") == 0 {
					held = append(held, tx)
					continue
				}
				txs = append(txs, tx)
			}
			if len(held) > 0 && rapid.Bool().Draw(rt, "release") {
				txs, held = append(txs, held...), nil
			}
			if blk%5 == 0 {
				txs = append(txs, n.tx("root", sessionRenew(s)))
			}
			n.run(1000, rapid.Permutation(txs).Draw(rt, "reorder")...)
			if h := n.check().State.Hard; h == C {
				rt.Fatalf("block %d: a coalition of weight %d of %d made the hard status critical", blk, fw, total)
			}
			if got := n.holder("lead"); got != s {
				rt.Fatalf("block %d: the lock is held by %q, not the healthy leader's session (coalition %d of %d)", blk, got, fw, total)
			}
		}
	})
}
