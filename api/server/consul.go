package server

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// The Consul-compatible subset: enough of Consul's catalog, health and
// agent API, in Consul's JSON shapes, for Prometheus' consul_sd_configs and
// other Consul-speaking tools to work unchanged. Each bftmon instance shows
// as a Consul node of its own named by the instance id, running one service
// instance. A check's Consul Status is its agreed hard status (unknown and
// pending map to critical, as Consul maps a plugin's exit code 3 and a new
// check); the verdict, which may be disputed or stale while the hard status
// holds, is in the service's Meta (bftmon_status, bftmon_verdict) and in the
// check's Output.
//
// As in Consul, ?dc= selects a datacenter's catalog: here, the instances
// registered in that datacenter. A datacenter that is neither an observer's
// nor an instance's is answered as Consul answers one it has no route to:
// HTTP 500, "No path to datacenter". Consul's parameters that do not change an
// answer here (stale, consistent, cached, ns, partition) are accepted and
// ignored; filter and node-meta, which would, are refused.

func (s *Server) consulRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/agent/self", unprovable(s.consulAgentSelf))
	mux.HandleFunc("GET /v1/status/leader", unprovable(s.consulLeader))
	s.provableRoute(mux, "GET /v1/catalog/datacenters", s.consulDatacenters)
	s.provableRoute(mux, "GET /v1/catalog/services", s.consulCatalogServices)
	s.provableRoute(mux, "GET /v1/catalog/service/{name}", s.consulCatalogService)
	s.provableRoute(mux, "GET /v1/health/service/{name}", s.consulHealthService)
	s.provableRoute(mux, "GET /v1/health/checks/{name}", s.consulHealthChecks)
	s.provableRoute(mux, "GET /v1/health/state/{state}", s.consulHealthState)
	s.provableRoute(mux, "GET /v1/agent/services", s.consulAgentServices)
	s.provableRoute(mux, "GET /v1/catalog/nodes", s.consulCatalogNodes)
	mux.HandleFunc("GET /v1/status/peers", unprovable(s.consulPeers))
}

// consulIndex sets the headers Consul's clients read with every answer.
func consulIndex(h http.Header, index int64) {
	h.Set("X-Consul-Index", strconv.FormatInt(index, 10))
	h.Set("X-Consul-KnownLeader", "true")
	h.Set("X-Consul-LastContact", "0")
	bftmonIndex(h, index)
}

// consulParams reads Consul's common parameters, refusing those whose
// meaning bftmon cannot give.
func consulParams(p *params) {
	for _, name := range []string{"filter", "node-meta"} {
		if v := p.str(name); v != "" {
			p.fail(name, v, "not supported by bftmon's Consul-compatible API (use ?tag=, ?dc=, ?passing, or the native /v1/services/{name} with ?meta.KEY=VALUE)")
		}
	}
}

// datacenter is this node's datacenter as Consul reports it: its
// observer's, or, for a node without one, the first observer datacenter.
// A proven read (proving) takes the latter, which the state alone gives:
// an observer node's datacenter is among the observers' anyway.
func (s *Server) datacenter(r *http.Request, q *app.Query) string {
	if !proving(r.Context()) {
		if st, err := s.b.Status(r.Context()); err == nil && st.Datacenter != "" {
			return st.Datacenter
		}
	}
	return cmp.Or(slices.Min(append(datacenters(q, nil), "dc1")), "dc1")
}

