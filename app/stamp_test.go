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

// vouchInstance has active checks of three intervals (ttl three of each)
// and a passive one, which no vouch covers.
func vouchInstance() types.ServiceInstance {
	si := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Port: 8080, Datacenter: "dc1"}
	for _, iv := range []int64{1000, 2000, 5000} {
		si.Checks = append(si.Checks, types.Check{
			Id: fmt.Sprintf("tcp%d", iv), Kind: "tcp", Tcp: &types.TCPParams{Address: "127.0.0.1:8080"},
			IntervalMs: iv, TimeoutMs: iv, TtlMs: 3 * iv,
		})
	}
	si.Checks = append(si.Checks, types.Check{Id: "pushed", Kind: "passive", TtlMs: 4000})
	return si
}

func interval(si types.ServiceInstance, check string) int64 {
	for _, c := range si.Checks {
		if c.Id == check {
			return c.IntervalMs
		}
	}
	return 0
}

// batchTx signs an observation batch of observer with the next nonce.
func (n *net) batchTx(observer string, b *types.ObservationBatch) ([]byte, uint64) {
	n.t.Helper()
	tx := n.tx(observer, types.Msg{Sum: &types.Msg_Observe{Observe: b}})
	return tx, n.nonce[observer]
}

// views reads every check's view of the instance at the committed state.
func (n *net) views() []app.CheckView {
	n.t.Helper()
	q, err := app.NewQuery(n.reader())
	if err != nil {
		n.t.Fatal(err)
	}
	iv, err := q.Service("web")
	if err != nil {
		n.t.Fatal(err)
	}
	return iv[0].Checks
}

// TestVouchEqualsExpanded: a vouch means exactly what a batch of unchanged
// reports of every other covered check would, each observed at the vouch's
// time minus the check's interval. Two apps run the same random history of
// an honest network (batches delivered in order): one gets the observers'
// vouches, the other those expansions; at every height their verdicts,
// hard states, alerts, each report's freshness and the time it counts from
// are the same. Only standing differs: a vouch is not tallied as a report.
func TestVouchEqualsExpanded(t *testing.T) {
	si := vouchInstance()
	rapid.Check(t, func(rt *rapid.T) {
		vouched, expanded := newNet(t), newNet(t)
		for _, n := range []*net{vouched, expanded} {
			n.block(1000, n.tx("root", register(si)))
		}
		// last[observer][check] is the status the observer last reported.
		last := map[string]map[string]types.Status{}
		prev := map[string]uint64{}
		lastVouch := map[string]int64{}
		statuses := []types.Status{P, W, C, U}
		blocks := rapid.IntRange(5, 40).Draw(rt, "blocks")
		for h := range blocks {
			dt := rapid.Int64Range(100, 1500).Draw(rt, fmt.Sprintf("dt%d", h))
			now := vouched.now + dt
			var txA, txB [][]byte
			for _, o := range observerNames {
				if !rapid.Bool().Draw(rt, fmt.Sprintf("send %d %s", h, o)) {
					continue
				}
				if last[o] == nil {
					last[o] = map[string]types.Status{}
				}
				var changes []types.Observation
				for _, c := range si.Checks {
					if !rapid.Bool().Draw(rt, fmt.Sprintf("report %d %s %s", h, o, c.Id)) {
						continue
					}
					st := rapid.SampledFrom(statuses).Draw(rt, "status")
					lag := rapid.Int64Range(0, 99).Draw(rt, "lag") // below the shortest dt: an observer's reports come in time order
					changes = append(changes, types.Observation{Service: "web", Instance: "web-1", Check: c.Id,
						Status: st, Output: st.Name(), ObservedAtMs: now - lag})
				}
				var asOf int64
				if rapid.Bool().Draw(rt, fmt.Sprintf("vouch %d %s", h, o)) {
					asOf = now - rapid.Int64Range(0, 400).Draw(rt, "vouch lag")
					if asOf <= lastVouch[o] {
						asOf = 0 // it would not count: not later than the one in force
					} else {
						lastVouch[o] = asOf
					}
				}
				if len(changes) == 0 && asOf == 0 {
					continue
				}
				tx, nonce := vouched.batchTx(o, &types.ObservationBatch{Observations: changes, PrevNonce: prev[o], UnchangedAsOfMs: asOf})
				prev[o] = nonce
				txA = append(txA, tx)
				// The expansion: the same changes, and an unchanged report
				// of every other active check the observer has reported.
				full := slices.Clone(changes)
				if asOf > 0 {
					for _, c := range si.Checks {
						st, ok := last[o][c.Id]
						if c.Kind == "passive" || !ok || slices.ContainsFunc(changes, func(ob types.Observation) bool { return ob.Check == c.Id }) {
							continue
						}
						full = append(full, types.Observation{Service: "web", Instance: "web-1", Check: c.Id,
							Status: st, Unchanged: true, ObservedAtMs: asOf - interval(si, c.Id)})
					}
				}
				if len(full) > 0 {
					tx, _ := expanded.batchTx(o, &types.ObservationBatch{Observations: full})
					txB = append(txB, tx)
				}
				for _, ob := range changes {
					last[o][ob.Check] = ob.Status
				}
			}
			codesA, alertsA := vouched.block(dt, txA...)
			codesB, alertsB := expanded.block(dt, txB...)
			for _, c := range slices.Concat(codesA, codesB) {
				if c != app.CodeOK {
					rt.Fatalf("height %d: a batch was refused: code %v", vouched.height, c)
				}
			}
			if a, b := alertLines(alertsA), alertLines(alertsB); !slices.Equal(a, b) {
				rt.Fatalf("height %d: alerts differ:\nvouched  %v\nexpanded %v", vouched.height, a, b)
			}
			va, vb := vouched.views(), expanded.views()
			for i := range va {
				a, b := va[i], vb[i]
				if a.State.Verdict != b.State.Verdict || a.State.Hard != b.State.Hard {
					rt.Fatalf("height %d, %s: vouched verdict %s hard %s, expanded %s %s", vouched.height, a.Check.Id,
						a.State.Verdict.Name(), a.State.Hard.Name(), b.State.Verdict.Name(), b.State.Hard.Name())
				}
				for j := range a.Reports {
					ra, rb := a.Reports[j], b.Reports[j]
					if ra.Fresh != rb.Fresh || ra.AsOfMs != rb.AsOfMs {
						rt.Fatalf("height %d, %s by %s: vouched fresh %v as of %d, expanded fresh %v as of %d",
							vouched.height, a.Check.Id, ra.Observer.Name, ra.Fresh, ra.AsOfMs, rb.Fresh, rb.AsOfMs)
					}
				}
			}
		}
	})
}

