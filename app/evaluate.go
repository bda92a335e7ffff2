package app

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/app/verdict"
)

// Alert kinds.
const (
	AlertStateChange = "state_change"
	AlertDisputed    = "disputed"
	AlertStale       = "stale"
)

// splitRef splits "service/instance/check".
func splitRef(ref string) (service, instance, check string) {
	parts := strings.SplitN(ref, "/", 3)
	if len(parts) != 3 {
		return "", "", ""
	}
	return parts[0], parts[1], parts[2]
}

// reports gathers the latest report of every observer in the check's scope,
// sorted by observer id, with freshness at block time now (FreshAt).
func (a *App) reports(r Reader, ref string, c *types.Check, now int64) ([]ObserverReport, []verdict.Report, error) {
	var out []ObserverReport
	var vr []verdict.Report
	for i := range a.observers {
		o := &a.observers[i]
		if !InScope(c, o) {
			continue
		}
		rep := ObserverReport{Observer: *o}
		bz, err := r.Get(recordKey(ref, o.Id))
		if err != nil {
			return nil, nil, err
		}
		if bz != nil {
			rec := new(types.ObservationRecord)
			if err := rec.Unmarshal(bz); err != nil {
				return nil, nil, err
			}
			st, err := a.stamp(r, o.Id)
			if err != nil {
				return nil, nil, err
			}
			rep.Record, rep.AsOfMs = rec, observedAt(rec, st, c)
			rep.Fresh = now < a.expiry(rep.AsOfMs, c)
		}
		out = append(out, rep)
		st := types.STATUS_NONE
		if rep.Record != nil {
			st = rep.Record.Status
		}
		vr = append(vr, verdict.Report{Weight: o.Weight, Status: st, Fresh: rep.Fresh})
	}
	return out, vr, nil
}

// FreshAt is the block time at which a block judges reports fresh: the
// time of the block before it. A report counts at a block if it was fresh
// when the chain last committed, so a gap between two blocks — rounds that
// failed because a validator crashed, proposers that time out — does not
// age the reports the observers could not get in meanwhile: each observer
// sends its next batch when its last one commits, and a batch observed just
// before a 5 s gap reached the chain with every 3 s report in it already too
// old, so that with one of four validators down every check of a 3 s ttl
// was refused its reports and went stale (and alerted so) on every turn of
// the crashed validator (TestNoStaleAcrossFailedRounds). A report thus goes stale at the first block after the one
// whose time passes its expiry: within ttl plus one block gap of when it
// was observed, and a gap longer than HaltGapMs is a halt (expiry).
//
// After a gap longer than GapMs, and for GapGraceMs after it ended, reports
// are judged at the gap's start instead: when blocks come fast again (a
// write-driven network makes one every few tens of milliseconds), one block
// is not long enough for the observers to get in the reports they probed
// during the gap, and the reports they had committed before it would go
// stale at the second block after it (the e2e test's dc2 cut off from dc1:
// a stale alert 4 blocks after the heal). So a report goes stale within
// ttl plus one gap between blocks plus GapGraceMs of when it was observed.
func FreshAt(m *types.Meta) int64 {
	at := m.TimeMs
	if m.PrevTimeMs > 0 {
		at = m.PrevTimeMs
	}
	if m.GapToMs > 0 && m.TimeMs < m.GapToMs+GapGraceMs {
		at = min(at, m.GapFromMs)
	}
	return at
}

// GapMs is how long a gap between blocks must be for reports to be judged
// at its start for GapGraceMs after it (FreshAt): longer than the rounds a
// crashed validator makes fail with the lan profile (about a second each),
// far shorter than a halt (HaltGapMs). Shorter gaps keep the one block of
// grace they always had: judged at the block before.
const GapMs = 5000

// GapGraceMs is how long after a gap reports are judged at its start: two
// observer flushes (1 s each by default) and the block that commits them.
const GapGraceMs = 3000

// expiry is the block time at which a report observed at asOf (observedAt)
// stops being fresh: a ttl after the observer looked, or, for a report that
// was still fresh when the chain last halted, a ttl after the chain resumed
// (HaltGapMs).
func (a *App) expiry(asOf int64, c *types.Check) int64 {
	at := asOf + c.TtlMs
	if from, to := a.meta.HaltedFromMs, a.meta.HaltedToMs; to > 0 && at > from && asOf < to {
		at = max(at, to+c.TtlMs)
	}
	return at
}

