package app

import (
	"fmt"
	"slices"

	"github.com/bftmon/bftmon/app/types"
)

// Query answers clients' reads from one committed version of the state. It
// needs the observer set, which it reads from the same version.
type Query struct {
	r         Reader
	meta      types.Meta
	observers []types.Observer
}

// NewQuery reads the bookkeeping and observer set of r.
func NewQuery(r Reader) (*Query, error) {
	q := &Query{r: r}
	bz, err := r.Get(keyInfo)
	if err != nil {
		return nil, err
	}
	if bz != nil {
		if err := q.meta.Unmarshal(bz); err != nil {
			return nil, fmt.Errorf("decode info: %w", err)
		}
	}
	if q.observers, err = scan[types.Observer](r, prefixObs); err != nil {
		return nil, fmt.Errorf("read observers: %w", err)
	}
	return q, nil
}

// Info is the chain id, height and block time of the version read.
func (q *Query) Info() Info {
	return Info{ChainID: q.meta.ChainId, Height: q.meta.Height, BlockTime: q.meta.TimeMs}
}

// Observers lists the observer set, by id.
func (q *Query) Observers() []types.Observer { return q.observers }

// Stamp is the observer's stamp: its vouches, the nonce of its batch the
// chain applied last, and the floor of its last break (nil: it never sent
// a batch). An observer reads its own to follow on from it and to notice a
// break, after which it reports everything again.
func (q *Query) Stamp(observerID string) (*types.ObserverStamp, error) {
	st, err := readStamp(q.r, observerID)
	if err != nil {
		return nil, fmt.Errorf("read stamp of %s: %w", observerID, err)
	}
	return st, nil
}

// Instances lists every registered instance, by service then id.
func (q *Query) Instances() ([]types.ServiceInstance, error) {
	return q.instances(prefixService)
}

func (q *Query) instances(prefix []byte) ([]types.ServiceInstance, error) {
	out, err := scan[types.ServiceInstance](q.r, prefix)
	if err != nil {
		return nil, fmt.Errorf("read instances: %w", err)
	}
	return out, nil
}

// Services lists every service name with its instance count and worst hard
// status.
func (q *Query) Services() ([]ServiceSummary, error) {
	insts, err := q.Instances()
	if err != nil {
		return nil, err
	}
	var out []ServiceSummary
	for i := range insts {
		st, err := q.instanceStatus(&insts[i])
		if err != nil {
			return nil, err
		}
		if len(out) == 0 || out[len(out)-1].Name != insts[i].Name {
			out = append(out, ServiceSummary{Name: insts[i].Name, Status: types.STATUS_PASSING})
		}
		s := &out[len(out)-1]
		s.Instances++
		s.Status = worst(s.Status, st)
		for _, t := range insts[i].Tags {
			if !slices.Contains(s.Tags, t) {
				s.Tags = append(s.Tags, t)
			}
		}
	}
	for i := range out {
		slices.Sort(out[i].Tags)
	}
	return out, nil
}

// worst returns the more severe of two statuses.
func worst(a, b types.Status) types.Status {
	if b.Severity() > a.Severity() {
		return b
	}
	return a
}

func (q *Query) instanceStatus(si *types.ServiceInstance) (types.Status, error) {
	st := types.STATUS_PASSING
	for i := range si.Checks {
		var cs types.CheckState
		bz, err := q.r.Get(checkKey(CheckRef(si.Name, si.Id, si.Checks[i].Id)))
		if err != nil {
			return 0, err
		}
		if bz != nil {
			if err := cs.Unmarshal(bz); err != nil {
				return 0, err
			}
		}
		st = worst(st, cs.Hard)
	}
	return st, nil
}

// Service returns every instance of a service with its checks and each
// observer's latest report, or ErrNotFound.
func (q *Query) Service(name string) ([]InstanceView, error) {
	return q.Find(name, Filter{Reports: true})
}

// Alerts returns up to limit alerts, newest first, raised at or above height
// minHeight.
func (q *Query) Alerts(minHeight int64, limit int) ([]types.Alert, error) {
	all, err := scan[types.Alert](q.r, prefixAlert)
	if err != nil {
		return nil, fmt.Errorf("read alerts: %w", err)
	}
	start := 0
	for start < len(all) && all[start].Height < minHeight {
		start++
	}
	all = all[start:]
	// Newest first.
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

// Standing is an observer's record over the standing window.
type Standing struct {
	Observer  types.Observer
	Agreed    uint64 // reports that agreed with the agreed verdict
	Disagreed uint64 // reports that disagreed
	Suspect   bool
	// SuspectHeight is the height at which the observer became suspect.
	SuspectHeight int64
}

// Standings lists every observer's standing, by observer id. Counts outside
// the window as of the version's block time are left out.
func (q *Query) Standings() ([]Standing, error) {
	out := make([]Standing, 0, len(q.observers))
	for _, o := range q.observers {
		s := Standing{Observer: o}
		bz, err := q.r.Get(standingKey(o.Id))
		if err != nil {
			return nil, fmt.Errorf("read standing of %s: %w", o.Id, err)
		}
		if bz != nil {
			var st types.ObserverStanding
			if err := st.Unmarshal(bz); err != nil {
				return nil, fmt.Errorf("decode standing of %s: %w", o.Id, err)
			}
			st.Buckets = windowed(st.Buckets, q.meta.TimeMs)
			s.Agreed, s.Disagreed = Counts(&st)
			s.Suspect, s.SuspectHeight = st.Suspect, st.SuspectHeight
		}
		out = append(out, s)
	}
	return out, nil
}
