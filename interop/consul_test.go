package interop_test

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/consul/api/watch"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/consul"
	"github.com/prometheus/prometheus/discovery/targetgroup"

	"github.com/bftmon/bftmon/app/types"
)

// healthCall is one request Prometheus made to /v1/health/service/web
// through the recording proxy.
type healthCall struct {
	index  uint64 // the ?index it blocked on (0: not blocking)
	wait   string
	phase  int    // the test's phase when the request was sent
	answer uint64 // X-Consul-Index of the answer
}

// recorder is a reverse proxy to the node that records the health calls.
type recorder struct {
	proxy *httputil.ReverseProxy

	mu    sync.Mutex
	phase int
	calls []healthCall
	open  map[*http.Request]healthCall
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/health/service/web" {
		rc.proxy.ServeHTTP(w, r)
		return
	}
	idx, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	rc.mu.Lock()
	call := healthCall{index: idx, wait: r.URL.Query().Get("wait"), phase: rc.phase}
	rc.open[r] = call
	rc.mu.Unlock()
	rc.proxy.ServeHTTP(w, r)
	call.answer, _ = strconv.ParseUint(w.Header().Get("X-Consul-Index"), 10, 64)
	rc.mu.Lock()
	delete(rc.open, r)
	rc.calls = append(rc.calls, call)
	rc.mu.Unlock()
}

// parked tells whether a blocking health call sent in phase is in flight.
func (rc *recorder) parked(phase int) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, c := range rc.open {
		if c.index > 0 && c.phase == phase {
			return true
		}
	}
	return false
}

// TestPrometheusConsulDiscovery runs Prometheus' own Consul service
// discovery (github.com/prometheus/prometheus/discovery/consul, as
// consul_sd_configs uses it) against a real node: it finds exactly the
// registered instances with the labels relabelling rules read, and a
// deregistration reaches it through the blocking query it holds — the
// request parked before the change is the one that brings it.
func TestPrometheusConsulDiscovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	for i, tags := range [][]string{{"v1", "canary"}, {"v1"}, {"v2"}} {
		id := "web-" + strconv.Itoa(i+1)
		tn.register(ctx, t, tn.instance("web", id, "10.1.0."+strconv.Itoa(i+1), 8080, tags, types.Pair{Key: "team", Value: "blue"}))
	}
	tn.register(ctx, t, tn.instance("db", "db-1", "10.2.0.1", 5432, nil))
	tn.waitPassing(ctx, t, "web", 3)
	tn.waitPassing(ctx, t, "db", 1)

	nodeURL, _ := url.Parse("http://" + tn.httpAddr)
	rec := &recorder{proxy: httputil.NewSingleHostReverseProxy(nodeURL), open: map[*http.Request]healthCall{}}
	rec.proxy.ErrorLog = log.New(io.Discard, "", 0) // requests Prometheus cancels when it stops
	proxy := httptest.NewServer(rec)
	defer proxy.Close()

	cfg := consul.DefaultSDConfig
	cfg.Server = strings.TrimPrefix(proxy.URL, "http://")
	cfg.Services = nil // watch the catalog too: /v1/catalog/services
	cfg.RefreshInterval = model.Duration(50 * time.Millisecond)
	reg := prometheus.NewRegistry()
	refresh := discovery.NewRefreshMetrics(reg)
	d, err := consul.NewDiscovery(&cfg, slog.New(slog.DiscardHandler), cfg.NewDiscovererMetrics(reg, refresh))
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []*targetgroup.Group)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go d.Run(runCtx, ch)

	// groups keeps the latest target group per source, as Prometheus'
	// discovery manager does.
	groups := map[string]*targetgroup.Group{}
	// waitGroup reads updates until the group of source satisfies ok.
	waitGroup := func(source, what string, ok func(g *targetgroup.Group) bool) *targetgroup.Group {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			if g := groups[source]; g != nil && ok(g) {
				return g
			}
			select {
			case tgs := <-ch:
				for _, g := range tgs {
					groups[g.Source] = g
				}
			case <-deadline:
				t.Fatalf("timed out waiting for %s; %s group: %+v", what, source, groups[source])
			}
		}
	}

	db := waitGroup("db", "the db instance", func(g *targetgroup.Group) bool { return len(g.Targets) == 1 })
	if db.Targets[0][model.AddressLabel] != "10.2.0.1:5432" {
		t.Errorf("db target %v", db.Targets[0])
	}
	g := waitGroup("web", "the three web instances", func(g *targetgroup.Group) bool { return len(g.Targets) == 3 })
	if g.Labels["__meta_consul_service"] != "web" || g.Labels["__meta_consul_dc"] != "dc1" {
		t.Errorf("group labels %v: want service web in dc1 (the node's datacenter from /v1/agent/self)", g.Labels)
	}
	sort.Slice(g.Targets, func(i, j int) bool { return g.Targets[i][model.AddressLabel] < g.Targets[j][model.AddressLabel] })
	for i, tc := range []struct{ id, addr, tags string }{
		{"web-1", "10.1.0.1:8080", ",v1,canary,"},
		{"web-2", "10.1.0.2:8080", ",v1,"},
		{"web-3", "10.1.0.3:8080", ",v2,"},
	} {
		want := model.LabelSet{
			model.AddressLabel:                             model.LabelValue(tc.addr),
			"__meta_consul_service_id":                     model.LabelValue(tc.id),
			"__meta_consul_node":                           model.LabelValue(tc.id),
			"__meta_consul_tags":                           model.LabelValue(tc.tags),
			"__meta_consul_health":                         "passing",
			"__meta_consul_service_port":                   "8080",
			"__meta_consul_service_metadata_team":          "blue",
			"__meta_consul_service_metadata_bftmon_status": "passing",
			"__meta_consul_tagged_address_lan":             model.LabelValue(strings.Split(tc.addr, ":")[0]),
		}
		for k, v := range want {
			if got := g.Targets[i][k]; got != v {
				t.Errorf("%s: %s = %q, want %q", tc.id, k, got, v)
			}
		}
	}

	// Wait until Prometheus holds a blocking health query, then change web.
	waitFor(t, "Prometheus' blocking query on web to be parked", 30*time.Second, func() (bool, error) { return rec.parked(0), nil })
	rec.mu.Lock()
	rec.phase = 1
	rec.mu.Unlock()
	height := tn.deregister(ctx, t, "web", "web-2")
	g = waitGroup("web", "web-2 gone", func(g *targetgroup.Group) bool { return len(g.Targets) == 2 })
	for _, tg := range g.Targets {
		if tg["__meta_consul_service_id"] == "web-2" {
			t.Errorf("web-2 still listed: %v", g.Targets)
		}
	}
	// The answer with the new index came to a request sent before the
	// change, blocking on the old index: a blocking query, not a poll.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	found := false
	for _, c := range rec.calls {
		if c.answer >= uint64(height) {
			if c.phase != 0 || c.index == 0 || c.wait == "" {
				t.Errorf("the change came with %+v: want a blocking request (index and wait) sent before it", c)
			}
			found = true
			break
		}
	}
	if !found {
		t.Errorf("no health answer at or above height %d among %+v", height, rec.calls)
	}
}

