package server

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// The native API: bftmon's own JSON (package api's types), filters, and
// blocking on every read with X-Bftmon-Index.

// filter reads the instance filters a route takes.
func (p *params) filter(near bool) app.Filter {
	f := app.Filter{
		Statuses:   p.statuses(),
		Tags:       p.list("tag"),
		Datacenter: p.str("dc"),
		Meta:       p.meta(),
	}
	if near {
		f.Near = p.str("near")
	}
	return f
}

// parse reads a route's parameters with get, then the blocking ones, and
// answers 400 (naming the parameter) for a bad or unknown one.
func parse(w http.ResponseWriter, r *http.Request, lenient bool, get func(p *params)) (blocking, bool) {
	p := newParams(r.URL)
	get(p)
	b := p.blocking()
	b.proof = p.flag(api.ProofParam)
	if err := p.check(lenient); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return b, false
	}
	return b, true
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	b, ok := parse(w, r, false, func(*params) {})
	if !ok {
		return
	}
	if !b.on {
		// Whether the node commits is no function of a committed version:
		// answered fresh, never from the cache, 503 when it does not.
		st, err := s.b.Status(r.Context())
		if err != nil {
			s.fail(w, err)
			return
		}
		w.Header().Set(api.IndexHeader, strconv.FormatInt(st.Height, 10))
		if !st.Committing {
			writeJSON(w, http.StatusServiceUnavailable, struct {
				api.Status
				Error string `json:"error"`
			}{st, st.Problem})
			return
		}
		writeJSON(w, http.StatusOK, st)
		return
	}
	s.read(w, r, topicBlock, b, func(*app.Query) (int64, any, error) {
		st, err := s.b.Status(r.Context())
		return st.Height, st, err
	}, bftmonIndex)
}

func (s *Server) services(w http.ResponseWriter, r *http.Request) {
	var f app.Filter
	b, ok := parse(w, r, false, func(p *params) { f = p.filter(false) })
	if !ok {
		return
	}
	s.read(w, r, topicState, b, func(q *app.Query) (int64, any, error) {
		list, err := serviceSummaries(q, f)
		return q.Indexes().State, list, err
	}, bftmonIndex)
}

// serviceSummaries lists the services with the instances f keeps; with a
// filter, services keeping none are left out.
func serviceSummaries(q *app.Query, f app.Filter) ([]api.ServiceSummary, error) {
	list, err := q.Services()
	if err != nil {
		return nil, err
	}
	filtered := len(f.Statuses) > 0 || len(f.Tags) > 0 || f.Datacenter != "" || len(f.Meta) > 0
	out := make([]api.ServiceSummary, 0, len(list))
	for _, x := range list {
		sum := api.ServiceSummary{Name: x.Name, Instances: x.Instances, Status: x.Status.Name(), Tags: x.Tags}
		if filtered {
			insts, err := q.Find(x.Name, f)
			if err != nil {
				return nil, err
			}
			if len(insts) == 0 {
				continue
			}
			sum.Instances, sum.Tags = len(insts), nil
			st := types.STATUS_PASSING
			for i := range insts {
				st = worstOf(st, insts[i].Status)
				for _, t := range insts[i].Instance.Tags {
					if !slices.Contains(sum.Tags, t) {
						sum.Tags = append(sum.Tags, t)
					}
				}
			}
			slices.Sort(sum.Tags)
			sum.Status = st.Name()
		}
		if sum.Tags == nil {
			sum.Tags = []string{}
		}
		out = append(out, sum)
	}
	return out, nil
}

func worstOf(a, b types.Status) types.Status {
	if b.Severity() > a.Severity() {
		return b
	}
	return a
}

func (s *Server) service(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var f app.Filter
	b, ok := parse(w, r, false, func(p *params) { f = p.filter(true) })
	if !ok {
		return
	}
	f.Reports = true
	s.read(w, r, serviceTopic(name), b, func(q *app.Query) (int64, any, error) {
		insts, err := q.Find(name, f)
		if errors.Is(err, app.ErrNotFound) {
			return 0, nil, fmt.Errorf("service %q is not registered: %w", name, app.ErrNotFound)
		}
		if err != nil {
			return 0, nil, err
		}
		index, err := q.ServiceIndex(name)
		if err != nil {
			return 0, nil, err
		}
		var dist map[string]float64
		if f.Near != "" {
			dist = app.Distances(insts, f.Near)
		}
		out := make([]api.Instance, 0, len(insts))
		for i := range insts {
			in := Instance(&insts[i])
			if f.Near != "" {
				if insts[i].Instance.Datacenter == f.Near {
					zero := 0.0
					in.DistanceMs = &zero
				} else if d, ok := dist[insts[i].Instance.Datacenter]; ok {
					d = math.Round(d*1000) / 1000
					in.DistanceMs = &d
				}
			}
			out = append(out, in)
		}
		return index, out, nil
	}, bftmonIndex)
}

