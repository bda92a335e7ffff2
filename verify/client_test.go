package verify_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/verify"
)

// lyingAPI serves upstream's HTTP API, passing every proven answer
// (proof=1) through lie first; it counts the requests it passes on.
type lyingAPI struct {
	*httptest.Server
	requests atomic.Int64
}

func newLyingAPI(t *testing.T, upstream string, lie func(m map[string]any)) *lyingAPI {
	l := &lyingAPI{}
	l.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.requests.Add(1)
		resp, err := http.Get(upstream + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if lie != nil && r.URL.Query().Get("proof") == "1" && resp.StatusCode == 200 {
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Errorf("proven answer: %v", err)
			}
			lie(m)
			body, _ = json.Marshal(m)
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(l.Close)
	return l
}

// plainGet is the node's plain answer to uri.
func plainGet(t *testing.T, base, uri string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(base + uri)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// TestClientVerifies: on a real one-node network every agreed read
// route's proven answer verifies and equals the plain one (a proven 404
// too); an answer with a forged verdict, a hidden instance, tampered
// proofs, another height's proofs or a stale header is refused, saying
// what failed.
func TestClientVerifies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	net := startNet(t)
	for i := range 3 {
		inst := types.ServiceInstance{Name: "web", Id: fmt.Sprintf("web-%d", i), Address: "127.0.0.1", Port: 80 + uint32(i), Datacenter: "dc1", Tags: []string{"v1"}}
		if res, err := net.client.Register(ctx, net.operator.Private, inst); err != nil || res.Code != 0 {
			t.Fatalf("register: %+v %v", res, err)
		}
	}
	h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{net.node.RPCURL()}, Genesis: net.genesis(t)})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + net.httpAddr
	vc := verify.NewClient(net.httpAddr, h)
	for _, uri := range []string{
		"/v1/services", "/v1/services?status=pending", "/v1/services/web", "/v1/services/web?tag=v1&dc=dc1",
		"/v1/services/nope", "/v1/observers", "/v1/alerts", "/v1/receivers",
		"/v1/catalog/services", "/v1/health/service/web", "/v1/catalog/service/web", "/v1/sd/prometheus",
	} {
		// The plain answer may be of a newer height than the proven one
		// until the registrations have settled.
		testutil.WaitFor(t, "GET "+uri+" verified and equal to the plain answer", 20*time.Second, func() (bool, error) {
			res, err := vc.Get(ctx, uri)
			if err != nil {
				return false, err
			}
			code, plain := plainGet(t, base, uri)
			if res.Code != code || !jsonEqual(res.Body, plain) || res.Height < 1 {
				return false, fmt.Errorf("verified %d at height %d:\n%s\nplain %d:\n%s", res.Code, res.Height, res.Body, code, plain)
			}
			return true, nil
		})
	}

	refused := func(t *testing.T, err error, want string) {
		t.Helper()
		if !errors.Is(err, verify.ErrNotVerified) || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want refused with %q", err, want)
		}
	}
	var old map[string]any // a proven answer of an earlier height
	for _, tc := range []struct {
		name, uri, want string
		lie             func(m map[string]any)
	}{
		{"forged verdict", "/v1/services/web", "answer differs", func(m map[string]any) {
			m["answer"].([]any)[0].(map[string]any)["status"] = "critical"
		}},
		{"hidden instance", "/v1/services/web", "answer differs", func(m map[string]any) {
			m["answer"] = m["answer"].([]any)[1:]
		}},
		{"invented service", "/v1/services", "answer differs", func(m map[string]any) {
			m["answer"] = append(m["answer"].([]any), map[string]any{"name": "ghost", "instances": 1, "status": "passing", "tags": nil})
		}},
		{"wrong code", "/v1/services/nope", "HTTP", func(m map[string]any) { m["code"] = 200 }},
		{"tampered proofs", "/v1/services/web", "proofs", func(m map[string]any) {
			p := m["proofs"].(map[string]any)
			b, _ := base64.StdEncoding.DecodeString(p["proof"].(string))
			b[len(b)/2] ^= 0x55
			p["proof"] = base64.StdEncoding.EncodeToString(b)
		}},
		{"another height", "/v1/services/web", "height", func(m map[string]any) {
			m["height"] = m["height"].(float64) - 2
		}},
		{"proofs of another request", "/v1/services/web", "", func(m map[string]any) {
			if old == nil {
				var o map[string]any
				_, b := plainGet(t, base, "/v1/observers?proof=1")
				json.Unmarshal(b, &o)
				old = o
			}
			m["proofs"] = old["proofs"]
			m["height"] = old["height"]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLyingAPI(t, base, tc.lie)
			_, err := verify.NewClient(l.URL, h).Get(ctx, tc.uri)
			refused(t, err, tc.want)
		})
	}
	t.Run("stale", func(t *testing.T) {
		later := func() time.Time { return time.Now().Add(time.Minute) }
		hs, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{net.node.RPCURL()}, Genesis: net.genesis(t), Now: later})
		if err != nil {
			t.Fatal(err)
		}
		_, err = verify.NewClient(net.httpAddr, hs).Get(ctx, "/v1/services/web")
		refused(t, err, "stale height")
	})

	t.Run("lock routes allow a younger header", func(t *testing.T) {
		// 15 s later: within the 30 s max age of a catalog read, past the
		// 10 s of a key/value or session read (DefaultLockMaxAge).
		later := func() time.Time { return time.Now().Add(verify.DefaultLockMaxAge + 5*time.Second) }
		hs, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{net.node.RPCURL()}, Genesis: net.genesis(t), Now: later})
		if err != nil {
			t.Fatal(err)
		}
		c := verify.NewClient(net.httpAddr, hs)
		if _, err := c.Get(ctx, "/v1/services/web"); err != nil {
			t.Fatalf("a catalog read 15 s old: %v, want it verified (max age 30 s)", err)
		}
		for _, uri := range []string{"/v1/kv/locks/web-leader", "/v1/session/list"} {
			_, err := c.Get(ctx, uri)
			var stale *verify.StaleError
			if !errors.As(err, &stale) || stale.MaxAge != verify.DefaultLockMaxAge {
				t.Errorf("%s 15 s old: %v, want refused as older than %s", uri, err, verify.DefaultLockMaxAge)
			}
		}
	})

	t.Run("never back", func(t *testing.T) {
		// The node answers honestly twice, then replays its first answer:
		// an older height than the client already accepted.
		var first []byte
		var asked atomic.Int64
		replay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := asked.Add(1)
			if n > 2 && first != nil {
				w.Header().Set("Content-Type", "application/json")
				w.Write(first)
				return
			}
			_, b := plainGet(t, base, r.URL.RequestURI())
			if n == 1 {
				first = b
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
		}))
		defer replay.Close()
		c := verify.NewClient(replay.URL, h)
		r1, err := c.Get(ctx, "/v1/kv/locks/web-leader")
		if err != nil {
			t.Fatal(err)
		}
		// The second answer must come from a later height than the first.
		testutil.WaitFor(t, "the node to prove a newer height", 20*time.Second, func() (bool, error) {
			_, b := plainGet(t, base, "/v1/kv/locks/web-leader?proof=1")
			var p struct{ Height int64 }
			json.Unmarshal(b, &p)
			return p.Height > r1.Height, fmt.Errorf("proves height %d", p.Height)
		})
		r2, err := c.Get(ctx, "/v1/kv/locks/web-leader")
		if err != nil || r2.Height <= r1.Height || c.Floor() != r2.Height {
			t.Fatalf("second read: height %d (first %d, floor %d), %v", r2.Height, r1.Height, c.Floor(), err)
		}
		_, err = c.Get(ctx, "/v1/kv/locks/web-leader")
		var back *verify.BackwardsError
		if !errors.As(err, &back) || back.Height != r1.Height || back.Floor != r2.Height {
			t.Fatalf("replayed answer of height %d after height %d: %v, want a BackwardsError", r1.Height, r2.Height, err)
		}
		if q := asked.Load(); q != 3 {
			t.Errorf("the replaying node was asked %d times, want 3", q)
		}
	})

	t.Run("min_height", func(t *testing.T) {
		code, body := plainGet(t, base, "/v1/services?min_height=999999999&wait=1s")
		if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "below min_height=999999999") {
			t.Errorf("a read above the node's height: HTTP %d %s, want 503 saying it is behind", code, body)
		}
		if code, body := plainGet(t, base, "/v1/services?min_height=1"); code != http.StatusOK {
			t.Errorf("a read at min_height=1: HTTP %d %s", code, body)
		}
	})

	t.Run("proxy", func(t *testing.T) {
		up := newLyingAPI(t, base, nil)
		p, err := verify.NewProxy(verify.NewClient(up.URL, h), testLogger())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(p)
		defer srv.Close()
		uri := "/v1/health/service/web?passing=false"
		resp, err := http.Get(srv.URL + uri)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_, plain := plainGet(t, base, uri)
		if resp.StatusCode != 200 || !jsonEqual(body, plain) || resp.Header.Get(verify.VerifiedHeightHeader) == "" || resp.Header.Get("X-Consul-Index") == "" {
			t.Fatalf("GET %s through the proxy: %d %v\n%s\nplain:\n%s", uri, resp.StatusCode, resp.Header, body, plain)
		}
		// Asked again at once: the same verified answer, the node not asked.
		n := up.requests.Load()
		resp2, err := http.Get(srv.URL + uri)
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if up.requests.Load() != n || resp2.Header.Get(verify.VerifiedHeightHeader) != resp.Header.Get(verify.VerifiedHeightHeader) {
			t.Errorf("a repeated request within %s went to the node again", verify.ReuseFor)
		}
		testutil.WaitFor(t, "a newer verified answer", 10*time.Second, func() (bool, error) {
			r, err := http.Get(srv.URL + uri)
			if err != nil {
				return false, err
			}
			r.Body.Close()
			return r.Header.Get(verify.VerifiedHeightHeader) != resp.Header.Get(verify.VerifiedHeightHeader), nil
		})
		// A blocking query is passed on and verified when it answers.
		idx := resp.Header.Get("X-Consul-Index")
		start := time.Now()
		rb, err := http.Get(srv.URL + "/v1/health/service/web?index=" + idx + "&wait=1s")
		if err != nil {
			t.Fatal(err)
		}
		bb, _ := io.ReadAll(rb.Body)
		rb.Body.Close()
		if rb.StatusCode != 200 || rb.Header.Get(verify.VerifiedHeightHeader) == "" || rb.Header.Get("X-Consul-Index") != idx || time.Since(start) < 900*time.Millisecond {
			t.Errorf("blocking query through the proxy: %d after %s %v\n%s", rb.StatusCode, time.Since(start), rb.Header, bb)
		}
		// Consul's agent and status routes, which describe one node, the
		// proxy answers for itself.
		ra, err := http.Get(srv.URL + "/v1/agent/self")
		if err != nil {
			t.Fatal(err)
		}
		var self struct{ Config struct{ Datacenter string } }
		json.NewDecoder(ra.Body).Decode(&self)
		ra.Body.Close()
		if ra.StatusCode != 200 || self.Config.Datacenter != "dc1" {
			t.Errorf("GET /v1/agent/self through the proxy: %d %+v", ra.StatusCode, self)
		}
		// The proxy's status: the newest verified header.
		r, err := http.Get(srv.URL + "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			ChainID string `json:"chain_id"`
			Height  int64  `json:"height"`
		}
		json.NewDecoder(r.Body).Decode(&st)
		r.Body.Close()
		if r.StatusCode != 200 || st.ChainID != "verify-chain" || st.Height < 3 {
			t.Errorf("GET /v1/status through the proxy: %d %+v", r.StatusCode, st)
		}

		// A lying node behind the proxy: 502 with the reason.
		liar := newLyingAPI(t, base, func(m map[string]any) { m["answer"] = []any{} })
		lp, _ := verify.NewProxy(verify.NewClient(liar.URL, h), testLogger())
		lsrv := httptest.NewServer(lp)
		defer lsrv.Close()
		resp, err = http.Get(lsrv.URL + "/v1/services/web")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "answer differs") {
			t.Errorf("a lie through the proxy: %d %s", resp.StatusCode, body)
		}
	})
}
