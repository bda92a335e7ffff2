package server_test

import (
	"errors"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"
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