// datacenters lists the datacenters of the observers and of insts, sorted.
func datacenters(q *app.Query, insts []types.ServiceInstance) []string {
	var out []string
	for _, o := range q.Observers() {
		out = append(out, o.Datacenter)
	}
	for i := range insts {
		out = append(out, insts[i].Datacenter)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// errNoDCPath is Consul's answer for a datacenter it does not know
// (structs.ErrNoDCPath), which its clients and tools match on.
const errNoDCPath = "No path to datacenter"

// consulParseDC parses a Consul read's parameters, its ?dc= and the
// accepted-but-unused ones named in ignored. ok is false when it has
// answered.
func (s *Server) consulParseDC(w http.ResponseWriter, r *http.Request, ignored ...string) (b blocking, dc string, ok bool) {
	b, ok = parse(w, r, true, func(p *params) {
		consulParams(p)
		dc = p.str("dc")
		for _, name := range ignored {
			p.str(name)
		}
	})
	return b, dc, ok
}

// consulKnownDC fails with Consul's answer, 500 with a plain-text body, if
// dc (from ?dc=; empty: this node's) is not one bftmon knows in q: this
// node's, an observer's or an instance's.
func (s *Server) consulKnownDC(r *http.Request, q *app.Query, dc string) error {
	if dc == "" {
		return nil
	}
	insts, err := q.Instances()
	if err != nil {
		return err
	}
	if slices.Contains(datacenters(q, insts), dc) || dc == s.datacenter(r, q) {
		return nil
	}
	return &textError{code: http.StatusInternalServerError, msg: errNoDCPath}
}

type consulSelf struct {
	Config consulConfig
	Member consulMember
	Meta   map[string]string
}

type consulConfig struct {
	Datacenter string
	NodeName   string
	NodeID     string
	Server     bool
	Revision   string
	Version    string
}

type consulMember struct {
	Name   string
	Addr   string
	Port   int
	Tags   map[string]string
	Status int
}

func (s *Server) consulAgentSelf(w http.ResponseWriter, r *http.Request) {
	q, err := s.b.Read()
	if err != nil {
		s.fail(w, err)
		return
	}
	st, err := s.b.Status(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	dc := s.datacenter(r, q)
	name := cmp.Or(st.ObserverName, st.NodeID)
	writeJSON(w, http.StatusOK, consulSelf{
		Config: consulConfig{Datacenter: dc, NodeName: name, NodeID: st.NodeID, Server: true, Revision: st.AppHash, Version: "bftmon-" + st.Version},
		Member: consulMember{Name: name, Addr: hostOf(r.Host), Tags: map[string]string{"dc": dc, "role": "bftmon"}, Status: 1},
		Meta:   map[string]string{"bftmon_chain_id": st.ChainID},
	})
}

func hostOf(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i > 0 {
		return strings.Trim(hostport[:i], "[]")
	}
	return hostport
}

func (s *Server) consulLeader(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, r.Host)
}

func (s *Server) consulDatacenters(w http.ResponseWriter, r *http.Request) {
	b, ok := parse(w, r, true, func(*params) {})
	if !ok {
		return
	}
	b.on = false // Consul does not block here
	s.read(w, r, topicCatalog, b, func(q *app.Query) (int64, any, error) {
		insts, err := q.Instances()
		if err != nil {
			return 0, nil, err
		}
		return q.Indexes().Catalog, datacenters(q, insts), nil
	}, bftmonIndex)
}

func (s *Server) consulCatalogServices(w http.ResponseWriter, r *http.Request) {
	b, dc, ok := s.consulParseDC(w, r)
	if !ok {
		return
	}
	s.read(w, r, topicCatalog, b, func(q *app.Query) (int64, any, error) {
		if err := s.consulKnownDC(r, q, dc); err != nil {
			return 0, nil, err
		}
		insts, err := q.Instances()
		if err != nil {
			return 0, nil, err
		}
		out := map[string][]string{}
		for i := range insts {
			si := &insts[i]
			if dc != "" && si.Datacenter != dc {
				continue
			}
			tags := out[si.Name]
			if tags == nil {
				tags = []string{}
			}
			for _, t := range si.Tags {
				if !slices.Contains(tags, t) {
					tags = append(tags, t)
				}
			}
			slices.Sort(tags)
			out[si.Name] = tags
		}
		return q.Indexes().Catalog, out, nil
	}, consulIndex)
}

// consulFind reads the common parameters of the per-service routes and
// the instances they select, with the service's index.
func (s *Server) consulFind(w http.ResponseWriter, r *http.Request, read func(insts []app.InstanceView, index int64) any) {
	name := r.PathValue("name")
	var f app.Filter
	var passing bool
	b, ok := parse(w, r, true, func(p *params) {
		consulParams(p)
		f.Tags, f.Datacenter, f.Near = p.list("tag"), p.str("dc"), p.str("near")
		passing = p.flag("passing")
		if f.Near == "_agent" && proving(r.Context()) {
			p.fail("near", f.Near, "this node's own datacenter is no part of the agreed state, which a proof shows: name the datacenter")
		}
	})
	if !ok {
		return
	}
	s.read(w, r, serviceTopic(name), b, func(q *app.Query) (int64, any, error) {
		if err := s.consulKnownDC(r, q, f.Datacenter); err != nil {
			return 0, nil, err
		}
		if f.Near == "_agent" {
			f.Near = s.datacenter(r, q)
		}
		index, err := q.ServiceIndex(name)
		if err != nil {
			return 0, nil, err
		}
		insts, err := q.Find(name, f)
		if err != nil && !errors.Is(err, app.ErrNotFound) { // Consul answers [] for an unknown service
			return 0, nil, err
		}
		if passing {
			insts = slices.DeleteFunc(insts, func(iv app.InstanceView) bool { return iv.Status != types.STATUS_PASSING })
		}
		return index, read(insts, index), nil
	}, consulIndex)
}

// consulStatus is the Consul status for an agreed hard status.
func consulStatus(s types.Status) string {
	switch s {
	case types.STATUS_PASSING:
		return "passing"
	case types.STATUS_WARNING:
		return "warning"
	default:
		return "critical"
	}
}

type consulCatalogService struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string
	ServiceID       string
	ServiceName     string
	ServiceTags     []string
	ServiceAddress  string
	ServiceMeta     map[string]string
	ServicePort     int
	ServiceWeights  consulWeights
	CreateIndex     int64
	ModifyIndex     int64
}

func (s *Server) consulCatalogService(w http.ResponseWriter, r *http.Request) {
	s.consulFind(w, r, func(insts []app.InstanceView, index int64) any {
		out := make([]consulCatalogService, 0, len(insts))
		for i := range insts {
			n, svc := consulEntry(&insts[i])
			out = append(out, consulCatalogService{
				Node: n.Node, Address: n.Address, Datacenter: n.Datacenter, TaggedAddresses: n.TaggedAddresses, NodeMeta: n.Meta,
				ServiceID: svc.ID, ServiceName: svc.Service, ServiceTags: svc.Tags, ServiceAddress: svc.Address, ServiceMeta: svc.Meta,
				ServicePort: svc.Port, ServiceWeights: svc.Weights, CreateIndex: svc.CreateIndex, ModifyIndex: svc.ModifyIndex,
			})
		}
		return out
	})
}

type consulNode struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	CreateIndex     int64
	ModifyIndex     int64
}

