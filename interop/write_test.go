package interop_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/verify"
)

// writeLiar is a node's HTTP API in front of a real one that lies about
// writes: lie, when set, answers a write in the node's place (or rewrites
// the request it forwards, or the answer it got).
type writeLiar struct {
	mu   sync.Mutex
	lie  func(w http.ResponseWriter, r *http.Request, forward func(*http.Request) (*http.Response, []byte)) bool
	last http.Header // the headers of the last write answer passed through
	body []byte      // and its body
}

func newWriteLiar(t *testing.T, upstream string) (*writeLiar, string) {
	u, err := url.Parse("http://" + upstream)
	if err != nil {
		t.Fatal(err)
	}
	l := &writeLiar{}
	rp := httputil.NewSingleHostReverseProxy(u)
	forward := func(r *http.Request) (*http.Response, []byte) {
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.RequestURI, out.Host = u.Scheme, u.Host, "", u.Host
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			t.Errorf("liar: forward: %v", err)
			return &http.Response{StatusCode: 502, Header: http.Header{}}, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		lie := l.lie
		l.mu.Unlock()
		if r.Method != http.MethodGet && lie != nil && lie(w, r, forward) {
			return
		}
		if r.Method == http.MethodGet {
			rp.ServeHTTP(w, r)
			return
		}
		resp, b := forward(r)
		l.mu.Lock()
		l.last, l.body = resp.Header.Clone(), b
		l.mu.Unlock()
		answer(w, resp.StatusCode, resp.Header, b)
	}))
	t.Cleanup(srv.Close)
	return l, strings.TrimPrefix(srv.URL, "http://")
}

