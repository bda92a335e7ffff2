package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/proof"
)

// The helpers shared with the other tests that start real nodes.
var (
	freeAddr = testutil.FreeAddr
	waitFor  = testutil.WaitFor
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(ioDiscard{}, nil))
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }

func checkStatus(ctx context.Context, c *api.Client) (api.Check, error) {
	insts, _, err := c.Service(ctx, "web", nil)
	if err != nil {
		return api.Check{}, err
	}
	if len(insts) != 1 || len(insts[0].Checks) != 1 {
		return api.Check{}, fmt.Errorf("unexpected instances %+v", insts)
	}
	return insts[0].Checks[0], nil
}

// testNode is a started one-node network.
type testNode struct {
	node     *node.Node
	home     string
	httpAddr string
	client   *api.Client
	operator keys.Key
	// token is the node's observe token, which POST /v1/observe requires.
	token string
}

// startNode initialises a one-node network in a temporary home, starts it,
// and waits for its first block. The caller stops the node.
func startNode(ctx context.Context, t *testing.T) testNode {
	t.Helper()
	home, httpAddr := t.TempDir(), freeAddr(t)
	if err := node.Init(node.InitOptions{
		Home: home, ChainID: "it-chain", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	return startNodeAt(ctx, t, home, httpAddr)
}

// startNodeAt starts the node initialised in home, whose API listens on
// httpAddr, and waits for its first block.
func startNodeAt(ctx context.Context, t *testing.T, home, httpAddr string) testNode {
	t.Helper()
	tn := testNode{home: home, httpAddr: httpAddr}
	var err error
	if tn.node, err = node.Start(ctx, node.Config{Home: tn.home, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	if tn.operator, err = keys.Load(filepath.Join(tn.home, node.OperatorKeyFile)); err != nil {
		t.Fatal(err)
	}
	if tn.token, err = node.ObserveToken(tn.home); err != nil {
		t.Fatal(err)
	}
	tn.client = api.NewClient(tn.httpAddr)
	waitFor(t, "first block", 30*time.Second, func() (bool, error) {
		st, err := tn.client.Status(ctx)
		return err == nil && st.Height >= 1, err
	})
	return tn
}

// TestNodeDecidesRealServiceHealth runs a real in-process CometBFT node with
// its observer against a real HTTP server: passing, then critical with a
// committed alert when the server stops, then a restart from the same home
// that keeps the app hash and goes on.
func TestNodeDecidesRealServiceHealth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	n, home := tn.node, tn.home
	defer func() { n.Stop() }()

	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	defer target.Close()

	op, c := tn.operator, tn.client
	inst := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Port: 80, Datacenter: "dc1",
		Checks: []types.Check{{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: target.URL}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
	res, err := c.Register(ctx, op.Private, inst)
	if err != nil {
		t.Fatal(err)
	}
	if res.Height == 0 {
		t.Fatalf("register result without a height: %+v", res)
	}
	// Where a transaction was committed can be asked by its hash.
	// (CometBFT indexes a block's transactions just after its commit.)
	waitFor(t, "the registration found by its hash", 10*time.Second, func() (bool, error) {
		got, err := c.Tx(ctx, res.Hash)
		if err != nil && !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("GET /v1/txs/%s: %v", res.Hash, err)
		}
		if err == nil && (got.Height != res.Height || got.Code != 0) {
			t.Fatalf("GET /v1/txs/%s: %+v, want committed at height %d", res.Hash, got, res.Height)
		}
		return err == nil, err
	})
	if _, err := c.Tx(ctx, strings.Repeat("AB", 32)); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("an unknown tx hash: %v, want not found", err)
	}

	// A registration outside the rules is refused with its code and message.
	bad := inst
	bad.Checks = []types.Check{{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: target.URL}, IntervalMs: 100, TimeoutMs: 100, TtlMs: 300}}
	if _, err := c.Register(ctx, op.Private, bad); err == nil || !bytes.Contains([]byte(err.Error()), []byte("code 5")) {
		t.Fatalf("invalid registration: err = %v, want a refusal with code 5", err)
	}

	waitFor(t, "agreed passing", 30*time.Second, func() (bool, error) {
		ch, err := checkStatus(ctx, c)
		return err == nil && ch.HardStatus == "passing", err
	})

	target.Close()
	waitFor(t, "agreed critical", 30*time.Second, func() (bool, error) {
		ch, err := checkStatus(ctx, c)
		return err == nil && ch.HardStatus == "critical", err
	})
	var alert api.Alert
	waitFor(t, "state_change alert", 10*time.Second, func() (bool, error) {
		alerts, _, err := c.Alerts(ctx, &api.QueryOptions{Limit: 10})
		for _, a := range alerts {
			if a.Kind == "state_change" && a.From == "passing" && a.To == "critical" && a.Service == "web" {
				alert = a
				return true, nil
			}
		}
		return false, err
	})
	if len(alert.Views) != 1 || alert.Views[0].Status != "critical" || !alert.Views[0].Fresh {
		t.Fatalf("alert views = %+v, want the observer's fresh critical view", alert.Views)
	}

	// Every committed height's app hash is the one the next header carries.
	h := n.Height()
	before, err := n.AppHashAt(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}

	n2, err := node.Start(ctx, node.Config{Home: home, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Stop()
	after, err := n2.AppHashAt(h)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("app hash at height %d changed across restart: %X → %X", h, before, after)
	}
	waitFor(t, "the network going on after restart", 30*time.Second, func() (bool, error) {
		return n2.Height() >= h+3, nil
	})
	for height := h - 2; height <= h+2; height++ {
		header, err := n2.HeaderAppHash(ctx, height+1)
		if err != nil {
			t.Fatal(err)
		}
		mine, err := n2.AppHashAt(height)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(header, mine) {
			t.Fatalf("height %d: app hash %X, header %d says %X", height, mine, height+1, header)
		}
	}
	ch, err := checkStatus(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if ch.HardStatus != "critical" {
		t.Fatalf("after restart the check is %s, want still critical", ch.HardStatus)
	}
	if _, _, err := c.Service(ctx, "nope", nil); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("unknown service: err = %v, want ErrNotFound", err)
	}

	// A proven read verifies against the app hash the next signed header
	// carries, and rebuilds from the proven records to the node's answer.
	for _, path := range []string{"/v1/services/web", "/v1/services/nope", "/v1/alerts", "/v1/health/service/web"} {
		provenRebuilds(ctx, t, n2, tn.httpAddr, path)
	}
}

// provenRebuilds reads path?proof=1 from the node's API, verifies it
// against the app hash the next signed header carries, and rebuilds the
// node's answer from the proven records.
func provenRebuilds(ctx context.Context, t *testing.T, n *node.Node, addr, path string) {
	t.Helper()
	p := provenGet(ctx, t, addr, path)
	header, err := n.HeaderAppHash(ctx, p.Height+1)
	if err != nil {
		t.Fatal(err)
	}
	vr, err := proof.Verify(p.Proofs, header)
	if err != nil {
		t.Fatalf("%s: verify against header %d: %v", path, p.Height+1, err)
	}
	code, body, err := server.Rebuild(ctx, vr, http.MethodGet, path)
	var answer bytes.Buffer
	if cerr := json.Compact(&answer, p.Answer); err != nil || cerr != nil || code != p.Code || !bytes.Equal(body, answer.Bytes()) {
		t.Fatalf("%s: rebuilt %d %s (%v), node's %d %s", path, code, body, err, p.Code, p.Answer)
	}
}

// provenGet fetches path?proof=1 from the node's API.
func provenGet(ctx context.Context, t *testing.T, addr, path string) api.Proven {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path+"?proof=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p api.Proven
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s?proof=1: %d %v", path, resp.StatusCode, err)
	}
	return p
}

// TestObserverVouches: a real node's observer, probing a real HTTP server
// every second, stops rewriting its unchanged report and vouches for it:
// the report stays fresh well past its ttl after the block that committed
// it, counted from the vouch (as_of); /v1/observers shows the vouch moving
// on; a proven read of the check, which reads the vouch, verifies and
// rebuilds; and when the server stops, the change still gets through and
// the check goes critical.
func TestObserverVouches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	defer tn.node.Stop()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	defer target.Close()
	inst := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Port: 80, Datacenter: "dc1",
		Checks: []types.Check{{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: target.URL}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
	if _, err := tn.client.Register(ctx, tn.operator.Private, inst); err != nil {
		t.Fatal(err)
	}
	// The report's height unchanged for over twice its ttl, yet fresh, and
	// counted from a vouch later than its own block.
	var height int64
	var since time.Time
	waitFor(t, "a report kept fresh by vouches past its ttl", 90*time.Second, func() (bool, error) {
		ch, err := checkStatus(ctx, tn.client)
		if err != nil || len(ch.Observers) != 1 {
			return false, err
		}
		v := ch.Observers[0]
		if ch.HardStatus != "passing" || !v.Fresh || v.Height == 0 {
			return false, nil
		}
		if v.Height != height {
			height, since = v.Height, time.Now()
			return false, nil
		}
		return time.Since(since) > 6*time.Second && v.AsOf != nil && v.AsOf.After(since), nil
	})
	obs, _, err := tn.client.Observers(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(obs) != 1 || obs[0].VouchHeight <= height || obs[0].VouchedAt == nil {
		t.Fatalf("observers = %+v, want a vouch committed after height %d", obs, height)
	}
	provenRebuilds(ctx, t, tn.node, tn.httpAddr, "/v1/services/web")
	target.Close()
	waitFor(t, "agreed critical", 30*time.Second, func() (bool, error) {
		ch, err := checkStatus(ctx, tn.client)
		return err == nil && ch.HardStatus == "critical", err
	})
}
