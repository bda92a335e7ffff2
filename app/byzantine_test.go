package app_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// Regression tests for the holes of issue 13 that live in the state machine:
// each failed on the code before it.

// TestScopeIsNotABackDoor: a check's quorum is never below a third of all
// the observers' weight, so a coalition holding less than that decides no
// verdict, however the check's scope is drawn; a scope that could never
// reach its quorum, or whose honest weight would not reach it were such a
// coalition inside it (issue 22: one of dc2's two observers hid an outage),
// is refused at registration, saying why; and in a safe scope a quarter of
// everyone lying neither decides nor hides anything.
func TestScopeIsNotABackDoor(t *testing.T) {
	scoped := func(id string, dcs ...string) types.ServiceInstance {
		si := webInstance(0)
		si.Id = id
		si.Checks[0].Datacenters = dcs
		return si
	}
	solo := newNetWith(t, observersIn(1, 6)) // one observer of 7 owns dc1
	codes, _ := solo.block(1000, solo.tx("root", register(scoped("web-1", "dc1"))))
	if codes[0] != app.CodeInvalid {
		t.Fatalf("a scope of 1 of 7 observers registered (code %v): that observer alone would decide it", codes[0])
	}
	if _, err := solo.app.CheckTx(solo.tx("root", register(scoped("web-1", "dc1")))); err == nil || !strings.Contains(err.Error(), "a verdict needs 3") {
		t.Fatalf("CheckTx of an unreachable scope: %v", err)
	}

	// 4 and 8 of 12: both reachable (quorums 4 and 6), but three observers,
	// a quarter of everyone, inside either leave too little honest weight.
	split := newNetWith(t, observersIn(4, 8))
	for _, dc := range []string{"dc1", "dc2"} {
		if _, err := split.app.CheckTx(split.tx("root", register(scoped("web-1", dc)))); err == nil || !strings.Contains(err.Error(), "could hide an outage") {
			t.Fatalf("CheckTx of a scope of %s, unsafe against 3 of 12: %v", dc, err)
		}
	}
	if _, err := split.app.CheckTx(split.tx("root", register(scoped("web-1", "dc1", "dc2")))); err != nil {
		t.Fatalf("a scope of everyone: %v", err)
	}

	// dc2 holds 10 of 12: W 10, Q 7, and 10 - 3 reaches it.
	n := newNetWith(t, observersIn(2, 10))
	if codes, _ := n.block(1000, n.tx("root", register(scoped("web-1", "dc2")))); codes[0] != app.CodeOK {
		t.Fatalf("register a check scoped to dc2 (10 of 12): code %v", codes[0])
	}
	liars := []string{"dc2-0", "dc2-1", "dc2-2"}
	for range 2 {
		var txs [][]byte
		for _, l := range liars {
			txs = append(txs, n.tx(l, observe(obsOf(C))))
		}
		if _, alerts := n.block(1000, txs...); len(alerts) != 0 {
			t.Fatalf("three liars of twelve alone raised %v", alerts)
		}
	}
	if v := n.check().State.Verdict; v != types.STATUS_STALE {
		t.Fatalf("verdict %s from three liars alone, want stale", v.Name())
	}
	for range app.SuspectMinReports + 2 {
		var txs [][]byte
		for _, l := range liars {
			txs = append(txs, n.tx(l, observe(obsOf(C))))
		}
		for i := 3; i < 10; i++ {
			txs = append(txs, n.tx(fmt.Sprintf("dc2-%d", i), observe(obsOf(P))))
		}
		_, alerts := n.block(1000, txs...)
		for _, al := range alerts {
			if al.Kind == app.AlertStateChange && al.To != P {
				t.Fatalf("three of twelve observers raised %s %s→%s", al.Kind, al.From.Name(), al.To.Name())
			}
		}
	}
	if cv := n.check(); cv.State.Verdict != P || cv.State.Hard != P {
		t.Fatalf("verdict %s hard %s, want passing: seven honest of the scope see it", cv.State.Verdict.Name(), cv.State.Hard.Name())
	}
	for i := 3; i < 10; i++ {
		if st := n.standings()[fmt.Sprintf("dc2-%d", i)]; st.Suspect || st.Disagreed != 0 {
			t.Fatalf("an honest observer of the scope: %+v", st)
		}
	}
}

// TestRefusedTxUsesItsNonce: a deregistration refused because the instance
// is not registered yet cannot come true later, after the registration
// that a proposer put behind it.
func TestRefusedTxUsesItsNonce(t *testing.T) {
	n := newNet(t)
	reg := n.tx("root", register(webInstance(0)))
	dereg := n.tx("root", types.Msg{Sum: &types.Msg_Deregister{Deregister: &types.DeregisterService{Name: "web", Id: "web-1"}}})
	codes, _ := n.block(1000, dereg, reg) // reordered by the proposer
	if codes[0] != app.CodeNotFound || codes[1] != app.CodeOK {
		t.Fatalf("codes %v, want not_found then ok (the earlier nonce still executes)", codes)
	}
	for range 50 {
		n.block(1000)
	}
	if codes, _ := n.block(1000, dereg); codes[0] != app.CodeReplay {
		t.Fatalf("the refused deregistration, 50 blocks later: code %v, want replay", codes[0])
	}
	if _, err := n.query().Service("web"); err != nil {
		t.Fatalf("web/web-1 is gone: %v", err)
	}
}

