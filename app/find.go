package app

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/bftmon/bftmon/app/types"
)

// Filter selects the instances of a service a read returns. The zero
// Filter selects them all.
type Filter struct {
	// Statuses keeps instances that match any of them (see Matches).
	Statuses []types.Status
	// Tags keeps instances that carry every one of them.
	Tags []string
	// Datacenter keeps instances in that datacenter.
	Datacenter string
	// Meta keeps instances whose meta has every one of these pairs.
	Meta map[string]string
	// Near orders the instances nearest that datacenter first (see Find).
	Near string
	// Reports reads every observer's latest report on each check (which
	// Near also needs); without it CheckView.Reports is empty.
	Reports bool
}

// Matches tells whether iv has status s: its status (the worst hard
// status of its checks, pending for none yet) is s, or, for disputed and
// stale, which are verdicts beside the hard status, one of its checks'
// verdicts is s.
func (iv *InstanceView) Matches(s types.Status) bool {
	if iv.Status == s {
		return true
	}
	if s == types.STATUS_DISPUTED || s == types.STATUS_STALE {
		for i := range iv.Checks {
			if iv.Checks[i].State.Verdict == s {
				return true
			}
		}
	}
	return false
}

// Verdict is the worst current verdict of the instance's checks: what the
// observers say now, where Status is what has been confirmed.
func (iv *InstanceView) Verdict() types.Status {
	v := types.STATUS_PASSING
	for i := range iv.Checks {
		v = worst(v, iv.Checks[i].State.Verdict)
	}
	return v
}

func (f *Filter) keepsRegistration(si *types.ServiceInstance) bool {
	if f.Datacenter != "" && si.Datacenter != f.Datacenter {
		return false
	}
	for _, t := range f.Tags {
		if !slices.Contains(si.Tags, t) {
			return false
		}
	}
	for k, v := range f.Meta {
		found := false
		for _, p := range si.Meta {
			if p.Key == k && p.Value == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (f *Filter) keepsStatus(iv *InstanceView) bool {
	if len(f.Statuses) == 0 {
		return true
	}
	for _, s := range f.Statuses {
		if iv.Matches(s) {
			return true
		}
	}
	return false
}

// Find returns the instances of service that f selects, by id, or with
// f.Near nearest first. It fails with ErrNotFound if the service has no
// instances at all (a filter that keeps none gives an empty list).
//
// Nearness is by datacenter: the distance from datacenter N to the
// instances in datacenter D is the median latency of the fresh reports
// that N's observers made on the checks of the service's instances in D,
// as committed. Instances in N come first, then the others by that
// distance, and those N's observers have no fresh latency for last.
func (q *Query) Find(service string, f Filter) ([]InstanceView, error) {
	if validName("service", service) != nil {
		return nil, fmt.Errorf("service %q: %w", service, ErrNotFound)
	}
	insts, err := q.instances(servicePrefix(service))
	if err != nil {
		return nil, err
	}
	if len(insts) == 0 {
		return nil, fmt.Errorf("service %q: %w", service, ErrNotFound)
	}
	withReports := f.Reports || f.Near != ""
	a := &App{observers: q.observers, meta: q.meta}
	out := make([]InstanceView, 0, len(insts))
	for _, si := range insts {
		if !f.keepsRegistration(&si) {
			continue
		}
		iv := InstanceView{Instance: si, Status: types.STATUS_PASSING}
		for j := range si.Checks {
			c := &si.Checks[j]
			ref := CheckRef(si.Name, si.Id, c.Id)
			cv := CheckView{Check: *c}
			bz, err := q.r.Get(checkKey(ref))
			if err != nil {
				return nil, err
			}
			if bz != nil {
				if err := cv.State.Unmarshal(bz); err != nil {
					return nil, fmt.Errorf("decode state of %s: %w", ref, err)
				}
			}
			if withReports {
				if cv.Reports, _, err = a.reports(q.r, ref, c, FreshAt(&q.meta)); err != nil {
					return nil, err
				}
			}
			iv.Status = worst(iv.Status, cv.State.Hard)
			iv.Checks = append(iv.Checks, cv)
		}
		if f.keepsStatus(&iv) {
			out = append(out, iv)
		}
	}
	if f.Near != "" {
		ByDistance(out, f.Near)
	}
	return out, nil
}

// ByDistance sorts instances nearest datacenter near first (see Find); it
// needs their checks' reports. The order is stable by id within a
// datacenter.
func ByDistance(insts []InstanceView, near string) {
	dist := Distances(insts, near)
	key := func(iv *InstanceView) float64 {
		if iv.Instance.Datacenter == near {
			return -1
		}
		if d, ok := dist[iv.Instance.Datacenter]; ok {
			return d
		}
		return math.Inf(1)
	}
	sort.SliceStable(insts, func(i, j int) bool {
		ki, kj := key(&insts[i]), key(&insts[j])
		if ki != kj {
			return ki < kj
		}
		if insts[i].Instance.Datacenter != insts[j].Instance.Datacenter {
			return insts[i].Instance.Datacenter < insts[j].Instance.Datacenter
		}
		return insts[i].Instance.Id < insts[j].Instance.Id
	})
}

// Distances is, for every datacenter of insts, the median latency in
// milliseconds of the fresh reports near's observers made on their checks.
// Datacenters with no such report are missing. Reports without a latency
// (passive results) do not count.
func Distances(insts []InstanceView, near string) map[string]float64 {
	samples := map[string][]float64{}
	for i := range insts {
		dc := insts[i].Instance.Datacenter
		for j := range insts[i].Checks {
			for _, r := range insts[i].Checks[j].Reports {
				if r.Observer.Datacenter == near && r.Fresh && r.Record != nil && r.Record.LatencyUs > 0 {
					samples[dc] = append(samples[dc], float64(r.Record.LatencyUs)/1000)
				}
			}
		}
	}
	out := make(map[string]float64, len(samples))
	for dc, s := range samples {
		out[dc] = median(s)
	}
	return out
}

func median(s []float64) float64 {
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
