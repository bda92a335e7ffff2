package interop_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// The helpers shared with the other tests that start real nodes.
var (
	freeAddr = testutil.FreeAddr
	waitFor  = testutil.WaitFor
)

// blockInterval is the block interval of the nodes the tests start.
var blockInterval = 100 * time.Millisecond

// testNode is a started one-node network whose observer is in dc1, and a
// real HTTP server that its instances' checks probe.
type testNode struct {
	node     *node.Node
	httpAddr string
	client   *api.Client
	operator keys.Key
	target   *httptest.Server
}

// startNode starts a one-node network in a temporary home and waits for its
// first block; it stops at the end of the test.
func startNode(ctx context.Context, t *testing.T) *testNode {
	t.Helper()
	return startNodeWith(ctx, t, nil)
}

// startNodeWith is startNode with settings changed by tune first.
func startNodeWith(ctx context.Context, t *testing.T, tune func(*node.Settings)) *testNode {
	t.Helper()
	return startNodeHome(ctx, t, tune, nil)
}

// startNodeHome is startNodeWith with the home changed by prepare after
// init (genesis, config files), before the node starts.
func startNodeHome(ctx context.Context, t *testing.T, tune func(*node.Settings), prepare func(home string)) *testNode {
	t.Helper()
	home := t.TempDir()
	tn := &testNode{httpAddr: freeAddr(t)}
	if err := node.Init(node.InitOptions{
		Home: home, ChainID: "interop", HTTPAddr: tn.httpAddr,
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: blockInterval,
	}); err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		st, err := node.ReadSettings(home)
		if err != nil {
			t.Fatal(err)
		}
		tune(&st)
		if err := node.WriteSettings(home, st); err != nil {
			t.Fatal(err)
		}
	}
	if prepare != nil {
		prepare(home)
	}
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	n, err := node.Start(ctx, node.Config{Home: home, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	tn.node = n
	t.Cleanup(func() { n.Stop() })
	if tn.operator, err = keys.Load(filepath.Join(home, node.OperatorKeyFile)); err != nil {
		t.Fatal(err)
	}
	tn.target = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	t.Cleanup(tn.target.Close)
	tn.client = api.NewClient(tn.httpAddr)
	waitFor(t, "first block", 30*time.Second, func() (bool, error) {
		st, err := tn.client.Status(ctx)
		return err == nil && st.Height >= 1, err
	})
	return tn
}

// instance is an instance of service in dc1 whose http check probes the
// node's target, so that it turns passing.
func (tn *testNode) instance(service, id, addr string, port uint32, tags []string, meta ...types.Pair) types.ServiceInstance {
	return types.ServiceInstance{Name: service, Id: id, Address: addr, Port: port, Datacenter: "dc1", Tags: tags, Meta: meta,
		Checks: []types.Check{{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: tn.target.URL}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
}

// register commits inst and returns the height that committed it.
func (tn *testNode) register(ctx context.Context, t *testing.T, inst types.ServiceInstance) int64 {
	t.Helper()
	res, err := tn.client.Register(ctx, tn.operator.Private, inst)
	if err != nil || res.Code != 0 {
		t.Fatalf("register %s/%s: %+v %v", inst.Name, inst.Id, res, err)
	}
	return res.Height
}

// deregister removes an instance and returns the height that did it.
func (tn *testNode) deregister(ctx context.Context, t *testing.T, service, id string) int64 {
	t.Helper()
	res, err := tn.client.Deregister(ctx, tn.operator.Private, service, id)
	if err != nil || res.Code != 0 {
		t.Fatalf("deregister %s/%s: %+v %v", service, id, res, err)
	}
	return res.Height
}

// waitPassing waits until service has n instances, all agreed passing.
func (tn *testNode) waitPassing(ctx context.Context, t *testing.T, service string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d instances of %s passing", n, service), 60*time.Second, func() (bool, error) {
		insts, _, err := tn.client.Service(ctx, service, &api.QueryOptions{Status: []string{"passing"}})
		return err == nil && len(insts) == n, fmt.Errorf("%d passing (%v)", len(insts), err)
	})
}

// scrapeMetrics reads the node's /metrics: the value of each unlabelled
// series by name.
func scrapeMetrics(ctx context.Context, httpAddr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}
