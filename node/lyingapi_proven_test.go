package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/proof"
)

// verifyProven checks a proven answer as a verifying client would, against
// the app hash tn committed at its height: the proofs, then the answer
// rebuilt from the proven records alone.
func verifyProven(ctx context.Context, tn testNode, pathAndQuery string, body []byte) (api.Proven, error) {
	var p api.Proven
	if err := json.Unmarshal(body, &p); err != nil {
		return p, fmt.Errorf("decode: %w", err)
	}
	if p.Height < 1 || p.Proofs == nil {
		return p, fmt.Errorf("no proofs at height %d", p.Height)
	}
	appHash, err := tn.node.AppHashAt(p.Height)
	if err != nil {
		return p, fmt.Errorf("app hash at %d: %w", p.Height, err)
	}
	r, err := proof.Verify(p.Proofs, appHash)
	if err != nil {
		return p, fmt.Errorf("proofs at %d: %w", p.Height, err)
	}
	code, rebuilt, err := server.Rebuild(ctx, r, http.MethodGet, pathAndQuery)
	if err != nil {
		return p, fmt.Errorf("rebuild at %d: %w", p.Height, err)
	}
	var told bytes.Buffer
	if err := json.Compact(&told, p.Answer); err != nil {
		return p, fmt.Errorf("compact the answer: %w", err)
	}
	if code != p.Code || !bytes.Equal(told.Bytes(), rebuilt) {
		return p, fmt.Errorf("answer differs at %d: told %d %s, proven records give %d %s", p.Height, p.Code, told.Bytes(), code, rebuilt)
	}
	return p, nil
}

