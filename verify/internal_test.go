package verify

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestJSONDiff(t *testing.T) {
	for _, tc := range []struct {
		node, rebuilt, want string
	}{
		{`[{"a":1,"b":[1,2]}]`, "[\n  {\"b\": [1, 2], \"a\": 1}\n]\n", ""},
		{`[{"status":"passing"}]`, `[{"status":"critical"}]`, `$[0].status: the node says "passing", the proven records "critical"`},
		{`[1,2]`, `[1,2,3]`, `$: the node says 2 entries, the proven records 3`},
		{`{"a":1}`, `{"a":1,"b":2}`, `$.b: the node says nothing, the proven records 2`},
		{`{`, `{}`, `the node's answer is no JSON`},
	} {
		if got := jsonDiff([]byte(tc.node), []byte(tc.rebuilt)); !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("jsonDiff(%s, %s) = %q, want %q", tc.node, tc.rebuilt, got, tc.want)
		}
	}
}

// TestProxyRoutes: writes reach the node unchanged and an unproven answer
// to them is refused, other methods are refused, and a node that will not prove (or sends no proofs) gets a
// 502 whose error JSON says so; nothing of the node's answer comes through.
func TestProxyRoutes(t *testing.T) {
	var gotTx []byte
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/txs":
			gotTx, _ = io.ReadAll(r.Body)
			w.Write([]byte(`{"hash":"AB","height":7,"code":0}`))
		case r.URL.Path == "/v1/services/web" && r.URL.Query().Get("proof") == "1":
			w.Write([]byte(`{"height":5,"code":200,"index":3,"answer":[{"id":"web-1","status":"passing"}]}`))
		case r.URL.Query().Get("proof") == "1":
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"proof: not provable here"}`))
		default:
			w.Write([]byte(`[{"id":"web-1","status":"passing"}]`))
		}
	}))
	defer upstream.Close()
	p, err := NewProxy(NewClient(upstream.URL, &Headers{}), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(p)
	defer proxy.Close()

	// Writes reach the node unchanged, and its answer reaches the client
	// only once proven: this node proves nothing (TestProxyVerifiesWrites
	// in interop/ has the proven case).
	resp, err := http.Post(proxy.URL+"/v1/txs", "application/octet-stream", strings.NewReader("signed-tx"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || string(gotTx) != "signed-tx" || !strings.Contains(string(body), "not verified") {
		t.Errorf("POST /v1/txs: %d %s (node got %q), want the tx passed on and 502 for its unproven answer", resp.StatusCode, body, gotTx)
	}
	// Consul-style writes pass on to the node, which signs them; an answer
	// that does not say which transaction committed is not taken.
	for _, mp := range [][2]string{{http.MethodPut, "/v1/kv/a?cas=0"}, {http.MethodDelete, "/v1/kv/a"}, {http.MethodPut, "/v1/txn"}, {http.MethodPut, "/v1/session/create"}} {
		req, _ := http.NewRequest(mp[0], proxy.URL+mp[1], strings.NewReader("v"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "did not say which transaction") {
			t.Errorf("%s %s: %d %s, want 502: the node's success names no transaction", mp[0], mp[1], resp.StatusCode, body)
		}
	}
	for _, tc := range []struct {
		method, path string
		code         int
		want         string
	}{
		{http.MethodPost, "/v1/observe", http.StatusMethodNotAllowed, "serves reads"},
		{http.MethodDelete, "/v1/services/web", http.StatusMethodNotAllowed, "serves reads"},
		{http.MethodPost, "/v1/kv/a", http.StatusMethodNotAllowed, "serves reads"},
		{http.MethodGet, "/v1/alerts", http.StatusBadGateway, "node refused proof: HTTP 400: proof: not provable here"},
		{http.MethodGet, "/v1/services/web", http.StatusBadGateway, "node sent no proofs"},
	} {
		req, _ := http.NewRequest(tc.method, proxy.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct{ Error string }
		if resp.StatusCode != tc.code || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.want)
		}
		if tc.code == http.StatusBadGateway && !strings.Contains(e.Error, ErrNotVerified.Error()) {
			t.Errorf("%s %s: %q does not say not verified", tc.method, tc.path, e.Error)
		}
	}
	_, err = NewClient(upstream.URL, &Headers{}).Get(t.Context(), "/v1/services/web")
	if !errors.Is(err, ErrNotVerified) {
		t.Errorf("Get without proofs: %v", err)
	}
}
