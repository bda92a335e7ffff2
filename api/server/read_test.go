package server_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/store"
)

// readNet is a real app behind the API with two observers in two
// datacenters and three instances of "web":
//
//	web-1 dc1 [primary] ver=1  passing  (o1 1 ms, o2 30 ms)
//	web-2 dc2 []        ver=2  passing  (o1 40 ms, o2 1 ms)
//	web-3 dc1 [canary]  ver=1  critical (o1 2 ms, o2 50 ms)
type readNet struct {
	t   *testing.T
	c   *api.Client
	url string
	srv *server.Server
	b   *backend
}

func newReadNet(t *testing.T) *readNet {
	st := store.NewMemory()
	a, err := app.New(st)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(n string) string { return base64.StdEncoding.EncodeToString(key(n).Public().(ed25519.PublicKey)) }
	g := &app.Genesis{
		Observers: []app.GenesisObserver{
			{Name: "o1", PubKey: pub("o1"), Datacenter: "dc1", Weight: 1},
			{Name: "o2", PubKey: pub("o2"), Datacenter: "dc2", Weight: 1},
		},
		Operators: []app.GenesisOperator{{Name: "root", PubKey: pub("root"), Prefixes: []string{""}}},
	}
	if err := a.InitChain("srv-test", g); err != nil {
		t.Fatal(err)
	}
	b := &backend{st: st, a: a}
	srv := server.New(b, server.Config{}, slog.New(slog.DiscardHandler))
	b.committed = srv.Committed
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	n := &readNet{t: t, c: api.NewClient(hs.URL), url: hs.URL, srv: srv, b: b}
	for _, in := range []struct {
		id, dc, tag, ver string
	}{{"web-1", "dc1", "primary", "1"}, {"web-2", "dc2", "", "2"}, {"web-3", "dc1", "canary", "1"}} {
		si := types.ServiceInstance{Name: "web", Id: in.id, Address: "10.0.0." + in.id[4:], Port: 80, Datacenter: in.dc,
			Meta:   []types.Pair{{Key: "ver", Value: in.ver}},
			Checks: []types.Check{{Id: "p", Kind: "passive", TtlMs: 600_000}}}
		if in.tag != "" {
			si.Tags = []string{in.tag}
		}
		n.register(si)
	}
	lat := map[string][2]int64{"web-1": {1000, 30000}, "web-2": {40000, 1000}, "web-3": {2000, 50000}}
	for i, o := range []string{"o1", "o2"} {
		var obs []types.Observation
		for _, id := range []string{"web-1", "web-2", "web-3"} {
			st := types.STATUS_PASSING
			if id == "web-3" {
				st = types.STATUS_CRITICAL
			}
			obs = append(obs, types.Observation{Service: "web", Instance: id, Check: "p", Status: st, LatencyUs: lat[id][i], Output: st.Name()})
		}
		n.send(o, types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs}}})
	}
	// Key/value entries and a lock held by a session of web-1, for the
	// proven reads of /v1/kv and /v1/session.
	for _, kv := range []string{"cfg/a", "cfg/b", "cfg/sub/c"} {
		n.send("root", types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: kv, Value: []byte("v of " + kv), Flags: 7}}})
	}
	tx, err := n.c.Sign(context.Background(), key("root"), types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: &types.SessionCreate{Service: "web", Instance: "web-1", Name: "leader"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := n.c.BroadcastTx(context.Background(), tx); err != nil || res.Code != 0 {
		t.Fatalf("session create: %+v %v", res, err)
	}
	n.send("root", types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: "cfg/lock", Value: []byte("web-1"), Acquire: api.SessionID(tx)}}})
	// One more block, so that the lock is provable (at the latest minus one).
	n.send("root", types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: "other/x"}}})
	return n
}

func (n *readNet) send(signer string, msg types.Msg) api.TxResult {
	n.t.Helper()
	tx, err := n.c.Sign(context.Background(), key(signer), msg)
	if err != nil {
		n.t.Fatal(err)
	}
	res, err := n.c.BroadcastTx(context.Background(), tx)
	if err != nil || res.Code != 0 {
		n.t.Fatalf("tx by %s: %+v, %v", signer, res, err)
	}
	return res
}

