package verdict

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/bftmon/bftmon/app/types"
)

const (
	pass = types.STATUS_PASSING
	warn = types.STATUS_WARNING
	crit = types.STATUS_CRITICAL
	unkn = types.STATUS_UNKNOWN
)

// fresh builds fresh weight-1 reports.
func freshReports(sts ...types.Status) []Report {
	out := make([]Report, len(sts))
	for i, s := range sts {
		out[i] = Report{Weight: 1, Status: s, Fresh: true}
	}
	return out
}

func TestRuleBranches(t *testing.T) {
	stale := Report{Weight: 1, Status: crit}
	cases := []struct {
		name     string
		reports  []Report
		override uint64
		all      uint64 // weight of all observers (0: the scope's)
		want     types.Status
	}{
		{"no observers", nil, 0, 0, types.STATUS_STALE},
		{"fresh weight below quorum", append(freshReports(pass, pass), stale, stale), 0, 0, types.STATUS_STALE},
		{"critical quorum", freshReports(crit, crit, crit, pass), 0, 0, crit},
		{"warning quorum", freshReports(warn, warn, warn, pass), 0, 0, warn},
		{"warning from a warning+critical mix", freshReports(warn, crit, warn, pass), 0, 0, warn},
		{"critical beats warning when it alone has quorum", freshReports(crit, crit, crit, warn), 0, 0, crit},
		{"passing quorum", freshReports(pass, pass, pass, crit), 0, 0, pass},
		{"unknown quorum", freshReports(unkn, unkn, unkn, pass), 0, 0, unkn},
		{"disputed 2-2", freshReports(pass, pass, crit, crit), 0, 0, types.STATUS_DISPUTED},
		{"disputed three ways", freshReports(pass, pass, unkn, crit), 0, 0, types.STATUS_DISPUTED},
		{"non-fresh reports ignored", append(freshReports(pass, pass, pass), stale), 0, 0, pass},
		{"weights", []Report{{Weight: 5, Status: crit, Fresh: true}, {Weight: 1, Status: pass, Fresh: true}, {Weight: 1, Status: pass, Fresh: true}}, 0, 0, crit},
		{"heavy observer alone cannot decide", []Report{{Weight: 4, Status: crit, Fresh: true}, {Weight: 1, Status: pass, Fresh: true}, {Weight: 1, Status: pass, Fresh: true}}, 0, 0, types.STATUS_DISPUTED},
		{"override raises the quorum", freshReports(pass, pass, pass, crit), 4, 0, types.STATUS_DISPUTED},
		{"override above the total is capped", freshReports(pass, pass, pass, pass), 9, 0, pass},
		{"override below the default is ignored", freshReports(pass, pass, crit, crit), 1, 0, types.STATUS_DISPUTED},
		{"a small scope needs a third of everyone", freshReports(crit), 0, 7, types.STATUS_STALE},
		{"a scope of a third of everyone decides", freshReports(crit, crit, crit), 0, 7, crit},
		{"a third of everyone outweighs two thirds of the scope", freshReports(crit, crit, crit, pass), 0, 12, types.STATUS_DISPUTED},
		{"override cannot lower the floor", freshReports(crit, crit, crit, pass), 2, 12, types.STATUS_DISPUTED},
		{"an unreachable scope is stale", freshReports(crit, crit), 0, 9, types.STATUS_STALE},
		{"a non-observer status is not a fresh report", append(freshReports(pass, pass), Report{Weight: 1, Status: types.STATUS_DISPUTED, Fresh: true}, Report{Weight: 1, Status: types.STATUS_NONE, Fresh: true}), 0, 0, types.STATUS_STALE},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.reports, tc.override, tc.all); got.Status != tc.want {
				t.Fatalf("Decide = %s (Q=%d, tally %+v), want %s", got.Status.Name(), got.Quorum, got.Tally, tc.want.Name())
			}
		})
	}
	for w, q := range map[uint64]uint64{0: 1, 1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 5, 7: 5, 9: 7, 10: 7, 100: 67, 1 << 40: 2*(1<<40)/3 + 1} {
		if got := Quorum(w, 0); got != q {
			t.Errorf("Quorum(%d, 0) = %d, want %d", w, got, q)
		}
	}
	for _, c := range []struct{ w, all, q uint64 }{{1, 3, 1}, {1, 4, 2}, {2, 4, 2}, {2, 7, 3}, {3, 7, 3}, {3, 9, 3}, {3, 10, 4}, {4, 30, 10}, {30, 30, 21}} {
		if got := Quorum(c.w, c.all); got != c.q {
			t.Errorf("Quorum(%d, %d) = %d, want %d", c.w, c.all, got, c.q)
		}
		if Reachable(c.w, c.all) != (c.w >= c.q) {
			t.Errorf("Reachable(%d, %d) = %v with Q %d", c.w, c.all, Reachable(c.w, c.all), c.q)
		}
	}
}

