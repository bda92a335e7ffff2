package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/verify"
)

// lieLog is a reverse proxy in front of a lying node's API that notes,
// for every answer, the lie the node says it told (node.HeaderTestLie,
// which only the lying test mode sets). The test uses it to know what to
// expect of the verifier, never as the verifier's input: the verifier
// sees the answer only.
type lieLog struct {
	srv *httptest.Server
	mu  sync.Mutex
	n   int               // answers passed on
	by  map[string]string // request path → lie of its latest answer
}

func newLieLog(t *testing.T, upstream string) *lieLog {
	u, err := url.Parse("http://" + upstream)
	if err != nil {
		t.Fatal(err)
	}
	l := &lieLog{by: map[string]string{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) },
		ModifyResponse: func(resp *http.Response) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.n++
			l.by[resp.Request.URL.Path] = resp.Header.Get(node.HeaderTestLie)
			return nil
		},
	}
	l.srv = httptest.NewServer(rp)
	t.Cleanup(l.srv.Close)
	return l
}

func (l *lieLog) addr() string { return l.srv.Listener.Addr().String() }

// last is how many answers were passed on, and the lie of path's latest.
func (l *lieLog) last(path string) (int, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.by[path]
}

// verifiedRoutes are the reads the test asks a lying node, one of each
// kind of answer: native lists and single records, alerts, observers,
// http_sd and the Consul subset. The proxy's and the CLI's are among them,
// so that their stale-height lies replay answers older than the
// verifier's max age: a fresher replay is only a lagging node's answer,
// and verifies.
var verifiedRoutes = []string{
	"/v1/services",
	"/v1/services/web",
	"/v1/services/web?status=passing",
	"/v1/checks/web/web-1/http",
	"/v1/alerts",
	"/v1/observers",
	"/v1/sd/prometheus",
	"/v1/sd/prometheus?service=web&status=passing",
	"/v1/catalog/services",
	"/v1/catalog/service/web",
	"/v1/health/service/web",
	"/v1/health/checks/web",
	"/v1/services/nope",
	// Key/value and session reads, where a lock's holder is read: a
	// younger max age (verify.DefaultLockMaxAge) and never back.
	"/v1/kv/locks/web-leader",
	"/v1/session/list",
}

