package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/proof"
)

// provenRoutes are reads of every route of the agreed state, with answers
// of every kind: lists, one record, filters, a proven absence (404),
// Consul's plain-text 500 for an unknown datacenter.
var provenRoutes = []struct {
	path string
	code int
}{
	{"/v1/services", 200},
	{"/v1/services?status=critical", 200},
	{"/v1/services?tag=canary&dc=dc1", 200},
	{"/v1/services/web", 200},
	{"/v1/services/web?near=dc2&meta.ver=1", 200},
	{"/v1/services/nope", 404},
	{"/v1/checks/web/web-1/p", 200},
	{"/v1/checks/web/web-9/p", 404},
	{"/v1/alerts", 200},
	{"/v1/alerts?service=web&limit=1", 200},
	{"/v1/observers", 200},
	{"/v1/observers?dc=dc2", 200},
	{"/v1/receivers", 200},
	{"/v1/sd/prometheus", 200},
	{"/v1/sd/prometheus?service=web&status=passing", 200},
	{"/v1/catalog/datacenters", 200},
	{"/v1/catalog/services", 200},
	{"/v1/catalog/services?dc=nowhere", 500},
	{"/v1/catalog/service/web?tag=primary", 200},
	{"/v1/catalog/service/nope", 200},
	{"/v1/health/service/web?passing", 200},
	{"/v1/health/service/web?near=dc1", 200},
	{"/v1/health/checks/web", 200},
	{"/v1/health/state/critical", 200},
	{"/v1/health/state/any?dc=dc2", 200},
	{"/v1/agent/services", 200},
	{"/v1/catalog/nodes?dc=dc2", 200},
	{"/v1/kv/cfg/a", 200},
	{"/v1/kv/cfg/a?raw", 200},
	{"/v1/kv/cfg/lock", 200}, // the lock holder: the entry's Session
	{"/v1/kv/cfg/?recurse", 200},
	{"/v1/kv/?keys&separator=/", 200},
	{"/v1/kv/nope", 404},
	{"/v1/kv/cfg/none?recurse", 404},
	{"/v1/session/list", 200},
	{"/v1/session/node/web-1", 200},
}

// getProven fetches path with ?proof=1 and decodes the proven answer.
func getProven(t testing.TB, base, path string) (api.Proven, *http.Response) {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	resp, err := http.Get(base + path + sep + "proof=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	bz, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s?proof=1: HTTP %d %s", path, resp.StatusCode, bz)
	}
	var p api.Proven
	if err := json.Unmarshal(bz, &p); err != nil {
		t.Fatalf("GET %s?proof=1: %v in %s", path, err, bz)
	}
	return p, resp
}

func compact(t testing.TB, raw []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("compact %s: %v", raw, err)
	}
	return b.Bytes()
}

// TestProvenReads: every read route with ?proof=1 answers the plain answer
// of the newest provable version with proofs that verify against that
// version's hash, and rebuilding the answer from the verified records
// alone (what a verifying client does) gives the same status and body.
func TestProvenReads(t *testing.T) {
	n := newReadNet(t)
	ctx := context.Background()
	for _, rt := range provenRoutes {
		t.Run(rt.path, func(t *testing.T) {
			p, resp := getProven(t, n.url, rt.path)
			latest := n.b.height
			if p.Height != latest-1 || p.Code != rt.code || resp.Header.Get(server.HeaderHeight) != fmt.Sprint(p.Height) {
				t.Fatalf("height %d (header %s), code %d; want %d and %d", p.Height, resp.Header.Get(server.HeaderHeight), p.Code, latest-1, rt.code)
			}
			if p.Code == 200 && (p.Index < 1 || resp.Header.Get(api.IndexHeader) != fmt.Sprint(p.Index)) {
				t.Fatalf("index %d, header %q", p.Index, resp.Header.Get(api.IndexHeader))
			}
			r, err := n.b.st.Reader(p.Height)
			if err != nil {
				t.Fatal(err)
			}
			vr, err := proof.Verify(p.Proofs, r.Hash())
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			sep := "?"
			if strings.Contains(rt.path, "?") {
				sep = "&"
			}
			code, body, err := server.Rebuild(ctx, vr, http.MethodGet, rt.path+sep+"proof=1&index=3")
			if err != nil {
				t.Fatalf("rebuild: %v", err)
			}
			if code != p.Code || !bytes.Equal(body, compact(t, p.Answer)) {
				t.Fatalf("rebuilt %d %s\nnode's   %d %s", code, body, p.Code, compact(t, p.Answer))
			}
			// The answer is the plain one of that version: the same
			// route over the store itself, unproven.
			code, body, err = server.Rebuild(ctx, r, http.MethodGet, rt.path)
			if err != nil || code != p.Code || !bytes.Equal(body, compact(t, p.Answer)) {
				t.Fatalf("plain at %d: %d %s (%v)\nproven: %d %s", p.Height, code, body, err, p.Code, compact(t, p.Answer))
			}
			// Against another version's hash, the proofs fail.
			other, err := n.b.st.Reader(latest)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := proof.Verify(p.Proofs, other.Hash()); err == nil {
				t.Fatalf("proofs of %d verified against the hash of %d", p.Height, latest)
			}
			// Asked again, the cached answer is the same.
			again, _ := getProven(t, n.url, rt.path)
			if again.Height != p.Height || !bytes.Equal(again.Answer, p.Answer) || !bytes.Equal(again.Proofs.Proof, p.Proofs.Proof) {
				t.Fatal("a second proven read differs")
			}
		})
	}
}