// refDecide is a deliberately naive reference: it expands reports into unit
// votes and finds Q by search.
func refDecide(reports []Report, override, all uint64) types.Status {
	var votes []types.Status
	var total uint64
	for _, r := range reports {
		total += r.Weight
		for i := uint64(0); i < r.Weight; i++ {
			if r.Fresh && r.Status >= pass && r.Status <= unkn {
				votes = append(votes, r.Status)
			}
		}
	}
	q := uint64(0)
	for 3*q <= 2*total || 3*q < all { // more than 2/3 of the scope, at least 1/3 of all
		q++
	}
	if o := min(override, total); o > q { // an override raises, never lowers
		q = o
	}
	count := func(ok func(types.Status) bool) uint64 {
		var n uint64
		for _, v := range votes {
			if ok(v) {
				n++
			}
		}
		return n
	}
	is := func(s types.Status) func(types.Status) bool { return func(v types.Status) bool { return v == s } }
	switch {
	case total == 0 || uint64(len(votes)) < q:
		return types.STATUS_STALE
	case count(is(crit)) >= q:
		return crit
	case count(func(v types.Status) bool { return v == warn || v == crit }) >= q:
		return warn
	case count(is(pass)) >= q:
		return pass
	case count(is(unkn)) >= q:
		return unkn
	}
	return types.STATUS_DISPUTED
}

func drawReport(t *rapid.T, label string) Report {
	return Report{
		Weight: rapid.Uint64Range(1, 20).Draw(t, label+"w"),
		Status: types.Status(rapid.IntRange(0, 6).Draw(t, label+"s")),
		Fresh:  rapid.Bool().Draw(t, label+"f"),
	}
}

func TestRuleMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 12).Draw(t, "n")
		reports := make([]Report, n)
		for i := range reports {
			reports[i] = drawReport(t, fmt.Sprint(i))
		}
		override := rapid.Uint64Range(0, 100).Draw(t, "override")
		all := rapid.Uint64Range(0, 300).Draw(t, "all")
		if got, want := Decide(reports, override, all).Status, refDecide(reports, override, all); got != want {
			t.Fatalf("Decide = %s, reference = %s", got.Name(), want.Name())
		}
	})
}