type consulService struct {
	ID          string
	Service     string
	Tags        []string
	Address     string
	Meta        map[string]string
	Port        int
	Weights     consulWeights
	CreateIndex int64
	ModifyIndex int64
}

// consulWeights are Consul's DNS SRV weights of a service instance by its
// health. bftmon has no weights of its own, so every instance has Consul's
// defaults, the same in health and catalog answers.
type consulWeights struct{ Passing, Warning int }

type consulCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	CreateIndex int64
	ModifyIndex int64
}

type consulServiceEntry struct {
	Node    consulNode
	Service consulService
	Checks  []consulCheck
}

// instanceModifyIndex is the height at which what an entry shows of iv
// last changed: its registration, or a check's verdict or hard status.
// Approximated: bftmon records no height for a re-registration that keeps
// the instance's checks (new tags, address or meta), so such an update does
// not move it; a re-registration that changes a check does, through that
// check's fresh state.
func instanceModifyIndex(iv *app.InstanceView) int64 {
	index := iv.Instance.RegisteredHeight
	for i := range iv.Checks {
		index = max(index, checkModifyIndex(&iv.Checks[i], iv.Instance.RegisteredHeight))
	}
	return index
}

// checkModifyIndex is the height at which a check's agreed state last
// moved, and at least created, its instance's registration height.
func checkModifyIndex(cv *app.CheckView, created int64) int64 {
	return max(cv.State.VerdictHeight, cv.State.HardHeight, created)
}

