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

// Quorum returns the default quorum for total weight w: more than two thirds,
// floor(2w/3)+1.
func Quorum(w uint64) uint64 { return 2*w/3 + 1 }

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

// Decide applies the verdict rule to reports. override, when it is greater
// than the default quorum, raises the quorum (it can never lower it, nor raise
// it beyond the total weight, so a check can always be decided in principle).
//
//	fresh weight < Q            → stale
//	critical ≥ Q                → critical
//	warning + critical ≥ Q      → warning
//	passing ≥ Q                 → passing
//	unknown ≥ Q                 → unknown
//	otherwise                   → disputed
func Decide(reports []Report, override uint64) Result {
	t := Count(reports)
	q := Quorum(t.Total)
	if override > q {
		q = min(override, t.Total)
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