// TestVerifiedReadsLyingNode runs a real 4-node network in which node3's
// HTTP API lies (--byzantine=lying-api: forged verdicts, hidden instances,
// invented alerts, stale heights, proofs of other records, each route's
// lies in turn) and checks, against it: that the verifying client
// accepts every honest answer and refuses every lie; that the verifying
// proxy (the real bftmon proxy process) answers 502 to every lie and only
// true answers otherwise; and that bftmon health --verify exits 3 on a
// lie and says "verified at height H" on the truth.
func TestVerifiedReadsLyingNode(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	ctx := context.Background()
	c := New(t, 4, 2)
	n0, n3 := c.Nodes[0], c.Nodes[3]
	for _, n := range c.Nodes[:3] {
		n.Start()
	}
	n3.Start("--byzantine=" + node.ByzLyingAPI)
	for _, n := range c.Nodes {
		n.WaitUp()
	}
	c.WaitHeight(2)

	// web-1 and web-2 answer, web-3 is down: an agreed critical with an
	// alert, so that every lie has something to change.
	up, down := newTarget(t), newTarget(t)
	down.down.Store(true)
	for i, tg := range []*target{up, up, down} {
		in := types.ServiceInstance{Name: "web", Id: fmt.Sprintf("web-%d", i+1), Address: "127.0.0.1", Port: 8080 + uint32(i), Checks: []types.Check{{
			Id: "http", Kind: "http", Http: &types.HTTPParams{Url: tg.srv.URL + "/health"},
			IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 5000, ConfirmMs: 1000,
		}}}
		if res, err := n0.Client.Register(ctx, c.Operator.Private, in); err != nil || res.Code != 0 {
			t.Fatalf("register %s: %+v %v", in.Id, res, err)
		}
	}
	c.WaitFor("web-3 agreed critical with an alert, web-1 and web-2 passing", Patience, func(ctx context.Context) (bool, error) {
		insts, _, err := n0.Client.Service(ctx, "web", nil)
		if err != nil {
			return false, err
		}
		st := map[string]string{}
		for _, in := range insts {
			st[in.ID] = in.Status
		}
		alerts, err := alertsSince(ctx, n0, "state_change", 0)
		return st["web-1"] == "passing" && st["web-2"] == "passing" && st["web-3"] == "critical" && len(alerts) > 0 && err == nil,
			fmt.Errorf("statuses %v, %d alerts, %v", st, len(alerts), err)
	})

	genesisPath := filepath.Join(n0.Home, "config", "genesis.json")
	gen, err := cmttypes.GenesisDocFromFile(genesisPath)
	if err != nil {
		t.Fatal(err)
	}
	rpc := "http://" + n3.RPCAddr // the liar's own RPC: its headers are checked by signature
	hctx, cancel := context.WithTimeout(ctx, Patience)
	headers, err := verify.NewHeaders(hctx, verify.Options{RPC: []string{rpc, "http://" + n0.RPCAddr}, Genesis: gen})
	cancel()
	if err != nil {
		t.Fatalf("light client: %v", err)
	}
	lies := newLieLog(t, n3.HTTPAddr)
	liar := verify.NewClient(lies.addr(), headers)
	honest := verify.NewClient(n0.HTTPAddr, headers)

	refused := map[string]int{} // lie → times refused
	verified, honestStale := 0, 0
	ask := func(route string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, Patience)
		defer cancel()
		res, err := liar.Get(rctx, route)
		_, lie := lies.last(strings.SplitN(route, "?", 2)[0])
		var stale *verify.StaleError
		switch {
		case lie == "" && errors.As(err, &stale):
			// An honest answer of a node that is behind (the race
			// detector on two cores can hold one back for seconds)
			// is stale all the same: refusing it is right, provided
			// its header really is older than the max age.
			hdr, herr := headers.Header(rctx, stale.Height+1)
			if herr != nil || time.Since(hdr.Time) <= stale.MaxAge {
				t.Errorf("%s: an honest answer of node3 was refused as stale, but its header is not old: %v (header: %v)", route, err, herr)
			}
			honestStale++
		case lie == "" && err != nil:
			t.Errorf("%s: an honest answer of node3 was refused: %v", route, err)
		case lie != "" && err == nil:
			t.Errorf("%s: node3's lie %s was accepted as verified at height %d: %s", route, lie, res.Height, firstLines(res.Body))
		case lie != "" && !errors.Is(err, verify.ErrNotVerified):
			t.Errorf("%s: lie %s refused with an error that does not say it is not verified: %v", route, lie, err)
		case lie != "":
			refused[lie]++
		default:
			verified++
		}
	}

	// The first turn of every route is honest: verified, from the liar and
	// from an honest node alike.
	var first time.Time
	for _, route := range verifiedRoutes {
		rctx, cancel := context.WithTimeout(ctx, Patience)
		res, err := honest.Get(rctx, route)
		cancel()
		if err != nil {
			t.Errorf("%s: node0's answer did not verify: %v", route, err)
		}
		if first.IsZero() {
			hdr, err := headers.Header(ctx, res.Height+1)
			if err != nil {
				t.Fatal(err)
			}
			first = hdr.Time
		}
		ask(route)
	}
	// A stale answer is one older than the verifier's MaxAge: wait until
	// the chain's time has passed it since the first answers, which the
	// stale-height lie replays.
	c.WaitFor("the first answers to be older than the verifier's max age", 2*Patience, func(ctx context.Context) (bool, error) {
		st, err := n0.Client.Status(ctx)
		if err != nil {
			return false, err
		}
		return st.BlockTime.Sub(first) > verify.DefaultMaxAge+2*time.Second, fmt.Errorf("block time %s, first answers at %s", st.BlockTime, first)
	})
	for range len(node.LieCycle) - 1 {
		for _, route := range verifiedRoutes {
			ask(route)
		}
	}
	for _, lie := range node.Lies {
		if refused[lie] == 0 {
			t.Errorf("lie %s was never told and refused (refused: %v)", lie, refused)
		}
	}
	if verified < len(verifiedRoutes) {
		t.Errorf("only %d honest answers of node3 verified (%d refused as stale): want at least one a route", verified, honestStale)
	}
	t.Logf("verifying client against the lying node: %d honest answers verified (%d refused as stale: node3 was behind), lies refused %v", verified, honestStale, refused)

	t.Run("the verifying proxy serves only the truth", func(t *testing.T) {
		proxyLies := newLieLog(t, n3.HTTPAddr)
		listen := testutil.FreeAddr(t)
		cmd := exec.Command(Binary(t), "proxy", "--listen", listen, "--addr", proxyLies.addr(), "--genesis", genesisPath, "--rpc", rpc)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("bftmon proxy output:\n%s", logs.String())
			}
		})
		pc := &http.Client{Timeout: Patience}
		get := func(route string) (int, []byte, error) {
			resp, err := pc.Get("http://" + listen + route)
			if err != nil {
				return 0, nil, err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			return resp.StatusCode, body, err
		}
		testutil.WaitFor(t, "the proxy to listen", Patience, func() (bool, error) {
			_, _, err := get("/v1/status")
			return err == nil, err
		})
		proxyRefused := map[string]int{}
		for _, route := range []string{"/v1/services/web", "/v1/health/service/web", "/v1/sd/prometheus?service=web&status=passing", "/v1/alerts"} {
			path := strings.SplitN(route, "?", 2)[0]
			// Each upstream answer the proxy takes is one turn of the
			// route's lies; a reused answer (within 500 ms) takes none.
			turns := 0
			testutil.WaitFor(t, route+": every turn of the lies through the proxy", 2*Patience, func() (bool, error) {
				before, _ := proxyLies.last(path)
				code, body, err := get(route)
				if err != nil {
					return false, err
				}
				after, lie := proxyLies.last(path)
				if after == before {
					if code != http.StatusOK {
						t.Errorf("%s: a reused answer is %d: %s", route, code, firstLines(body))
					}
					return false, fmt.Errorf("%d of %d turns", turns, len(node.LieCycle))
				}
				turns++
				switch {
				case lie == "" && code != http.StatusOK:
					t.Errorf("%s: an honest answer of node3 got %d from the proxy: %s", route, code, firstLines(body))
				case lie != "" && code != http.StatusBadGateway:
					t.Errorf("%s: node3's lie %s got %d from the proxy, not 502: %s", route, lie, code, firstLines(body))
				case lie != "":
					proxyRefused[lie]++
				}
				if code == http.StatusOK {
					checkTruth(ctx, t, n0, route, body)
				}
				return turns >= len(node.LieCycle), fmt.Errorf("%d of %d turns", turns, len(node.LieCycle))
			})
		}
		t.Logf("verifying proxy against the lying node: lies answered 502 %v", proxyRefused)
		for _, lie := range []string{node.LieForgeVerdict, node.LieHideInstance, node.LieInventAlert, node.LieStaleHeight, node.LieOtherProofs} {
			if proxyRefused[lie] == 0 {
				t.Errorf("the proxy never refused lie %s (refused: %v)", lie, proxyRefused)
			}
		}
	})

	t.Run("bftmon health --verify exits 3 on every lie", func(t *testing.T) {
		healthLies := newLieLog(t, n3.HTTPAddr)
		exits := map[string]int{}
		for range len(node.LieCycle) {
			cmd := exec.Command(Binary(t), "health", "web", "--verify", "--addr", healthLies.addr(), "--genesis", genesisPath, "--rpc", rpc)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			_, lie := healthLies.last("/v1/services/web")
			switch {
			case lie != "" && code != 3:
				t.Errorf("lie %s: bftmon health --verify exited %d, not 3 (UNKNOWN)\nstdout: %s\nstderr: %s", lie, code, stdout.String(), stderr.String())
			case lie != "" && !strings.Contains(stderr.String(), "UNKNOWN - cannot verify web"):
				t.Errorf("lie %s: stderr does not say why: %s", lie, stderr.String())
			case lie == "" && (code != 2 || !strings.Contains(stdout.String(), "verified at height")):
				// web-3 is critical: exit 2, verified.
				t.Errorf("honest answer: exit %d (want 2, web-3 critical), stdout %s, stderr %s", code, stdout.String(), stderr.String())
			}
			exits[lieName(lie)] = code
		}
		t.Logf("bftmon health --verify against the lying node, exit by lie: %v", exits)
	})
}