// TestLyingAPINodeProven: the lies of the proven form (?proof=1), each in
// its turn on every read route; each keeps the answer well-formed, and
// only verification tells: honest and stale answers verify (a stale one is
// only old), the others are refused by their proofs or by the answer
// rebuilt from them.
func TestLyingAPINodeProven(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn := startNodeWith(ctx, t, []string{node.ByzLyingAPI})
	defer tn.node.Stop()
	honestSrv := httptest.NewServer(node.HonestAPI(tn.node))
	defer honestSrv.Close()
	setupLieState(ctx, t, tn, honestSrv.URL)
	base := "http://" + tn.httpAddr
	// Key/value entries and a session held by web-1, for the lies on those
	// routes (a lock's holder is read there).
	sid, res, err := tn.client.SessionCreate(ctx, tn.operator.Private, types.SessionCreate{Service: "web", Instance: "web-1", TtlMs: 60_000})
	if err != nil || res.Code != 0 {
		t.Fatalf("session: %+v %v", res, err)
	}
	for _, set := range []types.KVSet{{Key: "cfg/a", Value: []byte("1")}, {Key: "cfg/b", Value: []byte("2")}, {Key: "locks/web-leader", Value: []byte("web-1"), Acquire: sid}} {
		if res, err := tn.client.KVPut(ctx, tn.operator.Private, set); err != nil || res.Code != 0 {
			t.Fatalf("kv put %s: %+v %v", set.Key, res, err)
		}
	}

	F, H, I, S, O := node.LieForgeVerdict, node.LieHideInstance, node.LieInventAlert, node.LieStaleHeight, node.LieOtherProofs
	told := map[string]int{}
	cases := []struct {
		path string
		want []string
	}{
		// The first route's other-proofs turn finds no other proven answer yet.
		{"/v1/services?proof=1", []string{"", F, H, "", S, ""}},
		{"/v1/services/web?proof=1", []string{"", F, H, "", S, O}},
		// A proven absence: nothing to forge or hide, and the proofs of the
		// service list before it prove the absence too: no other-proofs.
		{"/v1/services/nope?proof=1", []string{"", "", "", "", S, ""}},
		{"/v1/checks/web/web-2/http?proof=1", []string{"", F, "", "", S, O}},
		{"/v1/alerts?proof=1", []string{"", F, H, I, S, O}},
		{"/v1/observers?proof=1", []string{"", F, H, "", S, O}},
		{"/v1/receivers?proof=1", []string{"", "", "", "", S, O}},
		{"/v1/sd/prometheus?proof=1", []string{"", F, H, "", S, O}},
		{"/v1/catalog/datacenters?proof=1", []string{"", "", H, "", S, O}},
		{"/v1/catalog/services?proof=1", []string{"", "", "", "", S, O}},
		{"/v1/catalog/nodes?proof=1", []string{"", "", H, "", S, O}},
		{"/v1/agent/services?proof=1", []string{"", F, "", "", S, O}},
		{"/v1/catalog/service/web?proof=1", []string{"", F, H, "", S, O}},
		{"/v1/health/service/web?proof=1", []string{"", F, H, "", S, O}},
		{"/v1/health/checks/web?proof=1", []string{"", F, H, "", S, O}},
		{"/v1/health/state/any?proof=1", []string{"", F, H, "", S, O}},
		{"/v1/kv/cfg/?recurse&proof=1", []string{"", "", H, "", S, O}},
		{"/v1/kv/locks/web-leader?proof=1", []string{"", "", H, "", S, O}},
		{"/v1/session/info/" + sid + "?proof=1", []string{"", "", H, "", S, O}},
		{"/v1/session/list?proof=1", []string{"", "", H, "", S, O}},
		{"/v1/session/node/web-1?proof=1", []string{"", "", H, "", S, O}},
	}
	// Every provable route is lied on, and every one is in this table: a
	// route added to the server without its lies fails here.
	routes := http.NewServeMux()
	for _, p := range node.LyingRoutes {
		routes.HandleFunc(p, func(http.ResponseWriter, *http.Request) {})
	}
	covered := map[string]bool{}
	for _, tc := range cases {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if _, pattern := routes.Handler(r); pattern != "" {
			covered[pattern] = true
		}
	}
	for _, p := range server.ProvableRoutes() {
		if !slices.Contains(node.LyingRoutes, p) || !covered[p] {
			t.Errorf("provable route %s: lied on %v, in this test's table %v: a lying node must lie on every provable route", p, slices.Contains(node.LyingRoutes, p), covered[p])
		}
	}
	for _, tc := range cases {
		var got []string
		var first api.Proven
		var firstBody []byte
		for k := range tc.want {
			if tc.want[k] == S {
				// Once the newest provable version is past the first's.
				waitFor(t, "a new height", 10*time.Second, func() (bool, error) { return tn.node.Height()-1 > first.Height, nil })
			}
			a := getRaw(ctx, t, base, tc.path)
			got = append(got, a.lie)
			told[a.lie]++
			p, err := verifyProven(ctx, tn, tc.path, a.body)
			if k == 0 {
				first, firstBody = p, a.body
			}
			switch a.lie {
			case "":
				if err != nil {
					t.Errorf("GET %s #%d: an honest answer does not verify: %v", tc.path, k, err)
				}
			case S:
				if err != nil || !bytes.Equal(a.body, firstBody) || p.Height >= tn.node.Height()-1 {
					t.Errorf("GET %s #%d: the stale answer is not the first one replayed (%v): %s", tc.path, k, err, a.body)
				}
			default:
				if err == nil {
					t.Errorf("GET %s #%d: the %s lie verifies: %s", tc.path, k, a.lie, a.body)
				}
				if a.lie == O && (p.Height == first.Height && bytes.Equal(mustJSON(t, p.Proofs), mustJSON(t, first.Proofs))) {
					t.Errorf("GET %s #%d: other-proofs kept the proofs", tc.path, k)
				}
				path, _, _ := strings.Cut(tc.path, "?")
				if err := consulLie(path, a.lie, p.Answer); err != nil {
					t.Errorf("GET %s #%d: %v", tc.path, k, err)
				}
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("GET %s: lies %q, want %q", tc.path, got, tc.want)
		}
	}
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

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