// TestRuleSafetyAndLiveness is SPEC §4's guarantee: with faulty weight
// f ≤ W − Q reporting anything, (a) an agreed verdict is reported by honest
// fresh weight ≥ 2Q − W; (b) faulty weight alone cannot produce one; (c) if
// every honest observer is fresh and reports the same status, that status is
// the verdict.
func TestRuleSafetyAndLiveness(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 12).Draw(t, "n")
		weights := make([]uint64, n)
		var w uint64
		for i := range weights {
			weights[i] = rapid.Uint64Range(1, 20).Draw(t, fmt.Sprintf("w%d", i))
			w += weights[i]
		}
		all := w + rapid.Uint64Range(0, 3*w).Draw(t, "outside") // observers outside the scope
		q := Quorum(w, all)
		if q > w {
			t.Skip("unreachable scope: refused at registration")
		}
		faulty := make([]bool, n)
		var f uint64
		for i := range faulty {
			if rapid.Bool().Draw(t, fmt.Sprintf("faulty%d", i)) && f+weights[i] <= w-q {
				faulty[i], f = true, f+weights[i]
			}
		}
		reports := make([]Report, n)
		for i := range reports {
			reports[i] = drawReport(t, fmt.Sprint(i))
			reports[i].Weight = weights[i]
		}
		agreed := func(v, s types.Status) bool {
			if v == warn {
				return s == warn || s == crit
			}
			return s == v
		}
		v := Decide(reports, 0, all).Status
		if v >= pass && v <= unkn {
			var honest uint64
			for i, r := range reports {
				if !faulty[i] && r.Fresh && agreed(v, r.Status) {
					honest += r.Weight
				}
			}
			if honest+w < 2*q { // honest < 2Q − W, without underflow
				t.Fatalf("verdict %s backed by honest weight %d < 2Q−W = %d (W=%d Q=%d f=%d)", v.Name(), honest, 2*q-w, w, q, f)
			}
		}
		// (b) honest observers silent: faulty weight alone decides nothing.
		silent := append([]Report(nil), reports...)
		for i := range silent {
			if !faulty[i] {
				silent[i].Fresh = false
			}
		}
		if v := Decide(silent, 0, all).Status; v != types.STATUS_STALE {
			t.Fatalf("faulty weight %d of %d alone produced %s", f, w, v.Name())
		}
		// (c) honest observers agree: their status wins.
		s := types.Status(rapid.IntRange(int(pass), int(unkn)).Draw(t, "honest"))
		agree := append([]Report(nil), reports...)
		for i := range agree {
			if !faulty[i] {
				agree[i].Fresh, agree[i].Status = true, s
			}
		}
		if v := Decide(agree, 0, all).Status; v != s {
			t.Fatalf("all honest observers report %s but the verdict is %s (W=%d Q=%d f=%d)", s.Name(), v.Name(), w, q, f)
		}
	})
}

// TestRuleMinorityOwnsNoScope: a coalition holding less than a third of all
// the weight decides no check alone, whatever share of the check's scope it
// holds; and with every honest observer of the scope reporting one status, a
// decidable verdict is that status (or warning, where the honest see
// critical and the coalition warning), never another.
func TestRuleMinorityOwnsNoScope(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 10).Draw(t, "n")
		reports := make([]Report, n)
		faulty := make([]bool, n)
		var w, f uint64
		for i := range reports {
			reports[i] = drawReport(t, fmt.Sprint(i))
			w += reports[i].Weight
		}
		all := w + rapid.Uint64Range(0, 5*w).Draw(t, "outside")
		for i := range faulty {
			if rapid.Bool().Draw(t, fmt.Sprintf("faulty%d", i)) && 3*(f+reports[i].Weight) < all {
				faulty[i], f = true, f+reports[i].Weight
			}
		}
		silent := append([]Report(nil), reports...)
		for i := range silent {
			if !faulty[i] {
				silent[i].Fresh = false
			}
		}
		if v := Decide(silent, 0, all).Status; v != types.STATUS_STALE {
			t.Fatalf("coalition of weight %d (of %d overall, scope %d) alone produced %s", f, all, w, v.Name())
		}
		s := types.Status(rapid.IntRange(int(pass), int(unkn)).Draw(t, "honest"))
		for i := range reports {
			if !faulty[i] {
				reports[i].Status = s
			}
		}
		res := Decide(reports, 0, all)
		if v := res.Status; v >= pass && v <= unkn && v != s && !(v == warn && s == crit) {
			t.Fatalf("honest observers report %s, coalition %d of %d: verdict %s", s.Name(), f, all, v.Name())
		}
		if res.Exact() && res.Status != s {
			t.Fatalf("exact verdict %s differs from the honest view %s", res.Status.Name(), s.Name())
		}
	})
}

// TestRuleOrderIndependent: the verdict does not depend on report order.
func TestRuleOrderIndependent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		reports := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Report { return drawReport(t, "r") }), 0, 10).Draw(t, "reports")
		perm := rapid.Permutation(reports).Draw(t, "perm")
		if a, b := Decide(reports, 0, 0), Decide(perm, 0, 0); a != b {
			t.Fatalf("%+v vs %+v", a, b)
		}
	})
}