func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	service, instance, id := r.PathValue("service"), r.PathValue("instance"), r.PathValue("check")
	b, ok := parse(w, r, false, func(*params) {})
	if !ok {
		return
	}
	s.read(w, r, serviceTopic(service), b, func(q *app.Query) (int64, any, error) {
		insts, err := q.Find(service, app.Filter{Reports: true})
		if err != nil && !errors.Is(err, app.ErrNotFound) {
			return 0, nil, err
		}
		for i := range insts {
			if insts[i].Instance.Id != instance {
				continue
			}
			in := Instance(&insts[i])
			for _, c := range in.Checks {
				if c.ID == id {
					index, err := q.ServiceIndex(service)
					return index, c, err
				}
			}
		}
		return 0, nil, fmt.Errorf("check %s is not registered: %w", app.CheckRef(service, instance, id), app.ErrNotFound)
	}, bftmonIndex)
}

func (s *Server) alerts(w http.ResponseWriter, r *http.Request) {
	var limit int
	var service, kind string
	var to []types.Status
	var pending bool
	b, ok := parse(w, r, false, func(p *params) {
		limit = p.limit(100, 1000)
		service, kind = p.str("service"), p.str("kind")
		to = p.statuses()
		pending = p.flag("pending")
	})
	if !ok {
		return
	}
	s.read(w, r, topicAlerts, b, func(q *app.Query) (int64, any, error) {
		list, err := q.Alerts(0, 0)
		if err != nil {
			return 0, nil, err
		}
		obs := observerIndex(q.Observers())
		out := make([]api.Alert, 0, min(limit, len(list)))
		for _, al := range list {
			if len(out) == limit {
				break
			}
			if service != "" && al.Service != service || kind != "" && al.Kind != kind || len(to) > 0 && !slices.Contains(to, al.To) {
				continue
			}
			ds, err := q.Deliveries(al.Id)
			if err != nil {
				return 0, nil, err
			}
			if pending && len(ds) > 0 {
				continue
			}
			a := api.NewAlert(&al, obs)
			a.Deliveries = make([]api.Delivery, 0, len(ds))
			for _, d := range ds {
				a.Deliveries = append(a.Deliveries, api.Delivery{Receiver: d.Receiver, Observer: d.Observer, Name: obs[d.Observer],
					Height: d.Height, Time: time.UnixMilli(d.TimeMs).UTC(), Acknowledged: d.Acknowledged})
			}
			out = append(out, a)
		}
		return q.Indexes().Alerts, out, nil
	}, bftmonIndex)
}

func (s *Server) observers(w http.ResponseWriter, r *http.Request) {
	var dc string
	b, ok := parse(w, r, false, func(p *params) { dc = p.str("dc") })
	if !ok {
		return
	}
	s.read(w, r, topicObservers, b, func(q *app.Query) (int64, any, error) {
		list, err := q.Standings()
		if err != nil {
			return 0, nil, err
		}
		out := make([]api.Observer, 0, len(list))
		for _, st := range list {
			if dc != "" && st.Observer.Datacenter != dc {
				continue
			}
			o := api.Observer{ID: st.Observer.Id, Name: st.Observer.Name, Datacenter: st.Observer.Datacenter, Weight: st.Observer.Weight,
				Agreed: st.Agreed, Disagreed: st.Disagreed, Suspect: st.Suspect, SuspectHeight: st.SuspectHeight}
			if total := st.Agreed + st.Disagreed; total > 0 {
				o.DisagreedPercent = math.Round(1000*float64(st.Disagreed)/float64(total)) / 10
			}
			stamp, err := q.Stamp(st.Observer.Id)
			if err != nil {
				return 0, nil, err
			}
			if stamp != nil {
				if stamp.Height > 0 {
					at := time.UnixMilli(stamp.TimeMs).UTC()
					o.VouchedAt, o.VouchHeight = &at, stamp.Height
				}
				o.VouchFloorHeight = stamp.FloorHeight
			}
			out = append(out, o)
		}
		return q.Indexes().Observers, out, nil
	}, bftmonIndex)
}

func (s *Server) receivers(w http.ResponseWriter, r *http.Request) {
	b, ok := parse(w, r, false, func(*params) {})
	if !ok {
		return
	}
	s.read(w, r, topicReceivers, b, func(q *app.Query) (int64, any, error) {
		list, err := q.Receivers()
		if err != nil {
			return 0, nil, err
		}
		ops, err := q.Operators()
		if err != nil {
			return 0, nil, err
		}
		out := make([]api.Receiver, 0, len(list))
		for _, rc := range list {
			op := types.KeyID(rc.Operator)
			for _, o := range ops {
				if bytes.Equal(o.PubKey, rc.Operator) {
					op = o.Name
				}
			}
			out = append(out, api.Receiver{Name: rc.Name, PubKey: base64.StdEncoding.EncodeToString(rc.PubKey), KeyID: types.KeyID(rc.PubKey),
				Operator: op, Height: rc.Height})
		}
		return q.Indexes().Receivers, out, nil
	}, bftmonIndex)
}