// TestProofRefused: the routes whose answers are no function of the
// agreed state, a bad ?proof= value and ?near=_agent (this node's own
// datacenter) refuse the proven form with 400; ?proof=0 is the plain form.
func TestProofRefused(t *testing.T) {
	n := newReadNet(t)
	for _, path := range []string{
		"/v1/status?proof=1", "/v1/status?proof=true&index=1", "/v1/apphash/1?proof=1",
		"/v1/txs/" + strings.Repeat("A", 64) + "?proof=1", "/v1/agent/self?proof=1", "/v1/status/leader?proof",
		"/v1/services?proof=maybe", "/v1/health/service/web?proof=1&near=_agent",
	} {
		resp, err := http.Get(n.url + path)
		if err != nil {
			t.Fatal(err)
		}
		bz, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: HTTP %d %s, want 400", path, resp.StatusCode, bz)
		}
	}
	var list []api.ServiceSummary
	n.get("/v1/services?proof=0", &list)
	if len(list) != 1 {
		t.Fatalf("plain form: %+v", list)
	}
	// A rebuild has no node status to answer with.
	r, err := n.b.st.Reader(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := server.Rebuild(context.Background(), r, http.MethodGet, "/v1/status"); err == nil {
		t.Fatal("rebuilt /v1/status")
	}
}

// TestRebuildRefusesUnproven: a rebuild that needs a record its reader
// does not prove fails, naming it.
func TestRebuildRefusesUnproven(t *testing.T) {
	n := newReadNet(t)
	r, err := n.b.st.Reader(0)
	if err != nil {
		t.Fatal(err)
	}
	rec := proof.NewRecorder(r)
	if _, err := rec.Get([]byte("m/info")); err != nil {
		t.Fatal(err)
	}
	b, err := proof.Prove(r, rec)
	if err != nil {
		t.Fatal(err)
	}
	vr, err := proof.Verify(b, r.Hash())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = server.Rebuild(context.Background(), vr, http.MethodGet, "/v1/services/web")
	if err == nil || !strings.Contains(err.Error(), `range "o/": not proven`) {
		t.Fatalf("rebuild of /v1/services/web from the proof of m/info: %v, want o/ not proven", err)
	}
}

// TestProvenBlockingQuery: a blocking proven read waits until the proven
// answer's index moves: a change committed at height H is answered once
// H+1 is committed, with the proofs of H.
func TestProvenBlockingQuery(t *testing.T) {
	n := newReadNet(t)
	n.send("root", types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: types.ServiceInstance{Name: "db", Id: "db-1",
		Checks: []types.Check{{Id: "p", Kind: "passive", TtlMs: 600_000}}}}}}) // one more block: web's last change is provable
	p, _ := getProven(t, n.url, "/v1/services/web")
	type result struct {
		p   api.Proven
		err error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("%s/v1/services/web?proof=1&index=%d&wait=1m", n.url, p.Index))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var out api.Proven
		err = json.NewDecoder(resp.Body).Decode(&out)
		done <- result{out, err}
	}()
	waitFor(t, "the query to block", func() bool { return n.srv.Parked() == 1 })
	// web-1 turns critical for o1: web's agreed state changes, but only
	// the next block makes that version provable.
	changed := n.send("o1", types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: []types.Observation{
		{Service: "web", Instance: "web-1", Check: "p", Status: types.STATUS_CRITICAL, Output: "down"}}}}})
	if now, _ := getProven(t, n.url, "/v1/services/web"); now.Height != changed.Height-1 || now.Index != p.Index {
		t.Fatalf("proven at height %d index %d right after the change at %d; want %d and %d", now.Height, now.Index, changed.Height, changed.Height-1, p.Index)
	}
	n.send("o2", types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: []types.Observation{
		{Service: "web", Instance: "web-1", Check: "p", Status: types.STATUS_CRITICAL, Output: "down"}}}}})
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the blocking proven read did not answer")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.p.Height < changed.Height || r.p.Index <= p.Index {
		t.Fatalf("answered at height %d index %d; want height %d or above, index above %d", r.p.Height, r.p.Index, changed.Height, p.Index)
	}
	st, err := n.b.st.Reader(r.p.Height)
	if err != nil {
		t.Fatal(err)
	}
	vr, err := proof.Verify(r.p.Proofs, st.Hash())
	if err != nil {
		t.Fatal(err)
	}
	var insts []api.Instance
	if err := json.Unmarshal(r.p.Answer, &insts); err != nil || insts[0].Checks[0].Status == "passing" {
		t.Fatalf("answer %s: %v", r.p.Answer, err)
	}
	if code, body, err := server.Rebuild(context.Background(), vr, http.MethodGet, "/v1/services/web"); err != nil || code != 200 || !bytes.Equal(body, compact(t, r.p.Answer)) {
		t.Fatalf("rebuilt %d %s %v", code, body, err)
	}
}