// consulEntry is an instance as a Consul node and service. Each carries its
// own indexes, as in Consul, so that a change to one instance changes no
// other entry: the service's move with its checks (instanceModifyIndex);
// the node's, which shows no health, is its registration's.
func consulEntry(iv *app.InstanceView) (consulNode, consulService) {
	si := &iv.Instance
	index := instanceModifyIndex(iv)
	n := consulNode{
		Node: si.Id, Address: si.Address, Datacenter: si.Datacenter,
		TaggedAddresses: map[string]string{"lan": si.Address, "wan": si.Address},
		Meta:            map[string]string{}, CreateIndex: si.RegisteredHeight, ModifyIndex: si.RegisteredHeight,
	}
	meta := map[string]string{}
	for _, p := range si.Meta {
		meta[p.Key] = p.Value
	}
	meta["bftmon_status"] = iv.Status.Name()
	meta["bftmon_verdict"] = iv.Verdict().Name()
	meta["bftmon_datacenter"] = si.Datacenter
	tags := si.Tags
	if tags == nil {
		tags = []string{}
	}
	svc := consulService{
		ID: si.Id, Service: si.Name, Tags: tags, Address: si.Address, Meta: meta, Port: int(si.Port),
		Weights: consulWeights{Passing: 1, Warning: 1}, CreateIndex: si.RegisteredHeight, ModifyIndex: index,
	}
	return n, svc
}

func (s *Server) consulHealthService(w http.ResponseWriter, r *http.Request) {
	s.consulFind(w, r, func(insts []app.InstanceView, _ int64) any {
		out := make([]consulServiceEntry, 0, len(insts))
		for i := range insts {
			iv := &insts[i]
			n, svc := consulEntry(iv)
			out = append(out, consulServiceEntry{Node: n, Service: svc, Checks: consulChecks(iv, n, svc)})
		}
		return out
	})
}

// consulChecks are iv's checks as Consul service checks of node n and
// service svc, each with its own indexes.
func consulChecks(iv *app.InstanceView, n consulNode, svc consulService) []consulCheck {
	out := make([]consulCheck, 0, len(iv.Checks))
	for j := range iv.Checks {
		cv := &iv.Checks[j]
		out = append(out, consulCheck{
			Node: n.Node, CheckID: "service:" + svc.ID + ":" + cv.Check.Id, Name: cv.Check.Id,
			Status: consulStatus(cv.State.Hard),
			Notes:  "agreed by bftmon's observers",
			Output: fmt.Sprintf("bftmon: %s (verdict %s since height %d, hard %s since height %d)",
				cv.State.Hard.Name(), cv.State.Verdict.Name(), cv.State.VerdictHeight, cv.State.Hard.Name(), cv.State.HardHeight),
			ServiceID: svc.ID, ServiceName: svc.Service, ServiceTags: svc.Tags, Type: cv.Check.Kind,
			CreateIndex: n.CreateIndex, ModifyIndex: checkModifyIndex(cv, n.CreateIndex),
		})
	}
	return out
}

// consulHealthChecks answers /v1/health/checks/{service}: the checks of the
// service's instances, with the same parameters as /v1/health/service.
func (s *Server) consulHealthChecks(w http.ResponseWriter, r *http.Request) {
	s.consulFind(w, r, func(insts []app.InstanceView, _ int64) any {
		out := []consulCheck{}
		for i := range insts {
			n, svc := consulEntry(&insts[i])
			out = append(out, consulChecks(&insts[i], n, svc)...)
		}
		return out
	})
}

// consulHealthState answers /v1/health/state/{state}: every check whose
// Consul status is state (any: all), across services. bftmon has no
// node-level checks (Consul's serfHealth), so only service checks are
// listed.
func (s *Server) consulHealthState(w http.ResponseWriter, r *http.Request) {
	state := r.PathValue("state")
	if !slices.Contains([]string{"any", "passing", "warning", "critical"}, state) {
		consulText(w, http.StatusBadRequest, "Bad check state")
		return
	}
	b, dc, ok := s.consulParseDC(w, r)
	if !ok {
		return
	}
	s.read(w, r, topicState, b, func(q *app.Query) (int64, any, error) {
		if err := s.consulKnownDC(r, q, dc); err != nil {
			return 0, nil, err
		}
		list, err := q.Services()
		if err != nil {
			return 0, nil, err
		}
		out := []consulCheck{}
		for _, sum := range list {
			insts, err := q.Find(sum.Name, app.Filter{Datacenter: dc})
			if err != nil && !errors.Is(err, app.ErrNotFound) {
				return 0, nil, err
			}
			for i := range insts {
				n, svc := consulEntry(&insts[i])
				for _, c := range consulChecks(&insts[i], n, svc) {
					if state == "any" || c.Status == state {
						out = append(out, c)
					}
				}
			}
		}
		return q.Indexes().State, out, nil
	}, consulIndex)
}