// alertLines are the alerts of a block in a comparable form, but for those
// about an observer's standing.
func alertLines(als []types.Alert) []string {
	var out []string
	for _, al := range als {
		if al.Observer != "" {
			continue
		}
		line := fmt.Sprintf("%s %s/%s/%s %s→%s id %s", al.Kind, al.Service, al.Instance, al.Check, al.From.Name(), al.To.Name(), al.Id)
		for _, v := range al.Views {
			line += fmt.Sprintf(" [%s %s fresh=%v]", v.Observer, v.Status.Name(), v.Fresh)
		}
		out = append(out, line)
	}
	return out
}

// TestVouchNeverOutlivesAChange: whatever a proposer does with an honest
// observer's batches — delays them, reorders them, drops them — a vouch
// never makes a report count as observed later than the observer's first
// probe that saw otherwise. The observer probes every check on its
// interval, sends changes, vouches as of the earliest of its checks' last
// probe plus interval, and sends everything again when its stamp's floor
// rises (as node/observer does); the network delivers each batch after a
// random delay or never.
func TestVouchNeverOutlivesAChange(t *testing.T) {
	si := vouchInstance()
	rapid.Check(t, func(rt *rapid.T) {
		n, twin := newNet(t), newNet(t)
		reg := n.tx("root", register(si))
		n.block(1000, reg)
		twin.block(1000, reg)
		type probe struct {
			at int64
			st types.Status
		}
		type observer struct {
			probes   map[string][]probe // every probe, in time order
			next     map[string]int64   // when each check is probed next
			sent     map[string]bool    // reported since the last resync
			prev     uint64
			floor    int64
			resynced bool
		}
		obs := map[string]*observer{}
		for _, o := range observerNames {
			ob := &observer{probes: map[string][]probe{}, next: map[string]int64{}, sent: map[string]bool{}}
			for _, c := range si.Checks {
				if c.Kind != "passive" {
					ob.next[c.Id] = n.now + rapid.Int64Range(0, c.IntervalMs).Draw(rt, "splay")
				}
			}
			obs[o] = ob
		}
		pending := map[int64][][]byte{} // delivery height → txs
		statuses := []types.Status{P, P, P, C}
		blocks := rapid.IntRange(10, 60).Draw(rt, "blocks")
		for range blocks {
			dt := rapid.Int64Range(100, 2500).Draw(rt, "dt")
			now := n.now + dt
			for _, o := range observerNames {
				ob := obs[o]
				var changes []types.Observation
				for _, c := range si.Checks {
					for c.Kind != "passive" && ob.next[c.Id] <= now {
						at := ob.next[c.Id]
						ob.next[c.Id] += c.IntervalMs
						st := rapid.SampledFrom(statuses).Draw(rt, "status")
						ps := ob.probes[c.Id]
						changed := len(ps) == 0 || ps[len(ps)-1].st != st
						ob.probes[c.Id] = append(ps, probe{at, st})
						if changed || !ob.sent[c.Id] || ob.resynced {
							changes = slices.DeleteFunc(changes, func(x types.Observation) bool { return x.Check == c.Id })
							changes = append(changes, types.Observation{Service: "web", Instance: "web-1", Check: c.Id,
								Status: st, Output: st.Name(), ObservedAtMs: at})
							ob.sent[c.Id] = true
						}
					}
				}
				ob.resynced = false
				// Vouch only when every active check was reported.
				asOf := now
				for _, c := range si.Checks {
					if c.Kind == "passive" {
						continue
					}
					ps := ob.probes[c.Id]
					if !ob.sent[c.Id] || len(ps) == 0 {
						asOf = 0
						break
					}
					asOf = min(asOf, ps[len(ps)-1].at+c.IntervalMs)
				}
				if len(changes) == 0 && asOf == 0 {
					continue
				}
				tx, nonce := n.batchTx(o, &types.ObservationBatch{Observations: changes, PrevNonce: ob.prev, UnchangedAsOfMs: asOf})
				ob.prev = nonce
				switch fate := rapid.IntRange(0, 9).Draw(rt, "fate"); {
				case fate == 0: // dropped
				case fate <= 6:
					pending[n.height+1] = append(pending[n.height+1], tx)
				default:
					at := n.height + 1 + int64(rapid.IntRange(1, 5).Draw(rt, "delay"))
					pending[at] = append(pending[at], tx)
				}
			}
			txs := pending[n.height+1]
			delete(pending, n.height+1)
			n.block(dt, txs...)
			// A twin, restarted now and then, computes the same hashes:
			// the derived state it rebuilds (timers, watches, lapsed
			// reports) is the one the running app kept.
			if rapid.IntRange(0, 4).Draw(rt, "restart the twin") == 0 {
				reloaded, err := app.New(twin.store)
				if err != nil {
					rt.Fatal(err)
				}
				twin.app = reloaded
			}
			twin.block(dt, txs...)
			if !bytes.Equal(n.store.Hash(), twin.store.Hash()) {
				rt.Fatalf("height %d: the restarted twin's app hash differs", n.height)
			}
			// Resync: the floor rose, so report everything again.
			for _, o := range observerNames {
				ob := obs[o]
				st := stampOf(t, n, o)
				// It notices late now and then (its node is slow, say),
				// so that a second break can come before the records of
				// the first are sent again.
				if st != nil && st.FloorHeight > ob.floor && rapid.Bool().Draw(rt, "notice the floor") {
					ob.floor, ob.resynced = st.FloorHeight, true
					clear(ob.sent)
				}
			}
			for _, cv := range n.views() {
				for _, r := range cv.Reports {
					if r.Record == nil || r.AsOfMs <= r.Record.TimeMs {
						continue
					}
					for _, p := range obs[r.Observer.Name].probes[cv.Check.Id] {
						if p.at >= r.Record.ObservedAtMs && p.at <= r.AsOfMs && p.st != r.Record.Status {
							rt.Fatalf("height %d, %s by %s: the record says %s as of %d (vouched), but the observer's probe at %d saw %s",
								n.height, cv.Check.Id, r.Observer.Name, r.Record.Status.Name(), r.AsOfMs, p.at, p.st.Name())
						}
					}
				}
			}
		}
	})
}

// stampOf reads an observer's committed stamp (nil: none).
func stampOf(t *testing.T, n *net, name string) *types.ObserverStamp {
	t.Helper()
	q, err := app.NewQuery(n.reader())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range q.Observers() {
		if o.Name == name {
			st, err := q.Stamp(o.Id)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	}
	t.Fatalf("no observer %s", name)
	return nil
}
