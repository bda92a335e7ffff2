package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// startNodeWith is startNode with byzantine modes.
func startNodeWith(ctx context.Context, t *testing.T, modes []string) testNode {
	t.Helper()
	home, httpAddr := t.TempDir(), freeAddr(t)
	if err := node.Init(node.InitOptions{
		Home: home, ChainID: "it-chain", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	tn := testNode{home: home, httpAddr: httpAddr}
	var err error
	if tn.node, err = node.Start(ctx, node.Config{Home: home, Logger: testLogger(t), Byzantine: modes}); err != nil {
		t.Fatal(err)
	}
	if tn.operator, err = keys.Load(filepath.Join(home, node.OperatorKeyFile)); err != nil {
		t.Fatal(err)
	}
	tn.client = api.NewClient(httpAddr)
	waitFor(t, "first block", 30*time.Second, func() (bool, error) {
		st, err := tn.client.Status(ctx)
		return err == nil && st.Height >= 1, err
	})
	return tn
}

// lieAnswer is a raw answer of a node's API.
type lieAnswer struct {
	lie    string
	height int64
	body   []byte
}

func getRaw(ctx context.Context, t *testing.T, base, path string) lieAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !json.Valid(body) {
		t.Fatalf("GET %s: %s %s", path, resp.Status, body)
	}
	a := lieAnswer{lie: resp.Header.Get(node.HeaderTestLie), body: body}
	a.height, _ = strconv.ParseInt(resp.Header.Get(server.HeaderHeight), 10, 64)
	return a
}

// setupLieState registers web-1 (passing) and web-2 (critical, with its
// alert) on tn and waits, on the honest API at honestURL, for that state.
func setupLieState(ctx context.Context, t *testing.T, tn testNode, honestURL string) {
	t.Helper()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	t.Cleanup(target.Close)
	for id, url := range map[string]string{"web-1": target.URL, "web-2": "http://" + freeAddr(t)} {
		inst := types.ServiceInstance{Name: "web", Id: id, Address: "127.0.0.1", Port: 80, Datacenter: "dc1",
			Checks: []types.Check{{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: url}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
		if _, err := tn.client.Register(ctx, tn.operator.Private, inst); err != nil {
			t.Fatal(err)
		}
	}
	honest := api.NewClient(honestURL)
	waitFor(t, "web-1 passing, web-2 critical and its alert", 20*time.Second, func() (bool, error) {
		insts, _, err := honest.Service(ctx, "web", nil)
		if err != nil || len(insts) != 2 || insts[0].Status != "passing" || insts[1].Status != "critical" {
			return false, err
		}
		als, _, err := honest.Alerts(ctx, nil)
		return len(als) > 0, err
	})
}

// TestLyingAPINode runs a one-node network with --byzantine=lying-api: on
// every read route each lie comes in its turn (LieCycle), the plain Go
// client sees a forged status, a missing instance and an invented alert,
// and the metric counts every lie told.
func TestLyingAPINode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn := startNodeWith(ctx, t, []string{node.ByzLyingAPI})
	defer tn.node.Stop()
	honestSrv := httptest.NewServer(node.HonestAPI(tn.node))
	defer honestSrv.Close()
	setupLieState(ctx, t, tn, honestSrv.URL)
	base := "http://" + tn.httpAddr

	F, H, I, S := node.LieForgeVerdict, node.LieHideInstance, node.LieInventAlert, node.LieStaleHeight
	told := map[string]int{}
	for _, tc := range []struct {
		path string
		want []string // the lies of one cycle, "" honest
	}{
		{"/v1/services", []string{"", F, H, "", S, ""}},
		{"/v1/services/web", []string{"", F, H, "", S, ""}},
		{"/v1/checks/web/web-2/http", []string{"", F, "", "", S, ""}},
		{"/v1/alerts", []string{"", F, H, I, S, ""}},
		{"/v1/observers", []string{"", F, H, "", S, ""}},
		{"/v1/receivers", []string{"", "", "", "", S, ""}}, // none registered: nothing to hide
		{"/v1/sd/prometheus", []string{"", F, H, "", S, ""}},
		{"/v1/catalog/datacenters", []string{"", "", H, "", S, ""}},
		{"/v1/catalog/services", []string{"", "", "", "", S, ""}}, // names and tags: no status, no list
		{"/v1/catalog/nodes", []string{"", "", H, "", S, ""}},
		{"/v1/agent/services", []string{"", F, "", "", S, ""}}, // by id: no list
		{"/v1/catalog/service/web", []string{"", F, H, "", S, ""}},
		{"/v1/health/service/web", []string{"", F, H, "", S, ""}},
		{"/v1/health/checks/web", []string{"", F, H, "", S, ""}},
		{"/v1/health/state/any", []string{"", F, H, "", S, ""}},
	} {
		var got []string
		var first lieAnswer
		for k := range tc.want {
			if tc.want[k] == S {
				// The stale lie replays the first answer: once the node
				// is past its height.
				waitFor(t, "a new height", 10*time.Second, func() (bool, error) { return tn.node.Height() > first.height, nil })
			}
			a := getRaw(ctx, t, base, tc.path)
			h := getRaw(ctx, t, honestSrv.URL, tc.path)
			if k == 0 {
				first = a
			}
			got = append(got, a.lie)
			told[a.lie]++
			switch a.lie {
			case "":
				if !jsonEqual(t, a.body, h.body) && a.height == h.height {
					t.Errorf("GET %s #%d: honest answer differs from the truth:\n%s\n---\n%s", tc.path, k, a.body, h.body)
				}
			case S:
				if a.height != first.height || string(a.body) != string(first.body) {
					t.Errorf("GET %s #%d: stale answer at height %d, want the first's, %d", tc.path, k, a.height, first.height)
				}
			default:
				if jsonEqual(t, a.body, h.body) {
					t.Errorf("GET %s #%d: %s lie is the truth: %s", tc.path, k, a.lie, a.body)
				}
				if err := consulLie(tc.path, a.lie, a.body); err != nil {
					t.Errorf("GET %s #%d: %v", tc.path, k, err)
				}
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("GET %s: lies %q, want %q", tc.path, got, tc.want)
		}
	}

	// The plain Go client believes what it is told: a forged status, a
	// missing instance, an invented alert.
	c := tn.client
	for k := range node.LieCycle {
		insts, _, err := c.Service(ctx, "web", nil)
		if err != nil {
			t.Fatal(err)
		}
		switch node.LieCycle[k] {
		case F:
			if len(insts) != 2 || insts[0].ID != "web-1" || insts[0].Status != "critical" || insts[0].Checks[0].Status != "critical" {
				t.Errorf("forged verdict not seen: %+v", insts)
			}
		case H:
			if len(insts) != 1 || insts[0].ID != "web-2" {
				t.Errorf("hidden instance not missing: %+v", insts)
			}
		default:
			if len(insts) != 2 || insts[0].Status != "passing" || insts[1].Status != "critical" {
				t.Errorf("#%d: %+v", k, insts)
			}
		}
	}
	truth, _, err := api.NewClient(honestSrv.URL).Alerts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k := range node.LieCycle {
		als, _, err := c.Alerts(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		invented := slices.IndexFunc(als, func(a api.Alert) bool {
			return !slices.ContainsFunc(truth, func(b api.Alert) bool { return a.ID == b.ID })
		})
		if node.LieCycle[k] == I {
			if invented != 0 || len(als) != len(truth)+1 || als[0].Service != "web" {
				t.Errorf("no invented alert at the head: %+v (truth %+v)", als, truth)
			}
		} else if invented >= 0 && len(als) > 0 && als[invented].Height <= truth[0].Height {
			t.Errorf("#%d: an alert not in the truth: %+v", k, als[invented])
		}
	}
	told[F] += 2 // a service's and the alerts' cycles
	told[H] += 2
	told[I]++
	told[S] += 2

	fams, err := scrape(ctx, tn.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, lie := range node.Lies {
		n, ok := sample(fams, "bftmon_byzantine_api_lies_total", map[string]string{"lie": lie})
		if !ok || int(n) != told[lie] {
			t.Errorf("bftmon_byzantine_api_lies_total{lie=%q} = %v (%v), want %d", lie, n, ok, told[lie])
		}
	}
}

// TestHonestAPINode: without lying-api, the same requests get the same
// answers, none marked as a lie, and no lie is counted.
func TestHonestAPINode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	defer tn.node.Stop()
	inst := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Port: 80, Datacenter: "dc1",
		Checks: []types.Check{{Id: "ttl", Kind: "passive", TtlMs: 60_000}}}
	if _, err := tn.client.Register(ctx, tn.operator.Private, inst); err != nil {
		t.Fatal(err)
	}
	base := "http://" + tn.httpAddr
	for _, path := range []string{"/v1/services", "/v1/services/web", "/v1/alerts", "/v1/observers", "/v1/health/service/web", "/v1/sd/prometheus"} {
		var first lieAnswer
		for k := range node.LieCycle {
			a := getRaw(ctx, t, base, path)
			if a.lie != "" {
				t.Errorf("GET %s #%d: honest node says %s", path, k, a.lie)
			}
			if k == 0 {
				first = a
			} else if !jsonEqual(t, a.body, first.body) {
				t.Errorf("GET %s #%d: the answer changed:\n%s\n---\n%s", path, k, a.body, first.body)
			}
		}
	}
	fams, err := scrape(ctx, tn.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fams["bftmon_byzantine_api_lies_total"]; ok {
		t.Error("an honest node exports bftmon_byzantine_api_lies_total")
	}
}

// consulLie checks what a Consul or http_sd client is told by a lie: web-1
// (passing) forged critical, or hidden.
func consulLie(path, lie string, body []byte) error {
	var entries []struct {
		Service struct {
			ID   string
			Meta map[string]string
		}
		Checks []struct{ Status string }
		Labels map[string]string `json:"labels"`
	}
	if lie != node.LieForgeVerdict && lie != node.LieHideInstance {
		return nil
	}
	switch path {
	case "/v1/health/service/web", "/v1/sd/prometheus":
		if err := json.Unmarshal(body, &entries); err != nil {
			return err
		}
	default:
		return nil
	}
	switch {
	case lie == node.LieHideInstance && len(entries) == 1:
	case lie == node.LieForgeVerdict && len(entries) == 2 && path == "/v1/sd/prometheus" &&
		entries[0].Labels["__meta_bftmon_instance"] == "web-1" && entries[0].Labels["__meta_bftmon_status"] == "critical":
	case lie == node.LieForgeVerdict && len(entries) == 2 && path == "/v1/health/service/web" && entries[0].Service.ID == "web-1" &&
		entries[0].Service.Meta["bftmon_status"] == "critical" && entries[0].Checks[0].Status == "critical" && entries[1].Checks[0].Status == "critical":
	default:
		return fmt.Errorf("%s: unexpected %s", lie, body)
	}
	return nil
}

// jsonEqual says whether a and b hold equal JSON.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}