func (n *readNet) register(si types.ServiceInstance) api.TxResult {
	return n.send("root", types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: si}}})
}

// get fetches path and decodes its JSON body into out, returning the
// response.
func (n *readNet) get(path string, out any) *http.Response {
	n.t.Helper()
	resp, err := http.Get(n.url + path)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	bz, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		n.t.Fatalf("GET %s: HTTP %d %s", path, resp.StatusCode, bz)
	}
	if err := json.Unmarshal(bz, out); err != nil {
		n.t.Fatalf("GET %s: %v in %s", path, err, bz)
	}
	return resp
}

func ids(insts []api.Instance) string {
	var s []string
	for _, in := range insts {
		s = append(s, in.ID)
	}
	return strings.Join(s, ",")
}

func TestFilters(t *testing.T) {
	n := newReadNet(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts api.QueryOptions
		want string
	}{
		{"all", api.QueryOptions{}, "web-1,web-2,web-3"},
		{"passing", api.QueryOptions{Status: []string{"passing"}}, "web-1,web-2"},
		{"critical", api.QueryOptions{Status: []string{"critical"}}, "web-3"},
		{"either", api.QueryOptions{Status: []string{"critical", "passing"}}, "web-1,web-2,web-3"},
		{"disputed none", api.QueryOptions{Status: []string{"disputed"}}, ""},
		{"tag", api.QueryOptions{Tags: []string{"primary"}}, "web-1"},
		{"two tags", api.QueryOptions{Tags: []string{"primary", "canary"}}, ""},
		{"dc", api.QueryOptions{Datacenter: "dc2"}, "web-2"},
		{"meta", api.QueryOptions{Meta: map[string]string{"ver": "1"}}, "web-1,web-3"},
		{"meta and status", api.QueryOptions{Meta: map[string]string{"ver": "1"}, Status: []string{"passing"}}, "web-1"},
		{"near own dc first", api.QueryOptions{Near: "dc2"}, "web-2,web-1,web-3"},
		{"near dc1", api.QueryOptions{Near: "dc1"}, "web-1,web-3,web-2"},
		{"near passing", api.QueryOptions{Near: "dc2", Status: []string{"passing"}}, "web-2,web-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			insts, meta, err := n.c.Service(ctx, "web", &tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(insts); got != tc.want {
				t.Fatalf("instances %q, want %q", got, tc.want)
			}
			if meta.Index < 1 {
				t.Fatalf("index %d", meta.Index)
			}
		})
	}
	// Distances: dc2's observer measured dc1's instances at 30 and 50 ms.
	insts, _, err := n.c.Service(ctx, "web", &api.QueryOptions{Near: "dc2"})
	if err != nil {
		t.Fatal(err)
	}
	var dist []string
	for _, in := range insts {
		if in.DistanceMs == nil {
			t.Fatalf("%s has no distance", in.ID)
		}
		dist = append(dist, fmt.Sprint(*in.DistanceMs))
	}
	if got := strings.Join(dist, ","); got != "0,40,40" {
		t.Fatalf("distances %s, want 0,40,40", got)
	}
	if insts[0].Status != "passing" || insts[2].Status != "critical" || insts[2].Verdict != "critical" {
		t.Fatalf("statuses: %+v", insts)
	}

	list, _, err := n.c.Services(ctx, &api.QueryOptions{Tags: []string{"canary"}})
	if err != nil || len(list) != 1 || list[0].Instances != 1 || list[0].Status != "critical" || !slices.Equal(list[0].Tags, []string{"canary"}) {
		t.Fatalf("services with tag canary: %+v, %v", list, err)
	}
	list, _, err = n.c.Services(ctx, nil)
	if err != nil || len(list) != 1 || list[0].Instances != 3 || list[0].Status != "critical" || !slices.Equal(list[0].Tags, []string{"canary", "primary"}) {
		t.Fatalf("services: %+v, %v", list, err)
	}
	if list, _, err = n.c.Services(ctx, &api.QueryOptions{Datacenter: "dc9"}); err != nil || len(list) != 0 {
		t.Fatalf("services in dc9: %+v, %v", list, err)
	}
	var check api.Check
	n.get("/v1/checks/web/web-3/p", &check)
	if check.ID != "p" || check.HardStatus != "critical" || len(check.Observers) != 2 {
		t.Fatalf("check: %+v", check)
	}
}