func BenchmarkRuleDecide(b *testing.B) {
	for _, n := range []int{4, 16, 64} {
		reports := make([]Report, n)
		for i := range reports {
			reports[i] = Report{Weight: 1, Status: types.Status(i%4 + 1), Fresh: i%5 != 0}
		}
		b.Run(fmt.Sprintf("observers=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				Decide(reports, 0, 0)
			}
		})
	}
}

// TestToleratedMatchesBruteForce: Tolerated is the largest weight of a
// subset of the scope that holds less than a third of all the weight.
func TestToleratedMatchesBruteForce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ws := rapid.SliceOfN(rapid.Uint64Range(0, 20), 0, 10).Draw(t, "weights")
		var w uint64
		for _, x := range ws {
			w += x
		}
		all := w + rapid.Uint64Range(0, 60).Draw(t, "outside")
		var best uint64
		for mask := 0; mask < 1<<len(ws); mask++ {
			var s uint64
			for i, x := range ws {
				if mask&(1<<i) != 0 {
					s += x
				}
			}
			if 3*s < all && s > best {
				best = s
			}
		}
		if got := Tolerated(ws, all); got != best {
			t.Fatalf("Tolerated(%v, %d) = %d, brute force %d", ws, all, got, best)
		}
	})
}

// TestSafeScopeCannotBeBlinded is issue 22's property over the arithmetic:
// for a scope Safe accepts and every coalition holding less than a third of
// all the weight, whatever the coalition reports or withholds, when every
// honest observer of the scope reports X the verdict is X, and the coalition
// alone decides nothing; and Safe refuses exactly the scopes where the
// largest such coalition, reporting the opposite or silent, keeps the
// verdict from the honest view.
func TestSafeScopeCannotBeBlinded(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 9).Draw(t, "n")
		ws := make([]uint64, n)
		var w uint64
		for i := range ws {
			ws[i] = rapid.Uint64Range(1, 5).Draw(t, fmt.Sprintf("w%d", i))
			w += ws[i]
		}
		all := w + rapid.Uint64Range(0, 3*w).Draw(t, "outside")
		override := rapid.SampledFrom([]uint64{0, 0, w / 2, w}).Draw(t, "override")
		s := ScopeSafety(ws, all, override)
		x := types.Status(rapid.IntRange(int(pass), int(unkn)).Draw(t, "honest"))
		if s.Safe() {
			var f uint64
			faulty := make([]bool, n)
			for i := range ws {
				if rapid.Bool().Draw(t, fmt.Sprintf("faulty%d", i)) && 3*(f+ws[i]) < all {
					faulty[i], f = true, f+ws[i]
				}
			}
			reports := make([]Report, n)
			alone := make([]Report, n)
			for i := range reports {
				reports[i] = Report{Weight: ws[i], Status: x, Fresh: true}
				if faulty[i] {
					reports[i] = drawReport(t, fmt.Sprint(i))
					reports[i].Weight = ws[i]
					alone[i] = reports[i]
				} else {
					alone[i] = Report{Weight: ws[i]}
				}
			}
			if v := Decide(reports, override, all).Status; v != x {
				t.Fatalf("safe scope %+v, coalition %d of %d: honest report %s, verdict %s", s, f, all, x.Name(), v.Name())
			}
			if v := Decide(alone, override, all).Status; v != types.STATUS_STALE {
				t.Fatalf("safe scope %+v: the coalition of %d of %d alone made %s", s, f, all, v.Name())
			}
			return
		}
		// Unsafe: the largest coalition below a third, silent, blinds it.
		var best, bestMask uint64
		for mask := uint64(0); mask < 1<<n; mask++ {
			var sum uint64
			for i := range ws {
				if mask&(1<<i) != 0 {
					sum += ws[i]
				}
			}
			if 3*sum < all && sum >= best {
				best, bestMask = sum, mask
			}
		}
		reports := make([]Report, n)
		for i := range reports {
			reports[i] = Report{Weight: ws[i], Status: x, Fresh: bestMask&(1<<i) == 0}
		}
		if v := Decide(reports, override, all).Status; v == x {
			t.Fatalf("refused scope %+v of %d: its largest coalition (%d) silent still leaves verdict %s", s, all, best, v.Name())
		}
	})
}