// TestReorderedBatchesBothCount: a proposer that puts an observer's later
// batch before its earlier one voids neither; for one check the report
// observed last stands.
func TestReorderedBatchesBothCount(t *testing.T) {
	n := newNet(t)
	si := webInstance(0)
	si.Checks = append(si.Checks, si.Checks[0])
	si.Checks[1].Id = "http2"
	n.block(1000, n.tx("root", register(si)))
	at := func(check string, st types.Status, ms int64) types.Observation {
		o := obsOf(st)
		o.Check, o.ObservedAtMs = check, n.now+ms
		return o
	}
	first := n.tx("o1", observe(at("http", C, 100), at("http2", C, 100)))
	second := n.tx("o1", observe(at("http2", P, 200)))
	codes, _ := n.block(1000, second, first)
	if codes[0] != app.CodeOK || codes[1] != app.CodeOK {
		t.Fatalf("codes %v: a later nonce voided an earlier one", codes)
	}
	views := map[string]types.Status{}
	iv, err := n.query().Service("web")
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range iv[0].Checks {
		for _, r := range cv.Reports {
			if r.Record != nil {
				views[cv.Check.Id] = r.Record.Status
			}
		}
	}
	if views["http"] != C || views["http2"] != P {
		t.Fatalf("o1's reports %v: want http critical (from the earlier batch) and http2 passing (observed last)", views)
	}
	// The same tx again is refused.
	if codes, _ := n.block(1000, first); codes[0] != app.CodeReplay {
		t.Fatalf("the earlier batch again: code %v, want replay", codes[0])
	}
}

// TestEnvelopeIsCanonical: a re-encoded copy of a signed envelope (a field
// appended, a field repeated) is refused as malformed, and the original
// still executes afterwards.
func TestEnvelopeIsCanonical(t *testing.T) {
	n := newNet(t)
	tx := n.tx("root", register(webInstance(0)))
	appended := append(append([]byte{}, tx...), 0x78, 0x01) // field 15, varint 1
	var env types.Envelope
	if err := env.Unmarshal(tx); err != nil {
		t.Fatal(err)
	}
	sig, _ := (&types.Envelope{Signature: env.Signature}).Marshal()
	repeated := append(append([]byte{}, tx...), sig...) // signature twice: last one wins
	for name, copy := range map[string][]byte{"appended": appended, "repeated": repeated} {
		if _, err := types.DecodeTx(chainID, copy); err != types.ErrNotCanonical {
			t.Fatalf("%s copy decodes: %v", name, err)
		}
		if _, err := n.app.CheckTx(copy); app.CodeOf(err) != app.CodeMalformed {
			t.Fatalf("CheckTx of the %s copy: %v", name, err)
		}
	}
	codes, _ := n.block(1000, appended, repeated, tx)
	if codes[0] != app.CodeMalformed || codes[1] != app.CodeMalformed || codes[2] != app.CodeOK {
		t.Fatalf("codes %v, want malformed, malformed, ok", codes)
	}
	id1, _ := types.ContentID(tx)
	id2, _ := types.ContentID(appended)
	if id1 != id2 || id1 == "" {
		t.Fatalf("content ids %q %q: a re-encoded copy carries the same signed content", id1, id2)
	}
}

// TestFreshnessFromObservationTime: a batch held back by a proposer counts
// from when the observer looked, and observation times far from the block
// time are refused.
func TestFreshnessFromObservationTime(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0)))) // ttl 3 s
	looked := n.now
	at := func(st types.Status, ms int64) types.Observation {
		o := obsOf(st)
		o.ObservedAtMs = ms
		return o
	}
	var txs [][]byte
	for _, o := range observerNames {
		txs = append(txs, n.tx(o, observe(at(C, looked))))
	}
	n.block(2500, txs...) // included 2.5 s after the observers looked
	if v := n.check().State.Verdict; v != C {
		t.Fatalf("verdict %s, want critical", v.Name())
	}
	n.block(600) // 3.1 s after they looked, but fresh when the chain last committed
	if v := n.check().State.Verdict; v != C {
		t.Fatalf("verdict %s at the block after the one 2.5 s after the observations (ttl 3 s), want critical", v.Name())
	}
	n.block(100) // the block before was 3.1 s after they looked: stale, though included 0.7 s ago
	if v := n.check().State.Verdict; v != types.STATUS_STALE {
		t.Fatalf("verdict %s 3.2 s after the observations (ttl 3 s), want stale", v.Name())
	}
	old := n.tx("o1", observe(at(C, n.now-3000)))
	future := n.tx("o1", observe(at(C, n.now+app.MaxObservationAheadMs+5000)))
	codes, _ := n.block(1, old, future)
	if codes[0] != app.CodeUnknownCheck || codes[1] != app.CodeUnknownCheck {
		t.Fatalf("codes %v for an observation older than its ttl and one from the future, want both refused (unknown_check: nothing applies)", codes)
	}
}

