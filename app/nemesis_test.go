package app_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// nemesisKeys are the keys the nemesis writes and watches: the lock, a
// service's config, the coalition operator's own keys and others.
var nemesisKeys = []string{"locks/web", "services/web/config", "services/web/leader", "services/search/x", "services/team-web/x", "team-x/cfg", "s/x", "config/global"}

// nemesisHaltMs is the gap between blocks that the guarantees call a halt
// (docs/GUARANTEES.md): shorter gaps, however many, are rounds that failed
// while the chain kept committing. It is the model's, not read from the
// app, so that an app that took failed rounds for halts fails S1.
const nemesisHaltMs = 30_000

// TestNemesis is the app-level adversary of docs/GUARANTEES.md: random
// histories over the pure app in which a coalition below a third of the
// observer weight (one of four equal observers) lies, inverts, stays
// silent, claims old or future times, replays its transactions and
// equivocates (two bodies under one nonce), and owns an operator key of a
// random narrow scope ("team-", "s", "services/"...) that writes, deletes and tries to take locks
// everywhere; the proposer censors honest batches and lets them in late,
// reorders every block, and blocks come late (rounds that fail, gaps of
// 2–6 s, as with a crashed validator) or after a halt (over HaltGapMs).
// Honest sessions are created, renewed or left to die, and take a lock.
// At every height it checks each row of GUARANTEES.md that the app can:
//
//   - V1 no false verdict: a decided verdict or hard state is what the
//     honest see (or warning for critical);
//   - V2 no hidden outage: with every honest observer fresh, the verdict
//     is the truth;
//   - V3 honest observers are never counted as disagreeing;
//   - E1 evidence of equivocation is recorded only against the observer
//     that signed two bodies under one nonce, which is then suspect;
//   - F1 a report is fresh only while its ttl has not passed at the block
//     before (or within a ttl of the end of a halt it straddled);
//   - U1 counted from a vouch, at most from the latest vouch its observer
//     signed less the check's interval (honest observers vouch for what
//     they reported; the liar vouches for anything, after any nonce; the
//     censored batches make vouches that do not follow on);
//   - S1 a session nobody renews ends by its TTL from its last renewal or
//     the end of the last halt, whichever is later;
//   - L1 a lock is held only by a live session, never by one of an
//     instance whose hard state is critical;
//   - K1 the coalition's operator changes no key outside its scope;
//   - Q1 no operator (the coalition's writes long values to reach its
//     quotas) keeps more than the genesis quotas, and every operator's
//     stored usage is the sum over the entries it wrote and the instances
//     it registered;
//   - A2 a receipt whose acknowledgement covers a forged body (the
//     receiver's own signature over another digest) is refused, and an
//     alert is settled for a receiver only with an honest receipt (the
//     coalition's receipts, with or without acks, never settle it), and
//     always once an honest receipt carries the receiver's ack;
//   - D1 a second app fed the same blocks has the same app hash.
//
// Run longer with -rapid.checks=N (CI runs the default 100).
func TestNemesis(t *testing.T) {
	heights, recorded, overQuota, forgedAcks, quietBlocks, extended := 0, 0, 0, 0, 0, 0
	rapid.Check(t, func(rt *rapid.T) {
		// The coalition's operator key and its scope.
		scope := rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"team-", "s", "se", "w", "services/"}), 1, 2, rapid.ID[string]).Draw(rt, "coalition scope")
		g := genesis()
		g.Operators[1].Prefixes = scope
		g.Quotas = &app.GenesisQuotas{KVBytes: ptr(80), KVKeys: ptr(4)}
		n, twin := newNetWith(t, g), newNetWith(t, g)
		liar := rapid.IntRange(0, len(observerNames)-1).Draw(rt, "liar")
		behave := rapid.IntRange(0, behaviours).Draw(rt, "behaviour") // behaviours: equivocate
		truth := map[string]types.Status{}
		const ttl = 3000
		// exec runs one block on both apps and compares their hashes (D1).
		exec := func(dt int64, txs [][]byte) []error {
			if rapid.IntRange(0, 7).Draw(rt, "restart the twin") == 0 {
				// A restarted node rebuilds its derived state (timers,
				// watches, lapsed reports) from the stored state: it must
				// go on computing the same hashes.
				reloaded, err := app.New(twin.store)
				if err != nil {
					rt.Fatal(err)
				}
				twin.app = reloaded
			}
			errs := n.run(dt, txs...)
			twin.run(dt, txs...)
			if a, b := n.app.Height(), twin.app.Height(); a != b {
				rt.Fatalf("heights %d and %d", a, b)
			}
			if !bytes.Equal(n.store.Hash(), twin.store.Hash()) {
				rt.Fatalf("D1: height %d: app hashes differ", n.height)
			}
			return errs
		}
		var reg [][]byte
		for i, id := range []string{"web-1", "web-2"} {
			si := webInstance(rapid.SampledFrom([]int64{0, 2000}).Draw(rt, "confirm"))
			si.Id, si.Datacenter = id, fmt.Sprintf("dc%d", i+1)
			reg = append(reg, n.tx("root", register(si)))
			truth[id] = types.Status(rapid.IntRange(1, 4).Draw(rt, "truth"))
		}
		reg = append(reg, n.tx("root", registerReceiver("pager", pubOf("rk-pager"))))
		if errs := exec(1000, reg); errs[0] != nil || errs[1] != nil || errs[2] != nil {
			rt.Fatalf("register: %v", errs)
		}
		// Alerts and their receipts (A2): the committed alerts, and what
		// the honest committed for each.
		alerts := map[string]types.Alert{}
		var alertIDs []string
		honestReceipts, honestAcked := map[string]int{}, map[string]bool{}

		type sess struct {
			id      string
			ttl     int64
			renewed int64 // block time of its last renewal (or creation)
			renew   bool  // its holder keeps renewing it
		}
		var sessions []*sess
		var held [][]byte        // honest batches the proposer holds back
		var own [][]byte         // the liar's committed txs, to replay
		var haltEnd int64        // block time of the last block after a halt
		var evidence [][2][]byte // equivocating pairs, not yet submitted
		prev := n.now            // the previous block's time
		lastRecord := n.now      // the time of the last block that changed the state
		var gapFrom, gapTo int64 // the last gap over app.GapMs between recorded blocks
		// Vouches: each observer's last batch nonce, the latest time it
		// vouched for (capped at the block time, as the app caps it), the
		// checks it reported since its stamp's floor last rose, and that
		// floor.
		lastNonce, vouched := map[string]uint64{}, map[string]int64{}
		reported, floors := map[string]map[string]bool{}, map[string]int64{}
		blocks := rapid.IntRange(10, 40).Draw(rt, "blocks")
		lastBlock := blocks - 1
		for blk := range blocks {
			if rapid.IntRange(0, 9).Draw(rt, "quick empty block") == 0 {
				// A block with no transaction soon after the last: if no
				// timer fell due it changes nothing, not even the
				// bookkeeping (genesis quiet_ms), and the app hash stays.
				h := n.store.Hash()
				exec(rapid.Int64Range(50, app.DefaultQuietMs-100).Draw(rt, "quick"), nil)
				heights++
				if bytes.Equal(h, n.store.Hash()) {
					quietBlocks++
				} else {
					lastRecord = n.now
				}
			}
			dt := int64(1000)
			switch rapid.IntRange(0, 19).Draw(rt, "gap") {
			case 0, 1, 2, 3:
				dt = rapid.Int64Range(2000, 6000).Draw(rt, "failed rounds")
			case 4:
				dt = nemesisHaltMs + rapid.Int64Range(1, 15000).Draw(rt, "halt")
			}
			now := n.now + dt
			var txs [][]byte
			for i, name := range observerNames {
				var obs []types.Observation
				if reported[name] == nil {
					reported[name] = map[string]bool{}
				}
				// An honest observer vouches for what it reported before
				// instead of reporting it again; the liar vouches for
				// anything, as of any time, after any batch.
				var vouch int64
				prevNonce := lastNonce[name]
				if rapid.Bool().Draw(rt, "vouch") {
					vouch = prev + rapid.Int64Range(1, 900).Draw(rt, "vouch looked")
					if i == liar {
						vouch = now + rapid.Int64Range(-60000, 60000).Draw(rt, "liar's vouch")
						if rapid.Bool().Draw(rt, "liar's prev nonce") {
							prevNonce = rapid.Uint64Range(0, n.nonce[name]+2).Draw(rt, "prev nonce")
						}
					}
					vouched[name] = max(vouched[name], min(vouch, now))
				}
				for _, id := range []string{"web-1", "web-2"} {
					if vouch > 0 && i != liar && reported[name][id] {
						continue // unchanged: the vouch covers it
					}
					reported[name][id] = true
					o := obsOf(truth[id])
					o.Instance = id
					o.ObservedAtMs = prev + rapid.Int64Range(1, 900).Draw(rt, "looked")
					if i == liar {
						switch behave {
						case behaveLie:
							o.Status = types.Status(rapid.IntRange(1, 4).Draw(rt, "lie"))
						case behaveOld:
							o.Status, o.ObservedAtMs = opposite(truth[id]), now-rapid.Int64Range(2000, 60000).Draw(rt, "old")
						case behaveFuture:
							o.Status, o.ObservedAtMs = opposite(truth[id]), now+rapid.Int64Range(0, 120000).Draw(rt, "ahead")
						case behaveSilent:
							continue
						default:
							o.Status = opposite(truth[id])
						}
						o.Output = o.Status.Name()
					}
					obs = append(obs, o)
				}
				if len(obs) == 0 && vouch == 0 {
					continue
				}
				tx := n.tx(name, types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs, PrevNonce: prevNonce, UnchangedAsOfMs: vouch}}})
				lastNonce[name] = n.nonce[name]
				switch {
				case i != liar && rapid.IntRange(0, 3).Draw(rt, "censor") == 0:
					held = append(held, tx)
				case i == liar && behave == behaviours:
					// Equivocation: a second body under the same nonce.
					other := slices.Clone(obs)
					for k := range other {
						other[k].Status = types.Status(rapid.IntRange(1, 4).Draw(rt, "equivocal"))
					}
					bz, err := types.SignTx(chainID, key(name), n.nonce[name], observe(other...))
					if err != nil {
						rt.Fatal(err)
					}
					txs = append(txs, tx, bz)
					evidence = append(evidence, [2][]byte{tx, bz})
				case i == liar && behave == behaveReplay && len(own) > 0:
					txs = append(txs, tx, rapid.SampledFrom(own).Draw(rt, "replayed"))
					own = append(own, tx)
				default:
					txs = append(txs, tx)
					if i == liar {
						own = append(own, tx)
					}
				}
			}
			// Anyone who saw an equivocating pair may submit it, now or later.
			var kept [][2][]byte
			for _, ev := range evidence {
				if rapid.Bool().Draw(rt, "submit evidence") {
					txs = append(txs, n.tx(observerNames[(liar+1)%len(observerNames)], equivocation(ev[0], ev[1])))
				} else {
					kept = append(kept, ev)
				}
			}
			evidence = kept
			if len(held) > 0 && rapid.Bool().Draw(rt, "release") {
				txs, held = append(txs, held...), nil
			}
			// Honest sessions: a new one now and then, renewals, a lock.
			type pendingSess struct {
				tx []byte
				s  *sess
			}
			var created []pendingSess
			if len(sessions) < 3 && rapid.IntRange(0, 3).Draw(rt, "new session") == 0 {
				inst := rapid.SampledFrom([]string{"web-1", "web-2"}).Draw(rt, "session instance")
				s := &sess{ttl: rapid.Int64Range(10, 20).Draw(rt, "session ttl s") * 1000, renew: rapid.Bool().Draw(rt, "renewed")}
				tx := n.tx("root", sessionCreate("web", inst, s.ttl))
				s.id = app.SessionID(tx)
				created = append(created, pendingSess{tx, s})
				txs = append(txs, tx)
			}
			renewals := map[int]*sess{}
			for _, s := range sessions {
				if s.renew && rapid.Bool().Draw(rt, "renew now") {
					renewals[len(txs)] = s
					txs = append(txs, n.tx("root", sessionRenew(s.id)))
				}
			}
			if len(sessions) > 0 && rapid.IntRange(0, 2).Draw(rt, "acquire") == 0 {
				s := rapid.SampledFrom(sessions).Draw(rt, "acquirer")
				txs = append(txs, n.tx("root", kvAcquire("locks/web", "root", s.id)))
			}
			// The coalition's operator writes everywhere it can think of.
			for range rapid.IntRange(0, 2).Draw(rt, "coalition writes") {
				k := rapid.SampledFrom(nemesisKeys).Draw(rt, "coalition key")
				switch rapid.IntRange(0, 4).Draw(rt, "coalition verb") {
				case 0:
					txs = append(txs, n.tx("team", kvSet(k, "team")))
				case 4: // a long value, to reach its quota
					txs = append(txs, n.tx("team", kvSet(k, "team"+strings.Repeat("x", rapid.IntRange(10, 60).Draw(rt, "long value")))))
				case 1:
					txs = append(txs, n.tx("team", kvDelete(k, rapid.Bool().Draw(rt, "tree"))))
				case 2:
					if len(sessions) > 0 {
						txs = append(txs, n.tx("team", kvAcquire(k, "team", rapid.SampledFrom(sessions).Draw(rt, "stolen session").id)))
					}
				case 3:
					txs = append(txs, n.tx("team", kvDelete(rapid.SampledFrom([]string{"", "s", "services/", "services/w", "t"}).Draw(rt, "tree prefix"), true)))
				}
			}
			// Receipts for pager. The liar forges them: without an ack,
			// with the receiver's real acknowledgement of a body it forged
			// (a receiver that checks nothing signed it), or with an ack
			// under its own key. The honest now and then commit theirs,
			// acknowledged or not.
			type pendingReceipt struct {
				alert  string
				honest bool
				acked  bool // honest: with the receiver's ack of the committed body
				forged bool // the liar's: an ack of a forged body
			}
			receipts := map[int]pendingReceipt{}
			if len(alertIDs) > 0 {
				for range rapid.IntRange(0, 2).Draw(rt, "forged receipts") {
					id := rapid.SampledFrom(alertIDs).Draw(rt, "forged receipt of")
					var ack []byte
					pr := pendingReceipt{alert: id}
					switch rapid.IntRange(0, 2).Draw(rt, "forged ack") {
					case 1:
						f := alerts[id]
						f.To, f.Views = opposite(f.To), nil
						ack, pr.forged = ackBy("rk-pager", id, "pager", digestOf(rt, f)), true
					case 2:
						ack = ackBy(observerNames[liar], id, "pager", digestOf(rt, alerts[id]))
					}
					receipts[len(txs)] = pr
					txs = append(txs, n.tx(observerNames[liar], ackedReceipt(id, "pager", ack)))
				}
				if rapid.IntRange(0, 3).Draw(rt, "honest receipt") == 0 {
					id := rapid.SampledFrom(alertIDs).Draw(rt, "honest receipt of")
					pr := pendingReceipt{alert: id, honest: true, acked: rapid.Bool().Draw(rt, "honest ack")}
					var ack []byte
					if pr.acked {
						ack = ackBy("rk-pager", id, "pager", digestOf(rt, alerts[id]))
					}
					receipts[len(txs)] = pr
					txs = append(txs, n.tx(observerNames[(liar+1+rapid.IntRange(0, 2).Draw(rt, "honest deliverer"))%len(observerNames)], ackedReceipt(id, "pager", ack)))
				}
			}
			if rapid.IntRange(0, 4).Draw(rt, "root write") == 0 {
				txs = append(txs, n.tx("root", kvSet(rapid.SampledFrom(nemesisKeys[1:]).Draw(rt, "root key"), "root")))
			}
			// The proposer orders the block as it likes.
			perm := rapid.Permutation(seq(len(txs))).Draw(rt, "reorder")
			ordered := make([][]byte, len(txs))
			at := make([]int, len(txs)) // original index → position
			for pos, i := range perm {
				ordered[pos], at[i] = txs[i], pos
			}
			before := map[string]string{}
			for _, k := range nemesisKeys {
				if e, ok := n.entry(k); ok {
					before[k] = string(e.Value)
				}
			}
			if now-lastRecord > app.GapMs {
				gapFrom, gapTo = lastRecord, now
			}
			errs := exec(dt, ordered)
			lastRecord = now // a block with transactions is always recorded
			heights++
			for _, err := range errs {
				if app.CodeOf(err) == app.CodeQuota {
					overQuota++
				}
			}
			// Q1.
			usageOK(rt, n.reader(), n.app.Quotas(), fmt.Sprintf("Q1: block %d", blk))
			if dt > nemesisHaltMs {
				haltEnd = now
			}
			for _, c := range created {
				if errs[at[slices.IndexFunc(txs, func(b []byte) bool { return bytes.Equal(b, c.tx) })]] == nil {
					c.s.renewed = now
					sessions = append(sessions, c.s)
				}
			}
			for i, s := range renewals {
				if errs[at[i]] == nil {
					s.renewed = now
				}
			}
			q := n.query()
			// An observer whose stamp's floor rose reports everything again.
			for _, o := range q.Observers() {
				st, err := q.Stamp(o.Id)
				if err != nil {
					rt.Fatal(err)
				}
				if st != nil && st.FloorHeight > floors[o.Name] {
					floors[o.Name] = st.FloorHeight
					clear(reported[o.Name])
				}
			}

			// A2.
			for i, pr := range receipts {
				err := errs[at[i]]
				switch {
				case pr.forged && err == nil:
					rt.Fatalf("A2: block %d: a receipt of %s acknowledging a forged body was committed", blk, pr.alert)
				case pr.forged:
					forgedAcks++
				case pr.honest && err == nil:
					honestReceipts[pr.alert]++
					honestAcked[pr.alert] = honestAcked[pr.alert] || pr.acked
				}
			}
			for _, id := range alertIDs {
				st, err := q.Settled(id, "pager")
				if err != nil {
					rt.Fatal(err)
				}
				if st.Settled && honestReceipts[id] == 0 {
					rt.Fatalf("A2: block %d: alert %s is settled for pager with no honest receipt: %+v", blk, id, st)
				}
				if honestAcked[id] && !st.Settled {
					rt.Fatalf("A2: block %d: alert %s has an honest acknowledged receipt, yet is not settled: %+v", blk, id, st)
				}
			}
			all, err := q.Alerts(0, 1<<20)
			if err != nil {
				rt.Fatal(err)
			}
			for _, al := range all {
				if _, ok := alerts[al.Id]; !ok {
					alerts[al.Id] = al
					alertIDs = append(alertIDs, al.Id)
				}
			}

			// V1, V2, F1 and V3.
			for _, id := range []string{"web-1", "web-2"} {
				iv, err := q.Service("web")
				if err != nil {
					rt.Fatal(err)
				}
				var cv app.CheckView
				for _, x := range iv {
					if x.Instance.Id == id {
						cv = x.Checks[0]
					}
				}
				honestFresh := 0
				for _, r := range cv.Reports {
					if !r.Fresh {
						continue
					}
					start := r.Record.TimeMs
					if r.Record.ObservedAtMs > 0 {
						start = min(start, r.Record.ObservedAtMs)
					}
					// U1: a vouch counts a report as observed at most at
					// the latest time vouched for, less the check's interval.
					start = max(start, vouched[r.Observer.Name]-cv.Check.IntervalMs)
					if r.AsOfMs > r.Record.TimeMs {
						extended++
					}
					judged := prev // at the block before, or a gap's start for app.GapGraceMs after it
					if gapTo > 0 && now < gapTo+app.GapGraceMs {
						judged = min(judged, gapFrom)
					}
					if start+ttl <= judged && !(haltEnd > start && judged < haltEnd+ttl) {
						rt.Fatalf("F1/U1: block %d: %s's report on %s, fresh from %d (its own time, or its latest vouch less the interval), counts at a block judged at %d (previous block %d, last gap %d..%d, ttl %d, last halt ended %d)", blk, r.Observer.Name, id, start, judged, prev, gapFrom, gapTo, ttl, haltEnd)
					}
					if r.Observer.Name != observerNames[liar] {
						honestFresh++
					}
				}
				v := cv.State.Verdict
				if decided(v) && !consistent(v, truth[id]) {
					rt.Fatalf("V1: block %d: %s is %s, the honest see %s (liar %s, behaviour %d)", blk, id, v.Name(), truth[id].Name(), observerNames[liar], behave)
				}
				if h := cv.State.Hard; decided(h) && !consistent(h, truth[id]) {
					rt.Fatalf("V1: block %d: hard state of %s is %s, the honest see %s", blk, id, h.Name(), truth[id].Name())
				}
				if honestFresh == len(observerNames)-1 && v != truth[id] {
					rt.Fatalf("V2: block %d: every honest observer of %s is fresh and sees %s, the verdict is %s", blk, id, truth[id].Name(), v.Name())
				}
			}
			evs, err := q.Equivocations()
			if err != nil {
				rt.Fatal(err)
			}
			liarID := ""
			for _, s := range mustStandings(rt, q) {
				if s.Observer.Name != observerNames[liar] && (s.Disagreed > 0 || s.Suspect) {
					rt.Fatalf("V3: block %d: honest %s counted as disagreeing: %+v", blk, s.Observer.Name, s)
				}
				if s.Observer.Name == observerNames[liar] {
					liarID = s.Observer.Id
					if len(evs) > 0 && !s.Suspect {
						rt.Fatalf("E1: block %d: the liar's equivocation is recorded, yet it is not suspect", blk)
					}
				}
			}
			for _, e := range evs {
				if e.Observer != liarID {
					rt.Fatalf("E1: block %d: equivocation recorded against %s, which signed one body per nonce", blk, e.Observer)
				}
			}
			if len(evs) > 0 && blk == lastBlock {
				recorded++
			}
			// S1 and L1.
			live, err := q.Sessions()
			if err != nil {
				rt.Fatal(err)
			}
			alive := map[string]types.Session{}
			for _, s := range live {
				alive[s.Id] = s
			}
			for _, s := range sessions {
				if _, ok := alive[s.id]; ok && now >= max(s.renewed, haltEnd)+s.ttl {
					rt.Fatalf("S1: block %d: session %s (ttl %d) alive at block time %d, last renewed at %d, last halt ended %d", blk, s.id, s.ttl, now, s.renewed, haltEnd)
				}
			}
			if h := n.holder("locks/web"); h != "" {
				s, ok := alive[h]
				if !ok {
					rt.Fatalf("L1: block %d: the lock is held by session %s, which is not alive", blk, h)
				}
				iv, _ := q.Service("web")
				for _, x := range iv {
					if x.Instance.Id == s.Instance && x.Checks[0].State.Hard == types.STATUS_CRITICAL {
						rt.Fatalf("L1: block %d: the lock is held by a session of %s, whose hard state is critical", blk, s.Instance)
					}
				}
			}
			// K1.
			for _, k := range nemesisKeys {
				e, ok := n.entry(k)
				now := ""
				if ok {
					now = string(e.Value)
				}
				if kvCovers(scope, k) || now == before[k] {
					continue
				}
				if strings.HasPrefix(now, "team") || !ok { // the honest delete nothing here
					rt.Fatalf("K1: block %d: key %s, outside the coalition's scope, went from %q to %q", blk, k, before[k], now)
				}
			}
			prev = now
		}
	})
	t.Logf("%d heights of adversarial history checked (%d quick empty blocks left the state as it was); %d histories ended with an equivocation on record; %d writes refused past a quota; %d receipts acknowledging forged bodies refused; %d fresh reports counted from a vouch", heights, quietBlocks, recorded, overQuota, forgedAcks, extended)
	if extended == 0 && !testing.Short() {
		t.Error("no fresh report counted from a vouch: vouches were not exercised")
	}
	if quietBlocks == 0 && !testing.Short() {
		t.Error("no block was quiet: quiet_ms was not exercised")
	}
	if forgedAcks == 0 && !testing.Short() {
		t.Error("no receipt acknowledging a forged body was tried: A2 was not exercised")
	}
	if overQuota == 0 && !testing.Short() {
		t.Error("no write was refused past a quota: Q1 was not exercised")
	}
	if recorded == 0 && !testing.Short() {
		t.Error("no history recorded an equivocation: the evidence path was not exercised")
	}
}
