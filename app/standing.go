package app

import (
	"maps"
	"slices"
	"strconv"

	"github.com/bftmon/bftmon/app/types"
)

// Observer standing (SPEC §4): how often an observer's reports disagree with
// the verdicts its peers agree on. A report is counted once, in the block
// that commits it, against the decidable verdict its check reaches in that
// block; disputed and stale verdicts count for no one.
const (
	// StandingWindowMs is how far back standing looks, in block time.
	StandingWindowMs = 5 * 60 * 1000
	// standingBucketMs slices the window.
	standingBucketMs = 30 * 1000
	// SuspectMinReports is the least number of counted reports in the window
	// before an observer can be suspect.
	SuspectMinReports = 10
	// SuspectPercent is the disagreeing share, in percent, at which an
	// observer becomes suspect; it stops being suspect below half of it.
	SuspectPercent = 50
)

// AlertObserverSuspect is the kind of the alert raised when an observer
// becomes suspect.
const AlertObserverSuspect = "observer_suspect"

// tally notes one report of observer that agreed or disagreed with the
// block's verdict of its check.
func (a *App) tally(observer string, agreed bool) {
	if a.tallies == nil {
		a.tallies = map[string]*[2]uint64{}
	}
	t := a.tallies[observer]
	if t == nil {
		t = new([2]uint64)
		a.tallies[observer] = t
	}
	if agreed {
		t[0]++
	} else {
		t[1]++
	}
}

// settleStanding adds the block's tallies to each observer's standing,
// drops what fell out of the window, and raises observer_suspect for an
// observer that crossed the threshold. Observers are handled in id order.
func (a *App) settleStanding() error {
	now := a.meta.TimeMs
	for _, id := range slices.Sorted(maps.Keys(a.tallies)) {
		t := a.tallies[id]
		var st types.ObserverStanding
		if _, err := a.get(standingKey(id), &st); err != nil {
			return err
		}
		start := now - now%standingBucketMs
		if n := len(st.Buckets); n == 0 || st.Buckets[n-1].StartMs != start {
			st.Buckets = append(st.Buckets, types.StandingBucket{StartMs: start})
		}
		b := &st.Buckets[len(st.Buckets)-1]
		b.Agreed += t[0]
		b.Disagreed += t[1]
		st.Buckets = windowed(st.Buckets, now)
		agreed, disagreed := Counts(&st)
		total := agreed + disagreed
		switch {
		case !st.Suspect && total >= SuspectMinReports && disagreed*100 >= total*SuspectPercent:
			st.Suspect, st.SuspectHeight = true, a.meta.Height
			a.meta.ObserversHeight = a.meta.Height
			a.raiseSuspect(id, agreed, disagreed)
		case st.Suspect && st.Equivocations == 0 && disagreed*200 < total*SuspectPercent:
			st.Suspect, st.SuspectHeight = false, 0
			a.meta.ObserversHeight = a.meta.Height
		}
		if err := a.put(standingKey(id), &st); err != nil {
			return err
		}
	}
	clear(a.tallies)
	return nil
}

// windowed drops the buckets that ended before the window.
func windowed(bs []types.StandingBucket, now int64) []types.StandingBucket {
	i := 0
	for i < len(bs) && bs[i].StartMs+standingBucketMs <= now-StandingWindowMs {
		i++
	}
	return bs[i:]
}

// Counts sums a standing's buckets.
func Counts(st *types.ObserverStanding) (agreed, disagreed uint64) {
	for _, b := range st.Buckets {
		agreed += b.Agreed
		disagreed += b.Disagreed
	}
	return agreed, disagreed
}

// raiseSuspect commits an observer_suspect alert about observer.
func (a *App) raiseSuspect(observer string, agreed, disagreed uint64) {
	al := types.Alert{Kind: AlertObserverSuspect, Observer: observer, Height: a.meta.Height, TimeMs: a.meta.TimeMs}
	for i := range a.observers {
		if o := &a.observers[i]; o.Id == observer {
			al.Views = []types.ObserverView{{Observer: o.Id, Datacenter: o.Datacenter, Fresh: true,
				Output: standingText(agreed, disagreed)}}
		}
	}
	al.Id = alertID(a.meta.ChainId, &al)
	a.alerts = append(a.alerts, al)
}

// standingText says in words what a standing counted.
func standingText(agreed, disagreed uint64) string {
	return strconv.FormatUint(disagreed, 10) + " of " + strconv.FormatUint(agreed+disagreed, 10) + " reports in the last 5m disagreed with the agreed verdict"
}