// TestConsulWatchService runs Consul's own watch (api/watch, a "service"
// plan, as `consul watch -type=service` and consul-template use it) against
// a real node: one instance's health changing once fires the handler once,
// and the other instance's entry keeps its ModifyIndex, as in Consul.
func TestConsulWatchService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	var failing atomic.Bool
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
		}
	}))
	defer flaky.Close()
	one := tn.instance("web", "web-1", "10.1.0.1", 8080, nil)
	one.Checks[0].Http.Url = flaky.URL
	tn.register(ctx, t, one)
	tn.register(ctx, t, tn.instance("web", "web-2", "10.1.0.2", 8080, nil))
	tn.waitPassing(ctx, t, "web", 2)

	client, err := consulapi.NewClient(&consulapi.Config{Address: tn.httpAddr})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := watch.Parse(map[string]any{"type": "service", "service": "web"})
	if err != nil {
		t.Fatal(err)
	}
	fires := make(chan []*consulapi.ServiceEntry, 100)
	plan.Handler = func(_ uint64, raw any) {
		if entries, ok := raw.([]*consulapi.ServiceEntry); ok {
			fires <- entries
		}
	}
	go func() { _ = plan.RunWithClientAndHclog(client, hclog.NewNullLogger()) }()
	defer plan.Stop()

	// entry finds id among entries.
	entry := func(entries []*consulapi.ServiceEntry, id string) *consulapi.ServiceEntry {
		for _, e := range entries {
			if e.Service.ID == id {
				return e
			}
		}
		return nil
	}
	// next waits for the handler's next call.
	next := func(what string) []*consulapi.ServiceEntry {
		t.Helper()
		select {
		case entries := <-fires:
			return entries
		case <-time.After(60 * time.Second):
			t.Fatalf("timed out waiting for the watch to fire: %s", what)
			return nil
		}
	}
	first := next("the first answer")
	if len(first) != 2 || first[0].Checks.AggregatedStatus() != consulapi.HealthPassing || first[1].Checks.AggregatedStatus() != consulapi.HealthPassing {
		t.Fatalf("first answer: %d entries, want web-1 and web-2 passing", len(first))
	}
	web2 := entry(first, "web-2")

	// web-1 turns critical: one fire.
	failing.Store(true)
	got := next("web-1 critical")
	if e := entry(got, "web-1"); e == nil || e.Checks.AggregatedStatus() != consulapi.HealthCritical {
		t.Fatalf("the fire after web-1 failed: %+v, want web-1 critical", e)
	}
	// Then an unrelated change, web-3's registration: the next fire brings
	// it, so nothing fired between for web-1's one change.
	tn.register(ctx, t, tn.instance("web", "web-3", "10.1.0.3", 8080, nil))
	after := next("web-3 registered")
	if entry(after, "web-3") == nil {
		e := entry(after, "web-1")
		t.Fatalf("the watch fired again before web-3 came (web-1's one change fired twice): web-1 %s, ModifyIndex %d (was %d)",
			e.Checks.AggregatedStatus(), e.Service.ModifyIndex, entry(got, "web-1").Service.ModifyIndex)
	}
	for _, entries := range [][]*consulapi.ServiceEntry{got, after} {
		if e := entry(entries, "web-2"); e == nil || e.Service.ModifyIndex != web2.Service.ModifyIndex || e.Node.ModifyIndex != web2.Node.ModifyIndex {
			t.Errorf("web-2 unchanged, but its entry's ModifyIndex moved from %d: %+v", web2.Service.ModifyIndex, e.Service)
		}
	}
}