func TestBadReads(t *testing.T) {
	n := newReadNet(t)
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/v1/services/web?index=-1", 400, "parameter index="},
		{"/v1/services/web?index=x", 400, "parameter index="},
		{"/v1/services/web?wait=soon", 400, "parameter wait="},
		{"/v1/services/web?status=bogus", 400, "parameter status=\\\"bogus\\\""},
		{"/v1/services/web?statu=passing", 400, "unknown parameter \\\"statu\\\""},
		{"/v1/services?near=dc1", 400, "unknown parameter \\\"near\\\""},
		{"/v1/alerts?limit=0", 400, "parameter limit="},
		{"/v1/observers?index=1&wait=-1s", 400, "parameter wait="},
		{"/v1/services/nope", 404, "service \\\"nope\\\" is not registered"},
		{"/v1/checks/web/web-1/nope", 404, "check web/web-1/nope is not registered"},
		{"/v1/nothing", 404, "no route"},
		{"/v1/health/service/web?filter=Service.Port==80", 400, "parameter filter="},
		{"/v1/sd/prometheus?status=nope", 400, "parameter status="},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(n.url + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			bz, _ := io.ReadAll(resp.Body)
			var e api.Error
			if resp.StatusCode != tc.code || json.Unmarshal(bz, &e) != nil || !strings.Contains(string(bz), tc.want) {
				t.Fatalf("HTTP %d %s, want %d with a JSON error containing %s", resp.StatusCode, bz, tc.code, tc.want)
			}
		})
	}
}

// consulEntry is the part of Consul's /v1/health/service answer checked here.
type consulEntry struct {
	Node struct {
		Node, Address, Datacenter string
		TaggedAddresses           map[string]string
	}
	Service struct {
		ID, Service, Address string
		Port                 int
		Tags                 []string
		Meta                 map[string]string
	}
	Checks []struct{ CheckID, Status, ServiceID string }
}