// decidable tells whether a verdict is an agreed observer status.
func decidable(s types.Status) bool {
	return s >= types.STATUS_PASSING && s <= types.STATUS_UNKNOWN
}

// evaluate recomputes the verdict of one check at the current block, moves
// its hard state, raises alerts, and sets its next timer.
func (a *App) evaluate(ref string) error {
	service, instance, id := splitRef(ref)
	si := a.instance(service, instance)
	var c *types.Check
	if si != nil {
		c = findCheck(si, id)
	}
	if c == nil { // deregistered in the meantime
		a.schedule(ref, 0)
		a.noteLapsed(ref, nil)
		delete(a.watches, ref)
		return nil
	}
	now, h := a.meta.TimeMs, a.meta.Height
	var st types.CheckState
	if _, err := a.get(checkKey(ref), &st); err != nil {
		return err
	}
	reports, vr, err := a.reports(a.store, ref, c, FreshAt(&a.meta))
	if err != nil {
		return err
	}
	a.noteLapsed(ref, reports)
	res := verdict.Decide(vr, c.Quorum, a.totalWeight)
	v := res.Status
	// Standing counts reports only against an exact verdict: one whose own
	// status alone has the quorum, which (the quorum being at least a third
	// of all the weight) no coalition below a third can reach without an
	// honest observer seeing the same.
	if res.Exact() {
		for _, r := range reports {
			if r.Fresh && r.Record.Height == h {
				a.tally(r.Observer.Id, r.Record.Status == v)
			}
		}
	}
	if v != st.Verdict {
		a.verdicts = append(a.verdicts, VerdictChange{Service: service, Instance: instance, Check: id, From: st.Verdict, To: v})
		st.Verdict, st.VerdictHeight, st.VerdictTimeMs = v, h, now
		st.FlagAlerted = false
	}
	held := now - st.VerdictTimeMs
	switch {
	case decidable(v) && v != st.Hard && held >= c.ConfirmMs:
		from := st.Hard
		st.Hard, st.HardHeight, st.HardTimeMs = v, h, now
		if v == types.STATUS_CRITICAL {
			a.critical[service+"/"+instance] = true
		}
		if !(from == types.STATUS_NONE && v == types.STATUS_PASSING) {
			a.raise(AlertStateChange, from, v, si, c.Id, reports, now)
		}
	case !decidable(v) && !st.FlagAlerted && held >= c.ConfirmMs && st.Hard != types.STATUS_NONE:
		// A disputed or stale verdict never replaces the hard state; it is
		// flagged beside it, and alerted once per episode.
		st.FlagAlerted = true
		kind := AlertDisputed
		if v == types.STATUS_STALE {
			kind = AlertStale
		}
		a.raise(kind, st.Hard, v, si, c.Id, reports, now)
	}
	if st.VerdictHeight == h || st.HardHeight == h {
		if err := a.touch(service); err != nil {
			return err
		}
	}
	if err := a.putIfChanged(checkKey(ref), &st); err != nil {
		return err
	}
	a.schedule(ref, a.nextWake(ref, c, &st, reports))
	return nil
}

// nextWake is the block time at which the check's verdict or hard state can
// change without any new observation: the block after its first fresh
// report expires (freshness is judged at the block before, FreshAt), or when a verdict that differs from the hard state has held for
// confirm. 0 means never. It notes what the wake-up waits on (watch).
func (a *App) nextWake(ref string, c *types.Check, st *types.CheckState, reports []ObserverReport) int64 {
	w := &watch{}
	var asOfs []int64
	for _, r := range reports {
		if r.Fresh && r.Record != nil {
			w.reports = append(w.reports, watched{observer: r.Observer.Id, height: r.Record.Height, timeMs: r.Record.TimeMs})
			asOfs = append(asOfs, r.AsOfMs)
		}
	}
	pendingHard := decidable(st.Verdict) && st.Verdict != st.Hard
	pendingFlag := !decidable(st.Verdict) && st.Verdict != types.STATUS_NONE && !st.FlagAlerted && st.Hard != types.STATUS_NONE
	if pendingHard || pendingFlag {
		w.confirmAt = st.VerdictTimeMs + c.ConfirmMs
	}
	at := a.wakeOf(w, c, asOfs)
	if at > 0 {
		a.watches[ref] = w
	} else {
		delete(a.watches, ref)
	}
	return at
}