// provenNet is a server over a real app with service "web" of size
// instances, each with one passive check reported by its one observer.
type provenNet struct {
	b   *backend
	srv *server.Server
}

func newProvenNet(tb testing.TB, size int) *provenNet {
	tb.Helper()
	b := newBackend(tb)
	nonce := map[string]uint64{}
	send := func(signer string, msg types.Msg) {
		nonce[signer]++
		tx, err := types.SignTx("srv-test", key(signer), nonce[signer], msg)
		if err != nil {
			tb.Fatal(err)
		}
		if res, err := b.BroadcastTx(context.Background(), tx); err != nil || res.Code != 0 {
			tb.Fatalf("tx by %s: %+v %v", signer, res, err)
		}
	}
	var obs []types.Observation
	for i := range size {
		id := fmt.Sprintf("web-%03d", i)
		send("root", types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: types.ServiceInstance{
			Name: "web", Id: id, Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: 8080, Datacenter: "dc1",
			Tags: []string{"http"}, Meta: []types.Pair{{Key: "ver", Value: "1"}},
			Checks: []types.Check{{Id: "p", Kind: "passive", TtlMs: 600_000}},
		}}}})
		obs = append(obs, types.Observation{Service: "web", Instance: id, Check: "p", Status: types.STATUS_PASSING, LatencyUs: 1500, Output: "HTTP 200"})
	}
	send("o1", types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs}}})
	send("o1", types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs[:1]}}}) // one more block
	return &provenNet{b: b, srv: server.New(b, server.Config{}, slog.New(slog.DiscardHandler))}
}

// TestProvenSize measures a proven answer of a service of 100 instances
// beside the plain one (go test -v -run TestProvenSize ./api/server/).
func TestProvenSize(t *testing.T) {
	const size = 100
	n := newProvenNet(t, size)
	get := func(path string) []byte {
		rec := httptest.NewRecorder()
		n.srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		return rec.Body.Bytes()
	}
	plain := get("/v1/services/web")
	proven := get("/v1/services/web?proof=1")
	var p api.Proven
	if err := json.Unmarshal(proven, &p); err != nil {
		t.Fatal(err)
	}
	bundle, _ := json.Marshal(p.Proofs)
	t.Logf("/v1/services/web, %d instances: plain %d B (%d B/instance); proven %d B (%d B/instance): proofs %d B of protobuf (%d B/instance), %d B as JSON, %d keys, %d ranges",
		size, len(plain), len(plain)/size, len(proven), len(proven)/size, len(p.Proofs.Proof), len(p.Proofs.Proof)/size, len(bundle), len(p.Proofs.Keys), len(p.Proofs.Ranges))
	r, err := n.b.st.Reader(p.Height)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	vr, err := proof.Verify(p.Proofs, r.Hash())
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := server.Rebuild(context.Background(), vr, http.MethodGet, "/v1/services/web")
	if err != nil || code != 200 || !bytes.Equal(body, compact(t, p.Answer)) {
		t.Fatalf("rebuild: %d %v", code, err)
	}
	t.Logf("client side: verify and rebuild %v", time.Since(start))
}

// BenchmarkServiceRead: the server's cost of /v1/services/web of 100
// instances, plain and proven, uncached (every request is the first of its
// height: ?wait= differs) and cached (the same request within a block).
func BenchmarkServiceRead(b *testing.B) {
	n := newProvenNet(b, 100)
	for _, bc := range []struct {
		name, query string
		cached      bool
	}{
		{"plain", "", false}, {"proof", "&proof=1", false},
		{"plain-cached", "", true}, {"proof-cached", "&proof=1", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				path := "/v1/services/web?wait=1s" + bc.query
				if !bc.cached {
					i++
					path = fmt.Sprintf("/v1/services/web?wait=%dms%s", i, bc.query)
				}
				rec := httptest.NewRecorder()
				n.srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

// BenchmarkVerifyRebuild: the client's cost of checking a proven answer of
// /v1/services/web of 100 instances: proof.Verify, then Rebuild.
func BenchmarkVerifyRebuild(b *testing.B) {
	n := newProvenNet(b, 100)
	rec := httptest.NewRecorder()
	n.srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/services/web?proof=1", nil))
	var p api.Proven
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		b.Fatal(err)
	}
	r, err := n.b.st.Reader(p.Height)
	if err != nil {
		b.Fatal(err)
	}
	hash := r.Hash()
	for b.Loop() {
		vr, err := proof.Verify(p.Proofs, hash)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := server.Rebuild(context.Background(), vr, http.MethodGet, "/v1/services/web"); err != nil {
			b.Fatal(err)
		}
	}
}