func answer(w http.ResponseWriter, code int, h http.Header, body []byte) {
	for k, vs := range h {
		if k != "Content-Length" {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(code)
	w.Write(body)
}

func (l *writeLiar) set(f func(w http.ResponseWriter, r *http.Request, forward func(*http.Request) (*http.Response, []byte)) bool) {
	l.mu.Lock()
	l.lie = f
	l.mu.Unlock()
}

// TestProxyVerifiesWrites: a write through the verifying proxy is answered
// only with its committed outcome (issue 22 item 4): the transaction the
// node names must be in the block, be this request's write and have the
// result its answer says, committed after the request was sent. A node
// that answers true for a write it never sent, sends another write,
// turns a refusal into success, names a transaction that is not in the
// block or replays an older write's answer gets 502 through the proxy;
// an honest node's answers pass, and the proxy's next reads reflect them.
func TestProxyVerifiesWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startKVNode(ctx, t)
	liar, liarAddr := newWriteLiar(t, tn.httpAddr)
	proxy := "http://" + verifyingProxyOf(ctx, t, tn, liarAddr)

	// Honest answers pass, verified.
	code, body, h := do(t, http.MethodPut, proxy+"/v1/kv/app/x", rootToken, []byte("one"))
	if code != 200 || strings.TrimSpace(body) != "true" || h.Get(verify.VerifiedHeightHeader) == "" {
		t.Fatalf("honest put through the proxy: %d %s %v", code, body, h)
	}
	if _, body, _ = do(t, http.MethodGet, proxy+"/v1/kv/app/x?raw", "", nil); body != "one" {
		t.Fatalf("read after the put: %q, want one", body)
	}
	code, body, _ = do(t, http.MethodPut, proxy+"/v1/kv/app/x?cas=1", rootToken, []byte("two"))
	if code != 200 || strings.TrimSpace(body) != "false" {
		t.Fatalf("honest failed cas through the proxy: %d %s, want 200 false", code, body)
	}
	code, body, _ = do(t, http.MethodPut, proxy+"/v1/session/create", rootToken, []byte(`{"Name":"w","TTL":"30s"}`))
	var sess struct{ ID string }
	if code != 200 || json.Unmarshal([]byte(body), &sess) != nil || sess.ID == "" {
		t.Fatalf("honest session create through the proxy: %d %s", code, body)
	}
	code, body, _ = do(t, http.MethodPut, proxy+"/v1/txn", rootToken, []byte(`[{"KV":{"Verb":"set","Key":"app/y","Value":"eQ=="}}]`))
	if code != 200 {
		t.Fatalf("honest txn through the proxy: %d %s", code, body)
	}
	// The cost of the proof, logged (not asserted): a write's answer
	// through the proxy waits for the next header.
	for _, via := range []struct{ name, base string }{{"node", "http://" + tn.httpAddr}, {"proxy", proxy}} {
		var took []time.Duration
		for i := range 5 {
			start := time.Now()
			if code, body, _ := do(t, http.MethodPut, fmt.Sprintf("%s/v1/kv/app/t%d", via.base, i), rootToken, []byte("t")); code != 200 {
				t.Fatalf("put through the %s: %d %s", via.name, code, body)
			}
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		t.Logf("put through the %s: median %s of 5", via.name, took[2].Round(time.Millisecond))
	}
	liar.mu.Lock()
	oldHeaders, oldBody := liar.last.Clone(), liar.body
	liar.mu.Unlock()

	// POST /v1/txs: a signed write the client made itself.
	tx, err := tn.client.Sign(ctx, tn.operator.Private, types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: "app/z", Value: []byte("z")}}})
	if err != nil {
		t.Fatal(err)
	}
	var res api.TxResult
	code, body, _ = do(t, http.MethodPost, proxy+"/v1/txs", "", tx)
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || res.Code != 0 || res.Height == 0 {
		t.Fatalf("honest POST /v1/txs through the proxy: %d %s", code, body)
	}

	fake := make([]byte, 32)
	rand.Read(fake)
	fakeHash := strings.ToUpper(hex.EncodeToString(fake))
	lies := []struct {
		name, method, path string
		body               []byte
		lie                func(w http.ResponseWriter, r *http.Request, forward func(*http.Request) (*http.Response, []byte)) bool
		want               string // in the proxy's 502
	}{
		{"true for a write never sent", "PUT", "/v1/kv/app/lock?acquire=" + sess.ID, nil,
			func(w http.ResponseWriter, r *http.Request, _ func(*http.Request) (*http.Response, []byte)) bool {
				answer(w, 200, http.Header{"Content-Type": {"application/json"}}, []byte("true\n"))
				return true
			}, "did not say which transaction"},
		{"a transaction not in the block", "PUT", "/v1/kv/app/lock?acquire=" + sess.ID, nil,
			func(w http.ResponseWriter, r *http.Request, _ func(*http.Request) (*http.Response, []byte)) bool {
				st, _ := tn.client.Status(r.Context())
				answer(w, 200, http.Header{server.HeaderTx: {fakeHash}, server.HeaderCommitHeight: {fmt.Sprint(st.Height + 1)}}, []byte("true\n"))
				return true
			}, "not in the block"},
		{"another write sent in its place", "PUT", "/v1/kv/app/x", []byte("mine"),
			func(w http.ResponseWriter, r *http.Request, forward func(*http.Request) (*http.Response, []byte)) bool {
				r.Body, r.ContentLength = io.NopCloser(strings.NewReader("theirs")), 6
				resp, b := forward(r)
				answer(w, resp.StatusCode, resp.Header, b)
				return true
			}, "not this request's write"},
		{"a refusal turned into success", "PUT", "/v1/kv/app/x?cas=1", []byte("three"),
			func(w http.ResponseWriter, r *http.Request, forward func(*http.Request) (*http.Response, []byte)) bool {
				resp, _ := forward(r)
				answer(w, 200, resp.Header, []byte("true\n"))
				return true
			}, "committed result conflict"},
		{"an older write's answer replayed", "PUT", "/v1/txn", []byte(`[{"KV":{"Verb":"set","Key":"app/y","Value":"eQ=="}}]`),
			func(w http.ResponseWriter, r *http.Request, _ func(*http.Request) (*http.Response, []byte)) bool {
				answer(w, 200, oldHeaders, oldBody)
				return true
			}, "older transaction's outcome"},
		{"a signed transaction that never committed", "POST", "/v1/txs", nil,
			func(w http.ResponseWriter, r *http.Request, _ func(*http.Request) (*http.Response, []byte)) bool {
				b, _ := io.ReadAll(r.Body)
				st, _ := tn.client.Status(r.Context())
				out, _ := json.Marshal(api.TxResult{Hash: types.TxHash(b), Height: st.Height})
				answer(w, 200, http.Header{"Content-Type": {"application/json"}}, out)
				return true
			}, "not in the block"},
	}
	for _, tc := range lies {
		t.Run(tc.name, func(t *testing.T) {
			liar.set(tc.lie)
			defer liar.set(nil)
			reqBody := tc.body
			if tc.path == "/v1/txs" {
				if reqBody, err = tn.client.Sign(ctx, tn.operator.Private, types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: "app/never", Value: []byte("n")}}}); err != nil {
					t.Fatal(err)
				}
			}
			code, body, _ := do(t, tc.method, proxy+tc.path, rootToken, reqBody)
			if code != http.StatusBadGateway || !strings.Contains(body, tc.want) {
				t.Fatalf("%s %s through the proxy in front of a liar: %d %s, want 502 saying %q", tc.method, tc.path, code, body, tc.want)
			}
		})
	}
	// What the proxy reads afterwards is what the chain holds: the lock
	// was never taken; app/x holds "theirs", the write that did commit.
	if code, _, _ := do(t, http.MethodGet, proxy+"/v1/kv/app/lock", "", nil); code != 404 {
		t.Errorf("app/lock through the proxy: %d, want 404 (the lies took no lock)", code)
	}
	if _, body, _ := do(t, http.MethodGet, proxy+"/v1/kv/app/x?raw", "", nil); body != "theirs" {
		t.Errorf("app/x through the proxy: %q, want theirs", body)
	}
}
