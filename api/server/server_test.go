package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/store"
)

func key(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// backend runs a real app over a memory store; a broadcast tx is executed
// in its own block.
type backend struct {
	st       *store.Store
	a        *app.App
	height   int64
	observed []api.PassiveResult
	stalled  bool // Status says the node does not commit
	// committed, if set, is told what each block changed (the node
	// wires Server.Committed the same way).
	committed func(app.Changes)
}

func (b *backend) Tx(_ context.Context, hash string) (api.TxResult, error) {
	return api.TxResult{}, fmt.Errorf("tx %s: %w", hash, api.ErrNotFound)
}

func (b *backend) AppHash(height int64) ([]byte, error) {
	if b.st == nil || height > b.height {
		return nil, fmt.Errorf("height %d not committed: %w", height, api.ErrNotFound)
	}
	r, err := b.st.Reader(height)
	if err != nil {
		return nil, err
	}
	return r.Hash(), nil
}

// Observe accepts results for service "web" only.
func (b *backend) Observe(_ context.Context, r api.PassiveResult) (api.ObserveAck, error) {
	if r.Service != "web" {
		return api.ObserveAck{}, fmt.Errorf("service %q is not registered: %w", r.Service, api.ErrNotFound)
	}
	if r.Check != "backup" {
		return api.ObserveAck{}, fmt.Errorf("check %s is not passive: %w", r.Check, api.ErrBadRequest)
	}
	b.observed = append(b.observed, r)
	return api.ObserveAck{Observer: "o1", Check: r.Service + "/" + r.Instance + "/" + r.Check, Status: types.FromExitCode(r.Code).Name()}, nil
}

func (b *backend) Status(context.Context) (api.Status, error) {
	return api.Status{ChainID: "srv-test", Height: b.height, Committing: !b.stalled, Problem: map[bool]string{true: "not committing since height 1"}[b.stalled]}, nil
}

func (b *backend) Read() (*app.Query, error) {
	r, err := b.st.Reader(0)
	if err != nil {
		return nil, err
	}
	return app.NewQuery(r)
}

func (b *backend) ReadAt(version int64) (server.ProvingReader, error) {
	return b.st.Reader(version)
}

func (b *backend) BroadcastTx(_ context.Context, tx []byte) (api.TxResult, error) {
	b.height++
	b.a.BeginBlock(b.height, b.height*1000)
	log, err := b.a.DeliverTx(tx)
	if err != nil {
		log = err.Error()
	}
	if _, _, err := b.a.EndBlock(); err != nil {
		return api.TxResult{}, err
	}
	if _, _, err := b.st.Commit(); err != nil {
		return api.TxResult{}, err
	}
	if b.committed != nil {
		b.committed(b.a.Changed())
	}
	return api.TxResult{Hash: types.TxHash(tx), Height: b.height, Code: uint32(app.CodeOf(err)), Log: log}, nil
}

// observeToken is the observe token of the servers TestObserve and
// TestObserveRefusals start.
const observeToken = "3f1c0ffee0ddba11c0ffee0ddba113f1c0ffee0ddba11c0ffee0ddba113f1c0f"

func TestObserve(t *testing.T) {
	b := &backend{}
	srv := httptest.NewServer(server.New(b, server.Config{ObserveToken: observeToken}, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	c := api.NewClient(srv.URL)
	ctx := context.Background()
	ack, err := c.Observe(ctx, observeToken, api.PassiveResult{Service: "web", Instance: "web-1", Check: "backup", Code: 1, Output: "backup is 26h old | age=26h"})
	if err != nil || ack.Status != "warning" || ack.Check != "web/web-1/backup" || len(b.observed) != 1 || b.observed[0].Output != "backup is 26h old | age=26h" {
		t.Fatalf("observe = %+v, %v; backend saw %+v", ack, err, b.observed)
	}
	if _, err := c.Observe(ctx, "not-the-token", api.PassiveResult{Service: "web", Instance: "web-1", Check: "backup", Code: 2}); !errors.Is(err, api.ErrUnauthorized) || !strings.Contains(err.Error(), "observe_token") || len(b.observed) != 1 {
		t.Fatalf("observe with a wrong token: %v (%d results queued), want ErrUnauthorized naming the token file", err, len(b.observed))
	}
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"bad code", `{"service":"web","instance":"web-1","check":"backup","code":7}`, 400, "code 7"},
		{"missing check", `{"service":"web","instance":"web-1","code":0}`, 400, "service, instance and check are required"},
		{"unknown field", `{"service":"web","instance":"web-1","check":"backup","state":"ok"}`, 400, "state"},
		{"not json", `code=0`, 400, "want JSON"},
		{"unknown service", `{"service":"db","instance":"db-1","check":"backup","code":0}`, 404, `service "db" is not registered`},
		{"not passive", `{"service":"web","instance":"web-1","check":"http","code":0}`, 400, "not passive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/observe", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+observeToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e api.Error
			_ = json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != tc.code || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("HTTP %d %q, want %d mentioning %q", resp.StatusCode, e.Error, tc.code, tc.want)
			}
		})
	}
	// A client on another machine is refused, token or not: the observer
	// signs what it is given.
	req := httptest.NewRequest(http.MethodPost, "/v1/observe", strings.NewReader(`{"service":"web","instance":"web-1","check":"backup","code":0}`))
	req.RemoteAddr = "192.0.2.7:40000"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+observeToken)
	rec := httptest.NewRecorder()
	server.New(b, server.Config{ObserveToken: observeToken}, slog.New(slog.DiscardHandler)).ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || len(b.observed) != 1 {
		t.Fatalf("remote client: HTTP %d, %d results queued", rec.Code, len(b.observed))
	}
}