// TestChainHaltIsNotStaleness: when the chain does not commit for a while (a
// one-node network restarting, a network without quorum), reports that were
// fresh when it stopped stay fresh for a ttl after it resumes, so the halt
// raises no stale alert; staleness counts again after that grace.
func TestChainHaltIsNotStaleness(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0)))) // ttl 3 s
	n.reportAll(1000, P, P, P, P)
	n.wantState(P, P)
	if _, alerts := n.block(app.HaltGapMs + 15_000); len(alerts) != 0 { // 45 s without a block
		t.Fatalf("the chain's halt raised %+v", alerts)
	}
	n.wantState(P, P)
	n.block(2000)
	n.wantState(P, P) // within the grace: observers are getting their reports in
	n.block(1100)
	n.wantState(P, P) // judged at the block before, 2 s after the resumption
	_, alerts := n.block(1000)
	if v := n.check().State.Verdict; v != types.STATUS_STALE || len(alerts) != 1 || alerts[0].Kind != app.AlertStale {
		t.Fatalf("a ttl after the chain resumed without reports: verdict %s, alerts %+v; want stale and one stale alert", v.Name(), alerts)
	}
}

// TestReportGoesStaleWithAValidatorDown (issue 22 item 2): a silent
// observer's last report goes stale within its ttl plus the longest gap
// between blocks, while the gaps of a crashed validator's turns keep coming;
// before, each gap over 3 s made it fresh for another ttl, for ever.
func TestReportGoesStaleWithAValidatorDown(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0)))) // ttl 3 s
	n.reportAll(1000, P, P, P, P)
	last := n.now
	for i := 0; ; i++ {
		var fresh bool
		for _, r := range n.check().Reports {
			if r.Observer.Name == "o4" {
				fresh = r.Fresh
			}
		}
		if !fresh {
			break
		}
		if n.now-last > 3000+5500 {
			t.Fatalf("o4's report is still fresh %d ms after it was observed, with ttl 3 s and a validator down", n.now-last)
		}
		gap := []int64{1000, 1000, 1000, 5500}[i%4]
		n.reportAll(gap, P, P, P)
	}
	if v := n.check().State.Verdict; v != P {
		t.Fatalf("verdict %s with three fresh passing reports", v.Name())
	}
}

// TestNoStaleAcrossFailedRounds (issue 22): with a validator down, every
// fourth height takes a failed round (a 5 s gap with bftmon init's
// timeouts). Each observer sends its next batch when its last one commits,
// so the batch that ends such a gap was observed just after the block
// before it, more than a 3 s ttl before the block's own time. Judged at
// the block before (app.FreshAt), those reports count: the verdict stays
// passing and no stale alert is raised. Judged at the block's own time,
// every gap made the check stale.
func TestNoStaleAcrossFailedRounds(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0)))) // ttl 3 s
	n.reportAll(1000, P, P, P, P)
	n.wantState(P, P)
	for i := range 24 {
		looked := n.now + 100 // right after the last commit
		var txs [][]byte
		for _, o := range observerNames {
			ob := obsOf(P)
			ob.ObservedAtMs = looked
			txs = append(txs, n.tx(o, observe(ob)))
		}
		gap := []int64{1000, 1000, 1000, 5000}[i%4]
		codes, alerts := n.block(gap, txs...)
		for j, code := range codes {
			if code != 0 {
				t.Fatalf("height %d (gap %d ms): %s's batch, observed %d ms before the block, refused with code %d", n.height, gap, observerNames[j], n.now-looked, code)
			}
		}
		if v := n.check().State.Verdict; v != P || len(alerts) != 0 {
			t.Fatalf("height %d (gap %d ms): verdict %s, alerts %+v; want passing and none", n.height, gap, v.Name(), alerts)
		}
	}
}

// TestReportsFreshAfterALongGap: after a gap between blocks longer than
// app.GapMs, blocks that come fast again judge reports at the gap's start
// for app.GapGraceMs, so the reports committed before the gap do not go
// stale before the observers can get new ones in; after that they do.
func TestReportsFreshAfterALongGap(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0)))) // ttl 3 s
	var txs [][]byte
	for _, o := range observerNames {
		txs = append(txs, n.tx(o, observe(obsOf(types.STATUS_CRITICAL))))
	}
	n.block(100, txs...)
	n.block(2000) // the reports are 2 s old when the chain stops
	n.block(app.GapMs + 1000)
	elapsed := int64(0)
	for elapsed+50 < app.GapGraceMs {
		n.block(50)
		elapsed += 50
		if v := n.check().State.Verdict; v != types.STATUS_CRITICAL {
			t.Fatalf("verdict %s %d ms after a %d ms gap, want critical (judged at the gap's start for %d ms)", v.Name(), elapsed, app.GapMs+1000, app.GapGraceMs)
		}
	}
	n.block(100)
	n.block(100)
	if v := n.check().State.Verdict; v != types.STATUS_STALE {
		t.Fatalf("verdict %s %d ms after the gap, want stale", v.Name(), elapsed+200)
	}
}
