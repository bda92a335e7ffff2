package interop_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/consul"
	"github.com/prometheus/prometheus/discovery/targetgroup"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"

	"github.com/bftmon/bftmon/verify"
)

// TestPrometheusConsulDiscoveryThroughProxy runs Prometheus' own Consul
// service discovery, unchanged, against the verifying proxy in front of a
// real node: it finds the registered instances, from answers the proxy
// verified (the datacenter from the proxy's own /v1/agent/self), and a
// deregistration reaches it.
func TestPrometheusConsulDiscoveryThroughProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	tn.register(ctx, t, tn.instance("web", "web-1", "10.1.0.1", 8080, []string{"v1"}))
	tn.register(ctx, t, tn.instance("web", "web-2", "10.1.0.2", 8080, []string{"v1"}))
	tn.waitPassing(ctx, t, "web", 2)

	proxy := verifyingProxy(ctx, t, tn)

	cfg := consul.DefaultSDConfig
	cfg.Server = proxy
	cfg.Services = []string{"web"}
	cfg.RefreshInterval = model.Duration(50 * time.Millisecond)
	reg := prometheus.NewRegistry()
	d, err := consul.NewDiscovery(&cfg, slog.New(slog.DiscardHandler), cfg.NewDiscovererMetrics(reg, discovery.NewRefreshMetrics(reg)))
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []*targetgroup.Group)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go d.Run(runCtx, ch)
	var web *targetgroup.Group
	wait := func(what string, ok func(g *targetgroup.Group) bool) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for web == nil || !ok(web) {
			select {
			case tgs := <-ch:
				for _, g := range tgs {
					if g.Source == "web" {
						web = g
					}
				}
			case <-deadline:
				t.Fatalf("timed out waiting for %s: %+v", what, web)
			}
		}
	}
	wait("both web instances", func(g *targetgroup.Group) bool { return len(g.Targets) == 2 })
	if web.Labels["__meta_consul_dc"] != "dc1" || web.Targets[0]["__meta_consul_health"] != "passing" {
		t.Errorf("web through the proxy: labels %v, targets %v", web.Labels, web.Targets)
	}
	tn.deregister(ctx, t, "web", "web-2")
	wait("web-2 gone", func(g *targetgroup.Group) bool { return len(g.Targets) == 1 })
}

// verifyingProxy serves a verifying proxy of tn (trusting its header 1)
// and returns its address.
func verifyingProxy(ctx context.Context, t *testing.T, tn *testNode) string {
	t.Helper()
	return verifyingProxyOf(ctx, t, tn, tn.httpAddr)
}

// verifyingProxyOf serves a verifying proxy of the HTTP API at apiAddr (tn's
// or one in front of it), verifying against tn's RPC from its header 1,
// and returns its address.
func verifyingProxyOf(ctx context.Context, t *testing.T, tn *testNode, apiAddr string) string {
	t.Helper()
	rpc, err := rpchttp.New(tn.node.RPCURL(), "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	one := int64(1)
	commit, err := rpc.Commit(ctx, &one)
	if err != nil {
		t.Fatal(err)
	}
	h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{tn.node.RPCURL()}, ChainID: commit.SignedHeader.ChainID, TrustHeight: 1, TrustHash: commit.SignedHeader.Hash()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := verify.NewProxy(verify.NewClient(apiAddr, h), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
