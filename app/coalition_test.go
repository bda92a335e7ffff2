package app_test

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/app/verdict"
)

// Behaviours of a faulty observer in TestCoalitionsBelowAThird.
const (
	behaveLie     = iota // a random status in every report
	behaveInvert         // the opposite of the truth, always
	behaveSilent         // reports nothing
	behaveOld            // reports the opposite, claiming it looked long ago
	behaveFuture         // reports the opposite, claiming a time far ahead
	behaveReplay         // re-sends its own committed transactions
	behaveReceipt        // commits receipts of every alert it sees, delivering nothing
	behaviours
)

// coalitionCheck is one check of the drawn world, with the truth that every
// honest observer of its scope sees.
type coalitionCheck struct {
	id      string
	scope   []string // datacenters (nil: all)
	truth   types.Status
	w, q    uint64 // the scope's weight and quorum
	faulty  uint64 // the coalition's weight in the scope
	members []int  // observers in the scope
}

// TestCoalitionsBelowAThird draws networks of observers with random weights
// over datacenters, a coalition holding less than a third of the weight with
// random behaviours (lying, silence, stale or future times, replays, forged
// delivery receipts, owning a scope by standing in one datacenter), checks
// scoped at random, a random truth per check that every honest observer
// sees, and a proposer that reorders and holds back honest batches; and
// asserts at every block, over many seeds:
//
//   - no false verdict: a decided verdict (and hard state) is the honest
//     truth, or warning where the honest see critical (the rule's "warning
//     or critical" quorum, reached when too few honest are fresh or the
//     coalition owns more than W − Q of the scope: still not passing);
//   - no suppressed verdict: an accepted scope is safe (the coalition holds
//     at most W − Q of it), and where its honest observers are fresh the
//     verdict is the truth;
//   - no alert to a status the honest do not see;
//   - no honest observer is ever counted as disagreeing, let alone suspect;
//   - a scope is accepted exactly when it is safe (verdict.Safety): its
//     honest weight reaches the quorum against every coalition below a
//     third; any other is refused at registration.
func TestCoalitionsBelowAThird(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		nObs := rapid.IntRange(4, 9).Draw(rt, "observers")
		nDC := rapid.IntRange(1, 3).Draw(rt, "datacenters")
		g := &app.Genesis{Operators: []app.GenesisOperator{{Name: "root", PubKey: pub64(key("root")), Prefixes: []string{""}}}}
		names := make([]string, nObs)
		weights := make([]uint64, nObs)
		dcs := make([]string, nObs)
		var total uint64
		for i := range names {
			names[i] = fmt.Sprintf("ob%d", i)
			weights[i] = rapid.Uint64Range(1, 3).Draw(rt, "weight")
			dcs[i] = fmt.Sprintf("dc%d", rapid.IntRange(1, nDC).Draw(rt, "dc"))
			total += weights[i]
		}
		// The coalition: a random set below a third of all the weight; it
		// may be put together in dc1 to own a scope there.
		faulty := make([]bool, nObs)
		behave := make([]int, nObs)
		var fw uint64
		gather := rapid.Bool().Draw(rt, "gather")
		for _, i := range rapid.Permutation(seq(nObs)).Draw(rt, "order") {
			if 3*(fw+weights[i]) < total && rapid.Bool().Draw(rt, "faulty") {
				faulty[i], fw = true, fw+weights[i]
				behave[i] = rapid.IntRange(0, behaviours-1).Draw(rt, "behaviour")
				if gather {
					dcs[i] = "dc1"
				}
			}
		}
		for i := range names {
			g.Observers = append(g.Observers, app.GenesisObserver{Name: names[i], PubKey: pub64(key(names[i])), Datacenter: dcs[i], Weight: weights[i]})
		}
		n := newNetWith(t, g)

		// Checks, each with its own instance and scope.
		var checks []coalitionCheck
		for k := range rapid.IntRange(1, 3).Draw(rt, "checks") {
			c := coalitionCheck{id: fmt.Sprintf("web-%d", k), truth: types.Status(rapid.IntRange(1, 4).Draw(rt, "truth"))}
			switch rapid.IntRange(0, 2).Draw(rt, "scope") {
			case 1:
				c.scope = []string{"dc1"}
			case 2:
				c.scope = []string{fmt.Sprintf("dc%d", rapid.IntRange(1, nDC).Draw(rt, "scopedc"))}
			}
			for i := range names {
				if c.scope == nil || slices.Contains(c.scope, dcs[i]) {
					c.w += weights[i]
					c.members = append(c.members, i)
					if faulty[i] {
						c.faulty += weights[i]
					}
				}
			}
			var mw []uint64
			for _, i := range c.members {
				mw = append(mw, weights[i])
			}
			safety := verdict.ScopeSafety(mw, total, 0)
			c.q = safety.Quorum
			si := webInstance(rapid.SampledFrom([]int64{0, 2000}).Draw(rt, "confirm"))
			si.Id, si.Checks[0].Datacenters = c.id, c.scope
			codes, _ := n.block(1000, n.tx("root", register(si)))
			switch safe := safety.Safe(); {
			case safe && codes[0] != app.CodeOK:
				rt.Fatalf("safe scope %v of weight %d (quorum %d of %d, tolerated %d) refused: %v", c.scope, c.w, c.q, total, safety.Tolerated, codes[0])
			case !safe && codes[0] != app.CodeInvalid:
				rt.Fatalf("unsafe scope %v of weight %d (quorum %d of %d, tolerated %d) registered: %v", c.scope, c.w, c.q, total, safety.Tolerated, codes[0])
			case safe:
				if c.faulty > c.w-c.q {
					rt.Fatalf("accepted scope %v of weight %d (quorum %d) holds coalition weight %d: it owns the check", c.scope, c.w, c.q, c.faulty)
				}
				checks = append(checks, c)
			}
		}
		if len(checks) == 0 {
			return
		}

		var held [][]byte             // honest batches the proposer holds back
		own := make([][][]byte, nObs) // txs of each faulty observer, to replay
		var alertIDs []string
		honestReceipts := map[string]map[int]bool{} // alert id → honest observers that sent a receipt
		report := func(st types.Status, at int64) types.Observation {
			return types.Observation{Service: "web", Status: st, Output: st.Name(), ObservedAtMs: at}
		}
		for blk := range rapid.IntRange(6, 25).Draw(rt, "blocks") {
			now := n.now + 1000 // the block's time
			var txs [][]byte
			for i := range names {
				var obs []types.Observation
				for _, c := range checks {
					if !slices.Contains(c.members, i) {
						continue
					}
					var o types.Observation
					switch {
					case !faulty[i]:
						o = report(c.truth, now-rapid.Int64Range(0, 500).Draw(rt, "lag"))
					case behave[i] == behaveLie:
						o = report(types.Status(rapid.IntRange(1, 4).Draw(rt, "lie")), now)
					case behave[i] == behaveInvert || behave[i] == behaveReceipt || behave[i] == behaveReplay:
						o = report(opposite(c.truth), now)
					case behave[i] == behaveOld:
						o = report(opposite(c.truth), now-rapid.Int64Range(2000, 60000).Draw(rt, "old"))
					case behave[i] == behaveFuture:
						o = report(opposite(c.truth), now+rapid.Int64Range(0, 120000).Draw(rt, "ahead"))
					default: // silent
						continue
					}
					o.Instance, o.Check = c.id, "http"
					obs = append(obs, o)
				}
				if len(obs) == 0 {
					continue
				}
				tx := n.tx(names[i], observe(obs...))
				switch {
				case !faulty[i] && rapid.IntRange(0, 3).Draw(rt, "hold") == 0:
					held = append(held, tx) // a Byzantine proposer holds it back
				case faulty[i] && behave[i] == behaveReplay && len(own[i]) > 0:
					txs = append(txs, tx, rapid.SampledFrom(own[i]).Draw(rt, "replayed"))
					own[i] = append(own[i], tx)
				default:
					txs = append(txs, tx)
					if faulty[i] {
						own[i] = append(own[i], tx)
					}
				}
			}
			// Forged receipts of every alert so far; now and then an honest
			// node's receipt of one it delivered.
			for i := range names {
				if faulty[i] && behave[i] == behaveReceipt {
					for _, id := range alertIDs {
						txs = append(txs, n.tx(names[i], receipt(id, "pager")))
					}
				}
				if !faulty[i] && len(alertIDs) > 0 && rapid.IntRange(0, 4).Draw(rt, "deliver") == 0 {
					id := rapid.SampledFrom(alertIDs).Draw(rt, "delivered")
					txs = append(txs, n.tx(names[i], receipt(id, "pager")))
					if honestReceipts[id] == nil {
						honestReceipts[id] = map[int]bool{}
					}
					honestReceipts[id][i] = true
				}
			}
			// The proposer lets some held batches in, late, in any order.
			if len(held) > 0 && rapid.Bool().Draw(rt, "release") {
				txs = append(txs, held...)
				held = nil
			}
			txs = rapid.Permutation(txs).Draw(rt, "reorder")
			_, alerts := n.block(1000, txs...)
			// What the model knows the honest have got in: the records say.
			q := n.query()
			for _, al := range alerts {
				alertIDs = append(alertIDs, al.Id)
			}
			for _, c := range checks {
				iv, err := q.Service("web")
				if err != nil {
					rt.Fatal(err)
				}
				var cv app.CheckView
				for _, x := range iv {
					if x.Instance.Id == c.id {
						cv = x.Checks[0]
					}
				}
				var honestFresh uint64
				for _, r := range cv.Reports {
					i := slices.Index(names, r.Observer.Name)
					if faulty[i] || !r.Fresh {
						continue
					}
					if r.Record.Status != c.truth {
						rt.Fatalf("block %d: honest %s's record says %s, the truth is %s", blk, r.Observer.Name, r.Record.Status.Name(), c.truth.Name())
					}
					if r.Record.TimeMs > r.Record.ObservedAtMs && r.Record.ObservedAtMs != 0 {
						rt.Fatalf("block %d: %s's freshness starts at %d, after it looked (%d)", blk, r.Observer.Name, r.Record.TimeMs, r.Record.ObservedAtMs)
					}
					honestFresh += r.Observer.Weight
				}
				v := cv.State.Verdict
				if decided(v) && !consistent(v, c.truth) {
					rt.Fatalf("block %d: check %s (scope %v, W %d, Q %d, coalition %d of %d) is %s, the honest see %s",
						blk, c.id, c.scope, c.w, c.q, c.faulty, total, v.Name(), c.truth.Name())
				}
				if honestFresh == c.w-c.faulty && v != c.truth {
					rt.Fatalf("block %d: every honest observer of %s is fresh and sees %s, yet the verdict is %s (W %d, Q %d, coalition %d)",
						blk, c.id, c.truth.Name(), v.Name(), c.w, c.q, c.faulty)
				}
				if h := cv.State.Hard; decided(h) && !consistent(h, c.truth) {
					rt.Fatalf("block %d: hard state of %s is %s, the honest see %s", blk, c.id, h.Name(), c.truth.Name())
				}
			}
			for _, al := range alerts {
				if al.Kind != app.AlertStateChange {
					if al.Kind == app.AlertObserverSuspect {
						for i, nm := range names {
							if !faulty[i] && al.Observer == types.KeyID(key(nm).Public().(ed25519.PublicKey)) {
								rt.Fatalf("block %d: honest %s became suspect", blk, nm)
							}
						}
					}
					continue
				}
				for _, c := range checks {
					if al.Instance == c.id && !consistent(al.To, c.truth) {
						rt.Fatalf("block %d: alert %s→%s on %s, the honest see %s", blk, al.From.Name(), al.To.Name(), c.id, c.truth.Name())
					}
				}
			}
			// Receipts: only those of more than a third of the weight settle
			// an alert for the other nodes, so the coalition's never do alone;
			// and enough honest ones always do.
			for _, id := range alertIDs {
				st, err := q.Settled(id, "pager")
				if err != nil {
					rt.Fatal(err)
				}
				var hw uint64
				for i := range honestReceipts[id] {
					hw += weights[i]
				}
				if st.Settled && hw == 0 {
					rt.Fatalf("block %d: alert %s settled by the coalition's receipts alone (%+v)", blk, id, st)
				}
				if 3*hw > total && !st.Settled {
					rt.Fatalf("block %d: alert %s not settled by honest receipts of weight %d of %d (%+v)", blk, id, hw, total, st)
				}
			}
			for _, s := range mustStandings(rt, q) {
				i := slices.Index(names, s.Observer.Name)
				if !faulty[i] && (s.Disagreed > 0 || s.Suspect) {
					rt.Fatalf("block %d: honest %s counted as disagreeing: %+v", blk, s.Observer.Name, s)
				}
			}
		}
	})
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// opposite is a status the honest do not see.
func opposite(s types.Status) types.Status {
	if s == types.STATUS_PASSING {
		return types.STATUS_CRITICAL
	}
	return types.STATUS_PASSING
}

// consistent tells whether a decided status v is what honest observers that
// all see truth can have agreed: the truth, or warning for critical (the
// rule's "warning or critical" quorum, when too few of them are fresh or
// the coalition owns the scope).
func consistent(v, truth types.Status) bool {
	return v == truth || v == types.STATUS_WARNING && truth == types.STATUS_CRITICAL
}

func decided(s types.Status) bool { return s >= types.STATUS_PASSING && s <= types.STATUS_UNKNOWN }

func mustStandings(t *rapid.T, q *app.Query) []app.Standing {
	list, err := q.Standings()
	if err != nil {
		t.Fatal(err)
	}
	return list
}
