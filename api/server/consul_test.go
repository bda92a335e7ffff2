package server_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/bftmon/bftmon/app/types"
)

// consulClient is Consul's own Go client, talking to n's server.
func (n *readNet) consulClient() *consulapi.Client {
	n.t.Helper()
	c, err := consulapi.NewClient(&consulapi.Config{Address: strings.TrimPrefix(n.url, "http://")})
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// TestConsulDatacenter checks ?dc= through Consul's client: a known
// datacenter (an observer's or an instance's) selects its instances, an
// unknown one is answered as Consul answers it, 500 "No path to
// datacenter", on every route that takes one.
func TestConsulDatacenter(t *testing.T) {
	n := newReadNet(t)
	c := n.consulClient()
	calls := map[string]func(q *consulapi.QueryOptions) (int, error){
		"catalog/services": func(q *consulapi.QueryOptions) (int, error) {
			m, _, err := c.Catalog().Services(q)
			return len(m), err
		},
		"catalog/service": func(q *consulapi.QueryOptions) (int, error) {
			l, _, err := c.Catalog().Service("web", "", q)
			return len(l), err
		},
		"health/service": func(q *consulapi.QueryOptions) (int, error) {
			l, _, err := c.Health().Service("web", "", false, q)
			return len(l), err
		},
	}
	for _, tc := range []struct {
		dc   string
		want int // entries of web (catalog/services: services)
		fail bool
	}{
		{"", 3, false},
		{"dc1", 2, false},
		{"dc2", 1, false},
		{"dc9", 0, true},
	} {
		for route, call := range calls {
			got, err := call(&consulapi.QueryOptions{Datacenter: tc.dc})
			want := tc.want
			if route == "catalog/services" {
				want = min(want, 1) // one service, web
			}
			var se consulapi.StatusError
			switch {
			case tc.fail && (!errors.As(err, &se) || se.Code != 500 || se.Body != "No path to datacenter"):
				t.Errorf("%s ?dc=%s: %v, want 500 No path to datacenter", route, tc.dc, err)
			case !tc.fail && (err != nil || got != want):
				t.Errorf("%s ?dc=%s: %d, %v; want %d", route, tc.dc, got, err, want)
			}
		}
	}
}

// TestConsulEndpoints reads the Consul routes beyond the service ones
// through Consul's client: health/checks, health/state, agent/services,
// catalog/nodes and status/peers.
func TestConsulEndpoints(t *testing.T) {
	n := newReadNet(t)
	// An id two services share: agent/services keys both as service/id.
	n.register(types.ServiceInstance{Name: "db", Id: "web-1", Address: "10.0.1.1", Port: 5432, Datacenter: "dc2",
		Checks: []types.Check{{Id: "p", Kind: "passive", TtlMs: 600_000}}})
	c := n.consulClient()
	checkIDs := func(list consulapi.HealthChecks) string {
		var s []string
		for _, hc := range list {
			s = append(s, hc.ServiceName+"/"+hc.ServiceID+"="+hc.Status)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		name string
		call func() (string, error)
		want string
	}{
		{"health/checks web", func() (string, error) {
			l, _, err := c.Health().Checks("web", nil)
			return checkIDs(l), err
		}, "web/web-1=passing,web/web-2=passing,web/web-3=critical"},
		{"health/checks web dc1", func() (string, error) {
			l, _, err := c.Health().Checks("web", &consulapi.QueryOptions{Datacenter: "dc1"})
			return checkIDs(l), err
		}, "web/web-1=passing,web/web-3=critical"},
		{"health/checks unknown", func() (string, error) {
			l, _, err := c.Health().Checks("nope", nil)
			return checkIDs(l), err
		}, ""},
		{"health/state critical", func() (string, error) {
			l, _, err := c.Health().State(consulapi.HealthCritical, nil)
			return checkIDs(l), err
		}, "db/web-1=critical,web/web-3=critical"}, // db/web-1: pending, critical as in Consul
		{"health/state passing", func() (string, error) {
			l, _, err := c.Health().State(consulapi.HealthPassing, nil)
			return checkIDs(l), err
		}, "web/web-1=passing,web/web-2=passing"},
		{"health/state any dc2", func() (string, error) {
			l, _, err := c.Health().State(consulapi.HealthAny, &consulapi.QueryOptions{Datacenter: "dc2"})
			return checkIDs(l), err
		}, "db/web-1=critical,web/web-2=passing"},
		{"agent/services", func() (string, error) {
			m, err := c.Agent().Services()
			var s []string
			for id, as := range m {
				s = append(s, fmt.Sprintf("%s:%s/%s@%s:%d w%d/%d %s", id, as.Service, as.ID, as.Address, as.Port, as.Weights.Passing, as.Weights.Warning, as.Meta["bftmon_status"]))
			}
			slices.Sort(s)
			return strings.Join(s, ","), err
		}, "db/web-1:db/db/web-1@10.0.1.1:5432 w1/1 pending,web-2:web/web-2@10.0.0.2:80 w1/1 passing,web-3:web/web-3@10.0.0.3:80 w1/1 critical,web/web-1:web/web/web-1@10.0.0.1:80 w1/1 passing"},
		{"catalog/nodes", func() (string, error) {
			l, _, err := c.Catalog().Nodes(nil)
			var s []string
			for _, nd := range l {
				s = append(s, nd.Node+"@"+nd.Address+"/"+nd.Datacenter)
			}
			return strings.Join(s, ","), err
		}, "web-1@10.0.0.1/dc1,web-1@10.0.1.1/dc2,web-2@10.0.0.2/dc2,web-3@10.0.0.3/dc1"},
		{"catalog/nodes dc2", func() (string, error) {
			l, _, err := c.Catalog().Nodes(&consulapi.QueryOptions{Datacenter: "dc2"})
			var s []string
			for _, nd := range l {
				s = append(s, nd.Node)
			}
			return strings.Join(s, ","), err
		}, "web-1,web-2"},
		{"catalog/nodes unknown dc", func() (string, error) {
			_, _, err := c.Catalog().Nodes(&consulapi.QueryOptions{Datacenter: "dc9"})
			return "", err
		}, "error: Unexpected response code: 500 (No path to datacenter)"},
		{"health/state unknown dc", func() (string, error) {
			_, _, err := c.Health().State(consulapi.HealthAny, &consulapi.QueryOptions{Datacenter: "dc9"})
			return "", err
		}, "error: Unexpected response code: 500 (No path to datacenter)"},
		{"status/peers", func() (string, error) {
			l, err := c.Status().Peers()
			return strings.Join(l, ","), err
		}, strings.TrimPrefix(n.url, "http://")},
	} {
		got, err := tc.call()
		if err != nil {
			got = "error: " + err.Error()
		}
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}

	// A state Consul does not have is refused as Consul refuses it (its
	// client refuses it before asking).
	resp, err := http.Get(n.url + "/v1/health/state/pending")
	if err != nil {
		t.Fatal(err)
	}
	bz, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || string(bz) != "Bad check state" {
		t.Errorf("health/state/pending: HTTP %d %q, want 400 Bad check state", resp.StatusCode, bz)
	}
}

// TestConsulCatalogWeights checks that catalog/service gives each instance
// the weights health/service gives it, through Consul's client.
func TestConsulCatalogWeights(t *testing.T) {
	n := newReadNet(t)
	c := n.consulClient()
	catalog, _, err := c.Catalog().Service("web", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	health, _, err := c.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(catalog) != 3 || len(health) != 3 {
		t.Fatalf("%d catalog entries, %d health entries, want 3", len(catalog), len(health))
	}
	for i, cs := range catalog {
		hs := health[i].Service
		if cs.ServiceID != hs.ID || cs.ServiceWeights != consulapi.Weights(hs.Weights) || cs.ServiceWeights != (consulapi.Weights{Passing: 1, Warning: 1}) {
			t.Errorf("%s: catalog weights %+v, health %s weights %+v; want both {1 1}", cs.ServiceID, cs.ServiceWeights, hs.ID, hs.Weights)
		}
		if cs.ModifyIndex != hs.ModifyIndex || cs.CreateIndex != hs.CreateIndex {
			t.Errorf("%s: catalog indexes %d/%d, health %d/%d", cs.ServiceID, cs.CreateIndex, cs.ModifyIndex, hs.CreateIndex, hs.ModifyIndex)
		}
	}
}