func TestConsulAPI(t *testing.T) {
	n := newReadNet(t)
	var self struct{ Config struct{ Datacenter string } }
	n.get("/v1/agent/self", &self)
	if self.Config.Datacenter != "dc1" { // no observer here: the first datacenter
		t.Fatalf("agent/self datacenter %q", self.Config.Datacenter)
	}
	var services map[string][]string
	resp := n.get("/v1/catalog/services", &services)
	if len(services) != 1 || !slices.Equal(services["web"], []string{"canary", "primary"}) {
		t.Fatalf("catalog services %v", services)
	}
	for _, h := range []string{"X-Consul-Index", "X-Consul-LastContact", "X-Consul-KnownLeader"} {
		if resp.Header.Get(h) == "" {
			t.Fatalf("no %s header", h)
		}
	}
	n.get("/v1/catalog/services?dc=dc2", &services)
	if len(services) != 1 || len(services["web"]) != 0 {
		t.Fatalf("catalog services in dc2 %v", services)
	}

	var entries []consulEntry
	resp = n.get("/v1/health/service/web", &entries)
	index, _ := strconv.ParseInt(resp.Header.Get("X-Consul-Index"), 10, 64)
	if len(entries) != 3 || index < 1 {
		t.Fatalf("health: %d entries, index %d", len(entries), index)
	}
	e := entries[2]
	if e.Node.Node != "web-3" || e.Node.Address != "10.0.0.3" || e.Node.Datacenter != "dc1" || e.Service.ID != "web-3" || e.Service.Service != "web" ||
		e.Service.Port != 80 || e.Service.Meta["ver"] != "1" || e.Service.Meta["bftmon_status"] != "critical" ||
		len(e.Checks) != 1 || e.Checks[0].Status != "critical" || e.Checks[0].ServiceID != "web-3" {
		t.Fatalf("health entry %+v", e)
	}
	n.get("/v1/health/service/web?passing", &entries)
	if len(entries) != 2 || entries[0].Service.ID != "web-1" || entries[1].Service.ID != "web-2" {
		t.Fatalf("passing: %+v", entries)
	}
	n.get("/v1/health/service/web?tag=canary&tag=primary", &entries)
	if len(entries) != 0 {
		t.Fatalf("two tags: %+v", entries)
	}
	n.get("/v1/health/service/web?dc=dc1&passing=true", &entries)
	if len(entries) != 1 || entries[0].Service.ID != "web-1" {
		t.Fatalf("dc1 passing: %+v", entries)
	}
	resp = n.get("/v1/health/service/nope", &entries)
	if len(entries) != 0 || resp.Header.Get("X-Consul-Index") == "" {
		t.Fatalf("unknown service: %+v, index %q", entries, resp.Header.Get("X-Consul-Index"))
	}
	var catalog []struct {
		ServiceID, ServiceAddress, Datacenter string
		ServicePort                           int
	}
	n.get("/v1/catalog/service/web?tag=primary", &catalog)
	if len(catalog) != 1 || catalog[0].ServiceID != "web-1" || catalog[0].ServicePort != 80 || catalog[0].ServiceAddress != "10.0.0.1" {
		t.Fatalf("catalog service: %+v", catalog)
	}
}