// TestObserveRefusals sends passive results to a real server the ways a
// web page (a cross-site form or fetch, DNS rebinding) or a local process
// without the token would: none is queued, and the one request that holds
// the token and is no browser's is.
func TestObserveRefusals(t *testing.T) {
	const body = `{"service":"web","instance":"web-1","check":"backup","code":2,"output":"forged"}`
	bearer := "Bearer " + observeToken
	for _, tc := range []struct {
		name   string
		token  string // server's
		header map[string]string
		code   int
		want   string
	}{
		{"no token", observeToken, map[string]string{"Content-Type": "application/json"}, 401, "run 'bftmon submit' on the observer's host; it reads the token from $BFTMON_HOME/config/observe_token, or pass --token-file"},
		{"wrong token", observeToken, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + strings.Repeat("0", len(observeToken))}, 401, "missing or wrong observe token"},
		{"token prefix", observeToken, map[string]string{"Content-Type": "application/json", "Authorization": bearer[:len(bearer)-1]}, 401, "missing or wrong observe token"},
		{"token not bearer", observeToken, map[string]string{"Content-Type": "application/json", "Authorization": "Basic " + observeToken}, 401, "missing or wrong observe token"},
		// Sent as is (a client's "Bearer " arrives as "Bearer"): an empty
		// token matches no server's, not even one that has none.
		{"server without a token", "", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer "}, 401, "missing or wrong observe token"},
		{"origin", observeToken, map[string]string{"Content-Type": "application/json", "Authorization": bearer, "Origin": "http://evil.example"}, 403, "browsers may not submit results"},
		{"same origin (dns rebinding)", observeToken, map[string]string{"Content-Type": "application/json", "Authorization": bearer, "Origin": "http://127.0.0.1:8500"}, 403, "browsers may not submit results"},
		{"sec-fetch-site", observeToken, map[string]string{"Content-Type": "application/json", "Authorization": bearer, "Sec-Fetch-Site": "cross-site"}, 403, "browsers may not submit results"},
		{"text/plain (simple-request csrf)", observeToken, map[string]string{"Content-Type": "text/plain", "Authorization": bearer}, 415, `content type "text/plain"`},
		{"form (simple-request csrf)", observeToken, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": bearer}, 415, "takes application/json"},
		{"no content type", observeToken, map[string]string{"Authorization": bearer}, 415, "takes application/json"},
		{"token and json", observeToken, map[string]string{"Content-Type": "application/json", "Authorization": bearer}, 202, ""},
		{"token and json with charset", observeToken, map[string]string{"Content-Type": "application/json; charset=utf-8", "Authorization": "bearer " + observeToken}, 202, ""},
		{"typed in by the user", observeToken, map[string]string{"Content-Type": "application/json", "Authorization": bearer, "Sec-Fetch-Site": "none"}, 202, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &backend{}
			h := server.New(b, server.Config{ObserveToken: tc.token}, slog.New(slog.DiscardHandler))
			var resp *http.Response
			if tc.token == "" {
				req := httptest.NewRequest(http.MethodPost, "/v1/observe", strings.NewReader(body))
				req.RemoteAddr = "127.0.0.1:40000"
				for k, v := range tc.header {
					req.Header[k] = []string{v}
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				resp = rec.Result()
			} else {
				srv := httptest.NewServer(h)
				defer srv.Close()
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/observe", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range tc.header {
					req.Header.Set(k, v)
				}
				if resp, err = http.DefaultClient.Do(req); err != nil {
					t.Fatal(err)
				}
			}
			defer resp.Body.Close()
			var e api.Error
			_ = json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != tc.code || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("HTTP %d %q, want %d mentioning %q", resp.StatusCode, e.Error, tc.code, tc.want)
			}
			if queued := len(b.observed); (tc.code == 202) != (queued == 1) || queued > 1 {
				t.Fatalf("HTTP %d with %d results queued", resp.StatusCode, queued)
			}
			if got := resp.Header.Get("WWW-Authenticate"); (tc.code == 401) != strings.HasPrefix(got, "Bearer") {
				t.Fatalf("HTTP %d with WWW-Authenticate %q", resp.StatusCode, got)
			}
		})
	}
}

