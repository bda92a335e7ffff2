package verify_test

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/verify"
)

// TestProxyProvesEveryProvableRoute: a GET of every route the server
// answers with proofs (server.ProvableRoutes) goes through the verifying
// proxy as a proven read (?proof=1), never passed on as the node's word:
// a provable route added to the server that the proxy does not prove
// fails here.
func TestProxyProvesEveryProvableRoute(t *testing.T) {
	var mu sync.Mutex
	proven := map[string]bool{}
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("proof") == "1" {
			mu.Lock()
			proven[r.URL.Path] = true
			mu.Unlock()
		}
		http.Error(w, "this test node proves nothing", http.StatusServiceUnavailable)
	}))
	defer node.Close()
	p, err := verify.NewProxy(verify.NewClient(node.URL, nil), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	wild := regexp.MustCompile(`\{[^}]*\}`)
	routes := server.ProvableRoutes()
	if len(routes) < 19 {
		t.Fatalf("only %d provable routes: %v", len(routes), routes)
	}
	for _, pattern := range routes {
		method, path, _ := strings.Cut(pattern, " ")
		path = wild.ReplaceAllString(path, "x")
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		mu.Lock()
		ok := proven[path]
		mu.Unlock()
		if !ok || rec.Code != http.StatusBadGateway {
			t.Errorf("%s (%s %s): proxy answered %d, node asked for proofs: %v; want a proven read, refused (502) as nothing verifies", pattern, method, path, rec.Code, ok)
		}
	}
}
