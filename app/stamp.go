package app

import (
	"github.com/bftmon/bftmon/app/types"
)

// Vouches: an observer's batch carries its changed results and, in
// unchanged_as_of_ms, one time as of which every other record it has is
// still true, so a steady state costs one small write per observer and
// flush instead of one per check (docs/ARCHITECTURE.md, "Unchanged
// reports"). A vouch counts only where it cannot misstate a report:
//
//   - it covers only the records written before it, each as of the vouch's
//     time minus the check's interval (an honest observer probes each check
//     at least that often, so every covered record was confirmed by a probe
//     at or after that time);
//   - it counts only in a batch that names the batch the chain applied last
//     (prev_nonce): when one of the observer's batches went missing, or was
//     reordered by a proposer, its changes may not be on the chain, and a
//     vouch would claim the old status for them;
//   - after such a break, or after a report of the batch was skipped as too
//     old or too far ahead (its change is not on the chain either), later
//     vouches never cover the records written at or before the break; the
//     vouch in force at the break keeps covering what it covered, since it
//     was made when the chain held everything the observer had sent.
//
// The observer learns of a break from its own node's state (the floor
// rose) and sends all its results again, which brings its records above
// the floor.

// observedAt is the time from which rec counts as observed: its own time,
// or the vouch that covers it. Passive checks are not probed on an
// interval, so no vouch covers them.
func observedAt(rec *types.ObservationRecord, st *types.ObserverStamp, c *types.Check) int64 {
	t := rec.TimeMs
	if st == nil || c.Kind == "passive" {
		return t
	}
	switch {
	case st.FloorHeight < rec.Height && rec.Height <= st.Height:
		t = max(t, st.TimeMs-c.IntervalMs)
	case st.FrozenFloor < rec.Height && rec.Height <= st.FrozenHeight:
		t = max(t, st.FrozenTimeMs-c.IntervalMs)
	}
	return t
}

// readStamp reads an observer's stamp from r (nil: none).
func readStamp(r Reader, observer string) (*types.ObserverStamp, error) {
	bz, err := r.Get(stampKey(observer))
	if err != nil || bz == nil {
		return nil, err
	}
	st := new(types.ObserverStamp)
	if err := st.Unmarshal(bz); err != nil {
		return nil, err
	}
	return st, nil
}

// stamp reads an observer's stamp from r, which is the working state or
// a committed version; the working state's are kept for the block.
func (a *App) stamp(r Reader, observer string) (*types.ObserverStamp, error) {
	if r != Reader(a.store) || a.stamps == nil {
		return readStamp(r, observer)
	}
	if st, ok := a.stamps[observer]; ok {
		return st, nil
	}
	st, err := readStamp(r, observer)
	if err == nil {
		a.stamps[observer] = st
	}
	return st, err
}

// noteLapsed records which observers' reports on ref are recorded but
// not fresh (reports nil: the check is gone).
func (a *App) noteLapsed(ref string, reports []ObserverReport) {
	for _, r := range reports {
		lapsed := r.Record != nil && !r.Fresh
		set := a.lapsed[r.Observer.Id]
		switch {
		case lapsed && set == nil:
			a.lapsed[r.Observer.Id] = map[string]int64{ref: r.Record.Height}
		case lapsed:
			set[ref] = r.Record.Height
		case set != nil:
			delete(set, ref)
		}
	}
	if reports == nil {
		for _, set := range a.lapsed {
			delete(set, ref)
		}
	}
}

// breakStamp records a break at height h: the vouch in force freezes, and
// later vouches cover only records written after h. When that replaces a
// frozen vouch, the checks whose timer waits on a report of the observer
// that only the frozen vouch covered are re-evaluated: that report now
// counts from its own time, earlier than its timer, and a timer must never
// be late (a node restarted now would set it from the state, and evaluate
// sooner).
func (a *App) breakStamp(observer string, st *types.ObserverStamp, h int64) {
	if st.Height > st.FloorHeight {
		if st.FrozenHeight > st.FrozenFloor {
			for ref, w := range a.watches {
				for _, r := range w.reports {
					if r.observer == observer && st.FrozenFloor < r.height && r.height <= st.FrozenHeight {
						a.dirty[ref] = true
					}
				}
			}
		}
		st.FrozenTimeMs, st.FrozenHeight, st.FrozenFloor = st.TimeMs, st.Height, st.FloorHeight
	}
	st.TimeMs, st.Height, st.FloorHeight = 0, 0, h
}

// stampBatch updates the observer's stamp after its batch of the given
// nonce was applied: broken tells whether a report of it was skipped as too
// old or too far ahead. It returns what the log should say of the vouch.
func (a *App) stampBatch(observer string, nonce uint64, b *types.ObservationBatch, broken bool) (string, error) {
	var st types.ObserverStamp
	if _, err := a.get(stampKey(observer), &st); err != nil {
		return "", err
	}
	now, h := a.meta.TimeMs, a.meta.Height
	var note string
	switch {
	case b.PrevNonce != st.LastNonce || broken:
		a.breakStamp(observer, &st, h)
		why := "a report was skipped"
		if b.PrevNonce != st.LastNonce {
			why = "the batch does not follow the one applied last (a batch went missing or came late)"
		}
		if b.UnchangedAsOfMs > 0 {
			note = "; vouch not counted: " + why + ", so records up to this height need reporting again"
		}
	case b.UnchangedAsOfMs > 0 && min(b.UnchangedAsOfMs, now) <= st.TimeMs:
		// A vouch replaces the one before; an earlier time would take back
		// what that one said of the records both cover.
		note = "; vouch not counted: not later than the one in force"
	case b.UnchangedAsOfMs > 0:
		// A vouch later than the block time counts as of the block time: it
		// says less than the observer did (blocks lag when they are slow).
		st.TimeMs, st.Height = min(b.UnchangedAsOfMs, now), h
		note = "; vouched for the rest"
		// A vouch may make a lapsed record fresh again, which changes the
		// verdict as the unchanged report it stands for would; it cannot
		// cover one written at or before the floor.
		for ref, height := range a.lapsed[observer] {
			if height > st.FloorHeight {
				a.dirty[ref] = true
			}
		}
	}
	st.LastNonce = nonce
	if a.stamps != nil {
		a.stamps[observer] = &st
	}
	return note, a.put(stampKey(observer), &st)
}
