package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/api"
)

// TestClientErrorsSayItOnce: a refusal carries the node's own message once,
// and still matches its kind.
func TestClientErrorsSayItOnce(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		kind   error
		want   string
	}{
		{http.StatusNotFound, `{"error":"not found"}`, api.ErrNotFound, "not found"},
		{http.StatusNotFound, `{"error":"no service named web"}`, api.ErrNotFound, "no service named web"},
		{http.StatusBadRequest, `{"error":"bad index"}`, api.ErrBadRequest, "bad index"},
		{http.StatusUnauthorized, `{"error":"no token"}`, api.ErrUnauthorized, "no token"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(tc.status)
			w.Write([]byte(tc.body))
		}))
		_, _, err := api.NewClient(strings.TrimPrefix(srv.URL, "http://")).Service(context.Background(), "web", nil)
		srv.Close()
		if err == nil || err.Error() != tc.want || !errors.Is(err, tc.kind) {
			t.Errorf("HTTP %d %s: error %q (is %v: %v), want %q", tc.status, tc.body, err, tc.kind, errors.Is(err, tc.kind), tc.want)
		}
	}
}