// consulText answers with a plain-text body, as Consul's errors are.
func consulText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

type consulAgentService struct {
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	TaggedAddresses   map[string]consulServiceAddress
	Weights           consulWeights
	EnableTagOverride bool
	Datacenter        string
}

type consulServiceAddress struct {
	Address string
	Port    int
}

// consulAgentServices answers /v1/agent/services, a map of service id to
// service. Approximated: a bftmon node has no services of its own (no
// agent-local registrations); every node holds the whole agreed catalog,
// so its "agent" lists every registered instance, in every datacenter. An
// instance's id is unique within its service only: ids that two services
// share are keyed, and shown, as service/id.
func (s *Server) consulAgentServices(w http.ResponseWriter, r *http.Request) {
	b, ok := parse(w, r, true, consulParams)
	if !ok {
		return
	}
	b.on = false // Consul blocks here on a content hash (?hash=), not an index
	s.read(w, r, topicState, b, func(q *app.Query) (int64, any, error) {
		insts, err := q.Instances()
		if err != nil {
			return 0, nil, err
		}
		count := map[string]int{}
		for i := range insts {
			count[insts[i].Id]++
		}
		list, err := q.Services()
		if err != nil {
			return 0, nil, err
		}
		out := map[string]consulAgentService{}
		for _, sum := range list {
			views, err := q.Find(sum.Name, app.Filter{})
			if err != nil && !errors.Is(err, app.ErrNotFound) {
				return 0, nil, err
			}
			for j := range views {
				_, svc := consulEntry(&views[j])
				id := svc.ID
				if count[id] > 1 {
					id = svc.Service + "/" + svc.ID
				}
				out[id] = consulAgentService{
					ID: id, Service: svc.Service, Tags: svc.Tags, Meta: svc.Meta, Port: svc.Port, Address: svc.Address,
					TaggedAddresses: map[string]consulServiceAddress{
						"lan_ipv4": {Address: svc.Address, Port: svc.Port}, "wan_ipv4": {Address: svc.Address, Port: svc.Port},
					},
					Weights: svc.Weights, Datacenter: views[j].Instance.Datacenter,
				}
			}
		}
		return q.Indexes().State, out, nil
	}, consulIndex)
}

// consulCatalogNodes answers /v1/catalog/nodes: each instance is a node of
// its own (see consulEntry), sorted by name as Consul sorts them. ?near is
// accepted and does not change the order. Approximated: instances of two
// services that share an id show as two nodes of that name (Consul's node
// names are unique), ordered by datacenter and address.
func (s *Server) consulCatalogNodes(w http.ResponseWriter, r *http.Request) {
	b, dc, ok := s.consulParseDC(w, r, "near")
	if !ok {
		return
	}
	s.read(w, r, topicCatalog, b, func(q *app.Query) (int64, any, error) {
		if err := s.consulKnownDC(r, q, dc); err != nil {
			return 0, nil, err
		}
		insts, err := q.Instances()
		if err != nil {
			return 0, nil, err
		}
		out := []consulNode{}
		for i := range insts {
			if dc != "" && insts[i].Datacenter != dc {
				continue
			}
			n, _ := consulEntry(&app.InstanceView{Instance: insts[i]})
			out = append(out, n)
		}
		slices.SortFunc(out, func(a, b consulNode) int {
			return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Datacenter, b.Datacenter), cmp.Compare(a.Address, b.Address))
		})
		return q.Indexes().Catalog, out, nil
	}, consulIndex)
}

// consulPeers answers /v1/status/peers, Consul's raft peers as ip:port.
// Approximated: the API does not know the other validators' addresses, so
// it lists this node only, as it is addressed (the same as
// /v1/status/leader).
func (s *Server) consulPeers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, []string{r.Host})
}