// lieName names an answer's lie for the log ("honest" for none).
func lieName(lie string) string {
	if lie == "" {
		return "honest"
	}
	return lie
}

// checkTruth checks what the proxy served as true against what the
// network agreed: three instances of web, web-1 and web-2 passing, web-3
// critical, and alerts only as node0 (honest) has them.
func checkTruth(ctx context.Context, t *testing.T, n0 *Node, route string, body []byte) {
	t.Helper()
	switch route {
	case "/v1/services/web":
		var insts []api.Instance
		if err := json.Unmarshal(body, &insts); err != nil {
			t.Errorf("%s: %v", route, err)
			return
		}
		st := map[string]string{}
		for _, in := range insts {
			st[in.ID] = in.Status
		}
		if len(insts) != 3 || st["web-1"] != "passing" || st["web-2"] != "passing" || st["web-3"] != "critical" {
			t.Errorf("%s: the proxy served %v, not the agreed web-1, web-2 passing and web-3 critical", route, st)
		}
	case "/v1/health/service/web":
		var entries []struct {
			Service struct{ ID string }
			Checks  []struct{ Status string }
		}
		if err := json.Unmarshal(body, &entries); err != nil {
			t.Errorf("%s: %v", route, err)
			return
		}
		st := map[string]string{}
		for _, e := range entries {
			for _, ch := range e.Checks {
				if st[e.Service.ID] == "" || ch.Status == "critical" {
					st[e.Service.ID] = ch.Status
				}
			}
		}
		if len(entries) != 3 || st["web-1"] != "passing" || st["web-2"] != "passing" || st["web-3"] != "critical" {
			t.Errorf("%s: the proxy served %v, not the agreed web-1, web-2 passing and web-3 critical", route, st)
		}
	case "/v1/sd/prometheus?service=web&status=passing":
		var groups []struct{ Targets []string }
		if err := json.Unmarshal(body, &groups); err != nil {
			t.Errorf("%s: %v", route, err)
			return
		}
		n := 0
		for _, g := range groups {
			n += len(g.Targets)
		}
		if n != 2 { // the passing instances only
			t.Errorf("%s: the proxy served %d targets, not web-1 and web-2: %s", route, n, firstLines(body))
		}
	case "/v1/alerts":
		var alerts []api.Alert
		if err := json.Unmarshal(body, &alerts); err != nil {
			t.Errorf("%s: %v", route, err)
			return
		}
		truth, _, err := n0.Client.Alerts(ctx, &api.QueryOptions{Limit: 1000})
		if err != nil {
			t.Errorf("alerts of node0: %v", err)
			return
		}
		byID := map[string]api.Alert{}
		for _, a := range truth {
			byID[a.ID] = a
		}
		for _, a := range alerts {
			if tr, ok := byID[a.ID]; !ok || tr.From != a.From || tr.To != a.To || tr.Instance != a.Instance {
				t.Errorf("%s: the proxy served an alert the network did not raise: %+v", route, a)
			}
		}
	}
}

// firstLines is the start of an answer, for messages.
func firstLines(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	var out []string
	for len(out) < 6 && sc.Scan() {
		out = append(out, sc.Text())
	}
	return strings.Join(out, " ")
}