func TestPrometheusSD(t *testing.T) {
	n := newReadNet(t)
	n.register(types.ServiceInstance{Name: "db", Id: "db-1", Address: "10.0.1.1", Port: 5432, Datacenter: "dc2",
		Meta:   []types.Pair{{Key: "role.name", Value: "primary"}},
		Checks: []types.Check{{Id: "p", Kind: "passive", TtlMs: 600_000}}})
	// Without an address (a batch job, say) an instance is no target.
	n.register(types.ServiceInstance{Name: "db", Id: "db-job", Datacenter: "dc2", Checks: []types.Check{{Id: "p", Kind: "passive", TtlMs: 600_000}}})
	var groups []struct {
		Targets []string
		Labels  map[string]string
	}
	resp := n.get("/v1/sd/prometheus", &groups)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	if len(groups) != 4 {
		t.Fatalf("%d groups, want 4: %+v", len(groups), groups)
	}
	db := groups[0]
	if !slices.Equal(db.Targets, []string{"10.0.1.1:5432"}) || db.Labels["__meta_bftmon_service"] != "db" || db.Labels["__meta_bftmon_instance"] != "db-1" ||
		db.Labels["__meta_bftmon_datacenter"] != "dc2" || db.Labels["__meta_bftmon_status"] != "pending" || db.Labels["__meta_bftmon_meta_role_name"] != "primary" {
		t.Fatalf("db group %+v", db)
	}
	n.get("/v1/sd/prometheus?service=web&tag=canary", &groups)
	if len(groups) != 1 || groups[0].Labels["__meta_bftmon_tags"] != ",canary," || groups[0].Labels["__meta_bftmon_status"] != "critical" {
		t.Fatalf("web canary: %+v", groups)
	}
	n.get("/v1/sd/prometheus?service=nope", &groups)
	if len(groups) != 0 {
		t.Fatalf("unknown service: %+v", groups)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBlockingQuery(t *testing.T) {
	n := newReadNet(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, meta, err := n.c.Service(ctx, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		insts []api.Instance
		meta  api.QueryMeta
		err   error
	}
	done := make(chan result, 1)
	go func() {
		insts, m, err := n.c.Service(ctx, "web", &api.QueryOptions{WaitIndex: meta.Index, WaitTime: time.Minute})
		done <- result{insts, m, err}
	}()
	waitFor(t, "the query to block", func() bool { return n.srv.Waiting() == 1 })

	// Another service's registration moves the catalog, not web's answer.
	other := n.register(types.ServiceInstance{Name: "db", Id: "db-1", Address: "10.0.1.1", Port: 5432, Datacenter: "dc1",
		Checks: []types.Check{{Id: "p", Kind: "passive", TtlMs: 600_000}}})
	// An observer's unchanged report refreshes freshness only.
	n.send("o1", types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: []types.Observation{
		{Service: "web", Instance: "web-1", Check: "p", Status: types.STATUS_PASSING, Unchanged: true}}}}})
	select {
	case r := <-done:
		t.Fatalf("returned before web changed: index %d, %v", r.meta.Index, r.err)
	default:
	}
	if n.srv.Waiting() != 1 {
		t.Fatalf("%d topics waited on, want 1", n.srv.Waiting())
	}

	// web-1 turns critical by both observers: web's agreed state changes.
	var last api.TxResult
	for _, o := range []string{"o1", "o2"} {
		last = n.send(o, types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: []types.Observation{
			{Service: "web", Instance: "web-1", Check: "p", Status: types.STATUS_CRITICAL, Output: "down"}}}}})
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.meta.Index <= other.Height || r.meta.Index > last.Height || r.insts[0].Checks[0].Status == "passing" {
		t.Fatalf("answered at index %d (db registered at %d, web-1 critical by %d): %+v", r.meta.Index, other.Height, last.Height, r.insts[0].Checks[0])
	}
	waitFor(t, "the topic to be released", func() bool { return n.srv.Waiting() == 0 })

	_, now, err := n.c.Service(ctx, "web", nil)
	if err != nil || now.Index < r.meta.Index {
		t.Fatalf("index now %d, %v", now.Index, err)
	}
	// A wait that runs out answers with the same index.
	_, m, err := n.c.Service(ctx, "web", &api.QueryOptions{WaitIndex: now.Index, WaitTime: 50 * time.Millisecond})
	if err != nil || m.Index != now.Index {
		t.Fatalf("timed-out wait: index %d, %v; want %d", m.Index, err, now.Index)
	}
	// An index from before the last change answers at once.
	_, m, err = n.c.Service(ctx, "web", &api.QueryOptions{WaitIndex: meta.Index, WaitTime: time.Minute})
	if err != nil || m.Index != now.Index {
		t.Fatalf("older index: %d, %v", m.Index, err)
	}
	// Alerts and the catalog block on their own indexes.
	_, am, err := n.c.Alerts(ctx, nil)
	if err != nil || am.Index < 1 {
		t.Fatalf("alerts index %d, %v", am.Index, err)
	}
	var services map[string][]string
	resp := n.get("/v1/catalog/services", &services)
	if got := resp.Header.Get("X-Consul-Index"); got != strconv.FormatInt(other.Height, 10) {
		t.Fatalf("catalog index %s, want %d (db's registration)", got, other.Height)
	}
}

// TestReadsSayTheirHeight: every read says the committed height it was read
// at, that block's time, and its age, whatever route and cache served it.
func TestReadsSayTheirHeight(t *testing.T) {
	n := newReadNet(t)
	for _, path := range []string{"/v1/services", "/v1/services/web", "/v1/health/service/web", "/v1/sd/prometheus", "/v1/services/web"} {
		var out any
		resp := n.get(path, &out)
		h, _ := strconv.ParseInt(resp.Header.Get(server.HeaderHeight), 10, 64)
		bt, err := time.Parse(time.RFC3339Nano, resp.Header.Get(server.HeaderBlockTime))
		age, aerr := strconv.ParseFloat(resp.Header.Get(server.HeaderAge), 64)
		if h < 1 || err != nil || bt.IsZero() || aerr != nil || age < 0 {
			t.Fatalf("%s: height %q, block time %q, age %q", path, resp.Header.Get(server.HeaderHeight), resp.Header.Get(server.HeaderBlockTime), resp.Header.Get(server.HeaderAge))
		}
	}
}
