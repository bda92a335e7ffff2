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
// can ever reach its quorum.
func Reachable(w, all uint64) bool { return w > 0 && w >= Quorum(w, all) }

// EffectiveQuorum is the quorum Decide applies to a scope of weight w:
// Quorum(w, all), raised by override up to the scope's weight.
func EffectiveQuorum(w, all, override uint64) uint64 {
	q := Quorum(w, all)
	if override > q {
		q = max(min(override, w), q)
	}
	return q
}

// maxSums bounds the reachable-sum set Tolerated builds; past it, it falls
// back to the safe overestimate min(w, (all-1)/3).
const maxSums = 1 << 14

// Tolerated returns f, the largest weight within a scope whose members have
// the given weights that a coalition holding less than a third of all the
// observers' weight (all) can hold: the largest subset sum s of weights with
// 3s < all. It is exact while the set of reachable subset sums stays small
// (maxSums), and otherwise the overestimate min(scope weight, (all-1)/3),
// which can only make a scope look less safe than it is.
func Tolerated(weights []uint64, all uint64) uint64 {
	if all == 0 {
		return 0
	}
	limit := (all - 1) / 3 // the largest s with 3s < all
	var w uint64
	for _, x := range weights {
		w += x
	}
	if w <= limit {
		return w
	}
	sums := map[uint64]bool{0: true}
	for _, x := range weights {
		if x == 0 || x > limit {
			continue
		}
		next := make([]uint64, 0, len(sums))
		for s := range sums {
			if t := s + x; t <= limit && !sums[t] {
				next = append(next, t)
			}
		}
		for _, t := range next {
			sums[t] = true
		}
		if len(sums) > maxSums {
			return min(w, limit)
		}
	}
	var f uint64
	for s := range sums {
		f = max(f, s)
	}
	return f
}

// Safety is what registration needs to know about a check's scope: its
// weight, its quorum, and the share of it a coalition holding less than a
// third of all the observers' weight can hold.
type Safety struct {
	Weight    uint64 // W: the scope's weight
	Quorum    uint64 // Q: EffectiveQuorum(W, all, override)
	Tolerated uint64 // f: Tolerated(scope's weights, all)
}

// ScopeSafety computes a scope's Safety from its members' weights.
func ScopeSafety(weights []uint64, all, override uint64) Safety {
	var w uint64
	for _, x := range weights {
		w += x
	}
	return Safety{Weight: w, Quorum: EffectiveQuorum(w, all, override), Tolerated: Tolerated(weights, all)}
}

// Safe tells whether the scope guarantees both halves of the verdict rule's
// promise against every coalition holding less than a third of all the
// observers' weight: the coalition alone never reaches Q (Q is at least a
// third of all), and the honest remainder always does, W - f >= Q, so that
// when every honest observer of the scope reports one status, that status is
// the verdict however the coalition reports or stays silent. A check whose
// scope is not Safe is refused at registration.
func (s Safety) Safe() bool {
	return s.Weight > 0 && s.Weight >= s.Tolerated && s.Weight-s.Tolerated >= s.Quorum
}

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
	q := EffectiveQuorum(t.Total, all, override)
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
