package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/internal/testutil"
)

// progressLog collects a client's progress lines and tells when one
// containing a string has been written.
type progressLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (p *progressLog) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Write(b)
}

func (p *progressLog) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// TestClientWaitsForNodeToListen: a client given --wait keeps trying a node
// that refuses connections, saying so, and answers once the node listens.
func TestClientWaitsForNodeToListen(t *testing.T) {
	addr := testutil.FreeAddr(t)
	var progress progressLog
	c := api.NewClient(addr).WithWait(time.Minute, &progress)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		st  api.Status
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := c.Status(ctx)
		done <- result{st, err}
	}()
	testutil.WaitFor(t, "a progress line about the refused connection", 30*time.Second, func() (bool, error) {
		return strings.Contains(progress.String(), "waiting for node at http://"+addr+": connection refused"), nil
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"chain_id":"c","height":7,"committing":true}`))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	r := <-done
	if r.err != nil || r.st.Height != 7 {
		t.Fatalf("Status once the node listens: %+v %v, want height 7", r.st, r.err)
	}
}

// TestClientFailsAtOnceWithoutWait: wait 0 (the default) reports a node that
// is not up at once, with what to do.
func TestClientFailsAtOnceWithoutWait(t *testing.T) {
	addr := testutil.FreeAddr(t)
	var progress progressLog
	_, err := api.NewClient(addr).WithWait(0, &progress).Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach bftmon at http://"+addr) {
		t.Fatalf("Status of a node not listening: %v, want cannot reach", err)
	}
	if progress.String() != "" {
		t.Errorf("progress without waiting: %q", progress.String())
	}
}

// TestClientRetriesCatchingUp: POST /v1/txs answered 503 with Retry-After
// (the node is catching up and took nothing) is sent again, the very same
// signed bytes, until the node takes it; the client signs once.
func TestClientRetriesCatchingUp(t *testing.T) {
	var statusCalls, posts atomic.Int32
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/status":
			statusCalls.Add(1)
			w.Write([]byte(`{"chain_id":"c","height":0,"committing":true,"catching_up":true,"expected_peers":3}`))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/txs":
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, body)
			mu.Unlock()
			if posts.Add(1) <= 3 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"error":"the node is catching up (height 0 of 12, 1 of 3 peers connected) and takes no transactions yet: send it again later: node not ready"}`))
				return
			}
			w.Write([]byte(`{"hash":"x","height":13,"code":0}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	var progress progressLog
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := api.NewClient(srv.URL).WithWait(time.Minute, &progress).Deregister(ctx, key, "web", "web-1")
	if err != nil || res.Height != 13 {
		t.Fatalf("Deregister while the node catches up: %+v %v, want committed at height 13", res, err)
	}
	if n := posts.Load(); n != 4 {
		t.Errorf("%d POSTs, want 4 (3 refused, then taken)", n)
	}
	if n := statusCalls.Load(); n != 1 {
		t.Errorf("%d status calls, want 1: the tx is signed once", n)
	}
	for i, b := range bodies {
		if !bytes.Equal(b, bodies[0]) {
			t.Errorf("POST %d sent other bytes than the first: a retry must send the same signed transaction", i)
		}
	}
	if !strings.Contains(progress.String(), "waiting for node at "+srv.URL+": POST /v1/txs: HTTP 503: the node is catching up (height 0 of 12") {
		t.Errorf("progress %q, want a line saying the node is catching up", progress.String())
	}
}

// TestClientNoRetryOfTakenTxWithoutWait: a 503 without Retry-After (the node
// took the tx but did not commit it in time) is not sent again without a
// wait; the client looks for it by hash instead and says what to do.
func TestClientNoRetryOfTakenTxWithoutWait(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/status":
			w.Write([]byte(`{"chain_id":"c","height":5,"committing":true}`))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/txs":
			posts.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"tx accepted into the mempool but not committed yet: context deadline exceeded"}`))
		case strings.HasPrefix(r.URL.Path, "/v1/txs/"):
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no committed block holds it (yet)"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := api.NewClient(srv.URL).Deregister(ctx, key, "web", "web-1")
	if err == nil || !strings.Contains(err.Error(), "has not committed tx") || errors.Is(err, api.ErrNotReady) {
		t.Fatalf("Deregister not committed in time: %v, want not committed (and not ErrNotReady: the node took it)", err)
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("%d POSTs without --wait, want 1", n)
	}
}

// TestClientResendsSameBytesWhenNotCommitted: with a wait, a tx the node
// took but did not commit is looked up by hash and, not found, sent again
// as the same bytes; the second copy committing is reported, and a replay
// answer for its own earlier copy is reported as that copy's commit.
func TestClientResendsSameBytesWhenNotCommitted(t *testing.T) {
	var posts atomic.Int32
	var committed atomic.Bool
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/status":
			w.Write([]byte(`{"chain_id":"c","height":5,"committing":true}`))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/txs":
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, body)
			mu.Unlock()
			if posts.Add(1) == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"error":"tx accepted into the mempool but not committed yet: context deadline exceeded"}`))
				return
			}
			// The first copy was committed meanwhile: the second is a replay.
			committed.Store(true)
			w.Write([]byte(`{"hash":"x","height":0,"code":3,"log":"replay"}`))
		case strings.HasPrefix(r.URL.Path, "/v1/txs/"):
			if !committed.Load() {
				w.WriteHeader(http.StatusNotFound)
				w.Write([]byte(`{"error":"no committed block holds it (yet)"}`))
				return
			}
			w.Write([]byte(`{"hash":"x","height":8,"code":0}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	var progress progressLog
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := api.NewClient(srv.URL).WithWait(time.Minute, &progress).Deregister(ctx, key, "web", "web-1")
	if err != nil || res.Height != 8 || res.Code != 0 {
		t.Fatalf("Deregister: %+v %v, want the first copy's commit at height 8", res, err)
	}
	if len(bodies) != 2 || !bytes.Equal(bodies[0], bodies[1]) {
		t.Fatalf("%d POSTs, want 2 of the same bytes", len(bodies))
	}
	if !strings.Contains(progress.String(), "sending the same signed transaction again") {
		t.Errorf("progress %q, want a line about sending it again", progress.String())
	}
}

// TestReplayCodeIsApps: the client's copy of the replay code is the app's.
func TestReplayCodeIsApps(t *testing.T) {
	if api.ReplayCode != uint32(app.CodeReplay) {
		t.Fatalf("api.ReplayCode %d, app.CodeReplay %d", api.ReplayCode, app.CodeReplay)
	}
}