// watch is what a check's timer waits on: its fresh reports expiring (each
// by its observer, the record's height and own time, which is all a vouch
// needs to tell when it counts from), and a confirm time (0: none).
type watch struct {
	reports   []watched
	confirmAt int64
}

type watched struct {
	observer       string
	height, timeMs int64
}

// wakeOf is the time a watch falls due: the earliest expiry of its
// reports, report i counted from asOfs[i], or its confirm time.
func (a *App) wakeOf(w *watch, c *types.Check, asOfs []int64) int64 {
	var at int64
	earliest := func(t int64) {
		if at == 0 || t < at {
			at = t
		}
	}
	now := a.meta.TimeMs
	for _, asOf := range asOfs {
		if e := a.expiry(asOf, c); e > now {
			earliest(e)
		} else {
			// Fresh at the block before (FreshAt), expired by now: it
			// is stale at the next block, whatever its time (a timer
			// at now fires at the next block's end; a timer at now+1
			// would miss a next block of the same time).
			earliest(now)
		}
	}
	if w.confirmAt > 0 {
		earliest(w.confirmAt)
	}
	return at
}

// rewake handles a check's timer that fell due: if it waited only on
// reports expiring and a vouch has since moved every one of them on, so
// that none has lapsed, nothing an evaluation reads has changed (a record
// written or a lapsed one vouched for again would have made the check
// dirty), and the timer is only set again; otherwise the check is
// evaluated. This keeps a steady state of vouches from evaluating every
// check once per ttl.
func (a *App) rewake(ref string) error {
	w := a.watches[ref]
	service, instance, id := splitRef(ref)
	var c *types.Check
	if si := a.instance(service, instance); si != nil {
		c = findCheck(si, id)
	}
	if w == nil || c == nil || (w.confirmAt > 0 && w.confirmAt <= a.meta.TimeMs) {
		a.dirty[ref] = true
		return nil
	}
	asOfs := make([]int64, len(w.reports))
	for i, r := range w.reports {
		st, err := a.stamp(a.store, r.observer)
		if err != nil {
			return err
		}
		asOfs[i] = observedAt(&types.ObservationRecord{Height: r.height, TimeMs: r.timeMs}, st, c)
	}
	// A report that lapsed (its expiry at or before FreshAt, which is at
	// or before now) makes the watch due at once too.
	at := a.wakeOf(w, c, asOfs)
	if at <= a.meta.TimeMs {
		// Due again at once (a report stale from the next block on): an
		// evaluation sets that timer, after this block's have fired.
		a.dirty[ref] = true
		return nil
	}
	a.schedule(ref, at)
	return nil
}

// raise records an alert of the current block.
func (a *App) raise(kind string, from, to types.Status, si *types.ServiceInstance, check string, reports []ObserverReport, now int64) {
	al := types.Alert{
		Kind: kind, From: from, To: to, Service: si.Name, Instance: si.Id, Check: check,
		Height: a.meta.Height, TimeMs: now,
	}
	for _, r := range reports {
		v := types.ObserverView{Observer: r.Observer.Id, Datacenter: r.Observer.Datacenter, Fresh: r.Fresh}
		if r.Record != nil {
			v.Status, v.Output = r.Record.Status, r.Record.Output
		}
		al.Views = append(al.Views, v)
	}
	al.Id = alertID(a.meta.ChainId, &al)
	a.alerts = append(a.alerts, al)
}

// alertID derives an alert's id from the chain id, the check, the height and
// the transition, so every node computes the same id.
func alertID(chainID string, al *types.Alert) string {
	h := sha256.New()
	parts := []string{chainID, CheckRef(al.Service, al.Instance, al.Check), al.Kind}
	if al.Observer != "" {
		parts = append(parts, al.Observer)
	}
	for _, s := range parts {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], uint64(al.Height))
	binary.BigEndian.PutUint64(b[8:], uint64(al.From))
	binary.BigEndian.PutUint64(b[16:], uint64(al.To))
	h.Write(b[:])
	return hex.EncodeToString(h.Sum(nil)[:16])
}
