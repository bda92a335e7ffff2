package api_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
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

// TestClientRechecksByHash: when the node goes away after taking a
// transaction (a crash before it answered), the client asks for it by hash
// and reports where it was committed, instead of a failure.
func TestClientRechecksByHash(t *testing.T) {
	var asked atomic.Int32
	var sent atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/status":
			w.Write([]byte(`{"chain_id":"c","height":7}`))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/txs":
			body, _ := io.ReadAll(r.Body)
			sent.Store(types.TxHash(body))
			conn, _, err := w.(http.Hijacker).Hijack() // the node dies mid-request
			if err == nil {
				conn.Close()
			}
		case strings.HasPrefix(r.URL.Path, "/v1/txs/"):
			if asked.Add(1) < 3 { // not yet: the block is still to come
				w.WriteHeader(http.StatusNotFound)
				w.Write([]byte(`{"error":"no committed block holds it (yet)"}`))
				return
			}
			if h, _ := sent.Load().(string); h != strings.TrimPrefix(r.URL.Path, "/v1/txs/") {
				t.Errorf("asked for %s, sent %s", r.URL.Path, h)
			}
			w.Write([]byte(`{"hash":"x","height":9,"code":0}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := api.NewClient(strings.TrimPrefix(srv.URL, "http://")).Deregister(ctx, key, "web", "web-1")
	if err != nil || res.Height != 9 {
		t.Fatalf("Deregister after the node went away: %+v %v, want committed at height 9", res, err)
	}
}