func newServer(t *testing.T) (*api.Client, string) {
	srv := httptest.NewServer(server.New(newBackend(t), server.Config{}, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return api.NewClient(srv.URL), srv.URL
}

// newBackend is a backend over a memory store with one observer and one
// operator.
func newBackend(t testing.TB) *backend {
	st := store.NewMemory()
	a, err := app.New(st)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(n string) string { return base64.StdEncoding.EncodeToString(key(n).Public().(ed25519.PublicKey)) }
	g := &app.Genesis{
		Observers: []app.GenesisObserver{{Name: "o1", PubKey: pub("o1"), Datacenter: "dc1", Weight: 1}},
		Operators: []app.GenesisOperator{{Name: "root", PubKey: pub("root"), Prefixes: []string{""}}},
	}
	if err := a.InitChain("srv-test", g); err != nil {
		t.Fatal(err)
	}
	return &backend{st: st, a: a}
}

func TestRoutes(t *testing.T) {
	c, url := newServer(t)
	ctx := context.Background()
	inst := types.ServiceInstance{Name: "web", Id: "web-1", Address: "10.0.0.1", Port: 80, Tags: []string{"v2"},
		Meta:   []types.Pair{{Key: "version", Value: "2"}},
		Checks: []types.Check{{Id: "tcp", Kind: "tcp", Tcp: &types.TCPParams{Address: "10.0.0.1:80"}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
	res, err := c.Register(ctx, key("root"), inst)
	if err != nil || res.Code != 0 || res.Height == 0 {
		t.Fatalf("register: %+v %v", res, err)
	}
	if _, err := c.Register(ctx, key("o1"), inst); err == nil || !strings.Contains(err.Error(), "code 4") {
		t.Fatalf("register by a non-operator: err = %v, want a refusal with code 4", err)
	}

	list, _, err := c.Services(ctx, nil)
	if err != nil || len(list) != 1 || list[0].Name != "web" || list[0].Instances != 1 || list[0].Status != "pending" {
		t.Fatalf("services = %+v, %v", list, err)
	}
	insts, _, err := c.Service(ctx, "web", nil)
	if err != nil || len(insts) != 1 {
		t.Fatalf("service = %+v, %v", insts, err)
	}
	in := insts[0]
	if in.Address != "10.0.0.1" || in.Port != 80 || in.Meta["version"] != "2" || len(in.Checks) != 1 {
		t.Fatalf("instance = %+v", in)
	}
	ch := in.Checks[0]
	if ch.Status != "stale" || ch.HardStatus != "pending" || ch.Interval != "1s" || ch.Target != "10.0.0.1:80" ||
		len(ch.Observers) != 1 || ch.Observers[0].Name != "o1" || ch.Observers[0].Status != "pending" {
		t.Fatalf("check = %+v", ch)
	}

	if _, _, err := c.Service(ctx, "nope", nil); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), `"nope" is not registered`) {
		t.Fatalf("unknown service: %v", err)
	}
	if alerts, _, err := c.Alerts(ctx, &api.QueryOptions{Limit: 10}); err != nil || len(alerts) != 0 {
		t.Fatalf("alerts = %+v, %v", alerts, err)
	}
	if obs, _, err := c.Observers(ctx, nil); err != nil || len(obs) != 1 || obs[0].Name != "o1" || obs[0].Datacenter != "dc1" || obs[0].Suspect || obs[0].Agreed+obs[0].Disagreed != 0 {
		t.Fatalf("observers = %+v, %v", obs, err)
	}
	if h, err := c.AppHash(ctx, res.Height); err != nil || h.Height != res.Height || len(h.AppHash) != 64 {
		t.Fatalf("app hash at %d = %+v, %v", res.Height, h, err)
	}
	if _, err := c.AppHash(ctx, 999); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("app hash above the last height: %v, want not found", err)
	}

	for _, tc := range []struct {
		method, path string
		body         []byte
		code         int
		want         string
	}{
		{"GET", "/v1/nothing", nil, 404, "no route"},
		{"GET", "/v1/alerts?limit=x", nil, 400, "limit"},
		{"GET", "/v1/alerts?limit=0", nil, 400, "limit"},
		{"POST", "/v1/txs", nil, 400, "empty body"},
		{"POST", "/v1/txs", bytes.Repeat([]byte{1}, server.MaxBody+1), 413, "above"},
		{"POST", "/v1/txs", []byte("junk"), 200, `"code": 1`},
		{"DELETE", "/v1/services", nil, 405, "use GET"},
	} {
		req, _ := http.NewRequest(tc.method, url+tc.path, bytes.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(buf.String(), tc.want) {
			t.Errorf("%s %s: %d %s, want %d containing %q", tc.method, tc.path, resp.StatusCode, buf.String(), tc.code, tc.want)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content type %q", tc.method, tc.path, ct)
		}
	}
}

// TestStatusSaysWhenNotCommitting: a node that commits no more answers
// GET /v1/status with 503 and why, never from the answer cache, and its
// client calls fail naming it.
func TestStatusSaysWhenNotCommitting(t *testing.T) {
	b := &backend{st: store.NewMemory(), height: 7}
	a, err := app.New(b.st)
	if err != nil {
		t.Fatal(err)
	}
	b.a = a
	srv := httptest.NewServer(server.New(b, server.Config{}, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	c := api.NewClient(srv.URL)
	if st, err := c.Status(context.Background()); err != nil || !st.Committing {
		t.Fatalf("healthy: %+v %v", st, err)
	}
	b.stalled = true
	resp, err := http.Get(srv.URL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Committing bool   `json:"committing"`
		Height     int64  `json:"height"`
		Error      string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || body.Committing || body.Height != 7 || !strings.Contains(body.Error, "not committing since height 1") {
		t.Fatalf("stalled: HTTP %d %+v", resp.StatusCode, body)
	}
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "not committing") {
		t.Fatalf("client status of a stalled node: %v", err)
	}
}
