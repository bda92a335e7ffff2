package node

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/checks"
)

func TestFaultInjection(t *testing.T) {
	f := &faults{}
	do := func(method, body string) (int, string) {
		rec := httptest.NewRecorder()
		f.ServeHTTP(rec, httptest.NewRequest(method, "/v1/debug/unreachable", strings.NewReader(body)))
		return rec.Code, strings.TrimSpace(rec.Body.String())
	}
	if code, body := do(http.MethodPut, `{"targets":["127.0.0.1:8080","db:5432"]}`); code != 200 || body != `{"targets":["127.0.0.1:8080","db:5432"]}` {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if code, _ := do(http.MethodPut, `{"targets":["nohost"]}`); code != 400 {
		t.Fatalf("PUT a bad target: %d", code)
	}
	for _, tc := range []struct {
		c   types.Check
		cut bool
	}{
		{types.Check{Http: &types.HTTPParams{Url: "http://127.0.0.1:8080/health"}}, true},
		{types.Check{Http: &types.HTTPParams{Url: "http://127.0.0.1/"}}, false},
		{types.Check{Tcp: &types.TCPParams{Address: "db:5432"}}, true},
		{types.Check{Grpc: &types.GRPCParams{Address: "db:5433"}}, false},
		{types.Check{Exec: &types.ExecParams{Argv: []string{"/bin/true"}}}, false},
	} {
		r, cut := f.intercept(checks.Target{Check: tc.c})
		if cut != tc.cut || cut && (r.Status != types.STATUS_CRITICAL || !strings.Contains(r.Output, "fault injected")) {
			t.Errorf("intercept(%+v) = %+v, %v; want cut %v", tc.c, r, cut, tc.cut)
		}
	}
	if code, body := do(http.MethodDelete, ""); code != 200 || body != `{"targets":[]}` {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if _, cut := f.intercept(checks.Target{Check: types.Check{Tcp: &types.TCPParams{Address: "db:5432"}}}); cut {
		t.Fatal("healed target still cut")
	}
	if code, _ := do(http.MethodPost, ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", code)
	}
	var none *faults
	if _, cut := none.intercept(checks.Target{Check: types.Check{Tcp: &types.TCPParams{Address: "db:5432"}}}); cut {
		t.Fatal("a node without fault injection cut a target")
	}
}
