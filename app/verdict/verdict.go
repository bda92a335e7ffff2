// Package verdict is the quorum arithmetic of bftmon: from the weighted,
// possibly stale reports of a check's observers it decides the check's
// agreed status (SPEC §4). Pure functions over integers; no state.
package verdict

import "github.com/bftmon/bftmon/app/types"

// Report is one observer's contribution to a verdict.
type Report struct {
	// Weight is the observer's voting weight.
	Weight uint64
	// Status is its latest reported status (PASSING, WARNING, CRITICAL or
	// UNKNOWN); ignored when Fresh is false.
	Status types.Status
	// Fresh tells whether the report is within the check's ttl.
	Fresh bool
}

// Tally is the weight behind each observer status among fresh reports.
type Tally struct {
	Total    uint64 // W: the weight of the whole scope, fresh or not
	Fresh    uint64
	Passing  uint64
	Warning  uint64
	Critical uint64
	Unknown  uint64
}

// Result is a verdict with the numbers that produced it.
type Result struct {
	Status types.Status
	// Quorum is the weight needed to agree (Q).
	Quorum uint64
	Tally  Tally
}

// Quorum returns the default quorum of a scope of weight w among observers
// of weight all: more than two thirds of the scope, floor(2w/3)+1, and never
// less than a third of everyone, ceil(all/3), so that no coalition holding
// less than a third of all the weight can decide a check alone, however the
// check's scope is drawn. all below w (0, say) counts as w.
func Quorum(w, all uint64) uint64 {
	q := 2*w/3 + 1
	if all < w {
		all = w
	}
	if floor := (all + 2) / 3; floor > q {
		q = floor
	}
	return q
}

// Reachable tells whether a scope of weight w among observers of weight all
// can ever reach its quorum; a check whose scope cannot is refused at
// registration.
func Reachable(w, all uint64) bool { return w > 0 && w >= Quorum(w, all) }

// Count tallies reports.
func Count(reports []Report) Tally {
	var t Tally
	for _, r := range reports {
		t.Total += r.Weight
		if !r.Fresh {
			continue
		}
		switch r.Status {
		case types.STATUS_PASSING:
			t.Passing += r.Weight
		case types.STATUS_WARNING:
			t.Warning += r.Weight
		case types.STATUS_CRITICAL:
			t.Critical += r.Weight
		case types.STATUS_UNKNOWN:
			t.Unknown += r.Weight
		default:
			// Anything else is not an observer status: it counts as not fresh.
			continue
		}
		t.Fresh += r.Weight
	}
	return t
}

// Decide applies the verdict rule to the reports of a check's scope, among
// observers of total weight all (Quorum). override, when it is greater than
// the default quorum, raises the quorum (it can never lower it, nor raise it
// beyond the scope's weight, so a reachable scope can always be decided in
// principle).
//
//	fresh weight < Q            → stale
//	critical ≥ Q                → critical
//	warning + critical ≥ Q      → warning
//	passing ≥ Q                 → passing
//	unknown ≥ Q                 → unknown
//	otherwise                   → disputed
func Decide(reports []Report, override, all uint64) Result {
	t := Count(reports)
	q := Quorum(t.Total, all)
	if override > q {
		q = max(min(override, t.Total), q)
	}
	res := Result{Quorum: q, Tally: t}
	switch {
	case t.Total == 0 || t.Fresh < q:
		res.Status = types.STATUS_STALE
	case t.Critical >= q:
		res.Status = types.STATUS_CRITICAL
	case t.Warning+t.Critical >= q:
		res.Status = types.STATUS_WARNING
	case t.Passing >= q:
		res.Status = types.STATUS_PASSING
	case t.Unknown >= q:
		res.Status = types.STATUS_UNKNOWN
	default:
		res.Status = types.STATUS_DISPUTED
	}
	return res
}

// Exact tells whether the weight reporting exactly the verdict's status
// reaches the quorum. A warning verdict may instead rest on warning and
// critical reports together; only an exact verdict makes every report of
// another status a plain disagreement (observer standing counts no other).
func (r Result) Exact() bool {
	var w uint64
	switch r.Status {
	case types.STATUS_PASSING:
		w = r.Tally.Passing
	case types.STATUS_WARNING:
		w = r.Tally.Warning
	case types.STATUS_CRITICAL:
		w = r.Tally.Critical
	case types.STATUS_UNKNOWN:
		w = r.Tally.Unknown
	default:
		return false
	}
	return w >= r.Quorum
}
