package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/notify"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestNodeDeliversAlert runs a node with a native receiver: when a real
// HTTP service it checks goes down, the committed alert arrives once,
// signed, and the node's receipt is committed (GET /v1/alerts lists it).
func TestNodeDeliversAlert(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var got []notify.Payload
	var sigErrs []error
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := notify.Verify(testSecret, r.Header.Get(notify.HeaderID), r.Header.Get(notify.HeaderTimestamp), r.Header.Get(notify.HeaderSignature), body, time.Now(), 5*time.Minute)
		var p notify.Payload
		if jerr := json.Unmarshal(body, &p); jerr != nil {
			err = jerr
		}
		mu.Lock()
		got = append(got, p)
		if err != nil {
			sigErrs = append(sigErrs, err)
		}
		mu.Unlock()
	}))
	defer recv.Close()

	home, httpAddr := t.TempDir(), freeAddr(t)
	if err := node.Init(node.InitOptions{Home: home, ChainID: "notify-chain", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	st, err := node.ReadSettings(home)
	if err != nil {
		t.Fatal(err)
	}
	// Beside it: a receiver that hangs (cut at its timeout, retried), and
	// one that fails twice with 500 and then resets the connection once;
	// neither holds up the pager.
	// (The server notices the client hanging up only once the body is read.)
	var hung, flaky atomic.Int64
	unhang := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung.Add(1)
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-unhang:
		}
	}))
	defer hang.Close()
	defer close(unhang)
	var flakyOK atomic.Bool
	flakySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := flaky.Add(1); {
		case n <= 2:
			w.WriteHeader(http.StatusInternalServerError)
		case n == 3:
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			flakyOK.Store(true)
		}
	}))
	defer flakySrv.Close()
	st.Notify = notify.Settings{HandoffDelay: "1s", RetryBase: "100ms", RetryMax: "300ms", Receivers: []notify.ReceiverSettings{
		{Name: "pager", URL: recv.URL, Secret: testSecret, Kinds: []string{"state_change"}},
		{Name: "hang", URL: hang.URL, Timeout: "300ms", Kinds: []string{"state_change"}},
		{Name: "flaky", URL: flakySrv.URL, Kinds: []string{"state_change"}},
	}}
	if err := node.WriteSettings(home, st); err != nil {
		t.Fatal(err)
	}
	tn := startNodeAt(ctx, t, home, httpAddr)
	defer tn.node.Stop()

	var down atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer target.Close()
	inst := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Port: 80, Datacenter: "dc1",
		Checks: []types.Check{{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: target.URL}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
	if _, err := tn.client.Register(ctx, tn.operator.Private, inst); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web passing", 30*time.Second, func() (bool, error) {
		ck, err := checkStatus(ctx, tn.client)
		return err == nil && ck.HardStatus == "passing", err
	})
	down.Store(true)
	var alert api.Alert
	waitFor(t, "the alert delivered and its receipt committed", 60*time.Second, func() (bool, error) {
		list, _, err := tn.client.Alerts(ctx, &api.QueryOptions{Service: "web", Kind: "state_change"})
		if err != nil || len(list) == 0 {
			return false, err
		}
		alert = list[0]
		for _, d := range alert.Deliveries {
			if d.Receiver == "pager" {
				return true, nil
			}
		}
		return false, fmt.Errorf("alert %s deliveries %+v", alert.ID, alert.Deliveries)
	})
	waitFor(t, "the flaky receiver served after retries, the hanging one cut and retried", 30*time.Second, func() (bool, error) {
		return flakyOK.Load() && hung.Load() >= 2, fmt.Errorf("flaky %d calls, hang %d calls", flaky.Load(), hung.Load())
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].ID != alert.ID || got[0].To != "critical" || got[0].ChainID != "notify-chain" || len(got[0].Views) != 1 {
		t.Fatalf("received %+v, want alert %s once", got, alert.ID)
	}
	if len(sigErrs) > 0 {
		t.Fatalf("signature: %v", sigErrs)
	}
	if d := alert.Deliveries[0]; d.Name != "node0" {
		t.Errorf("delivery %+v: want one by node0", d)
	}
	if pending, _, err := tn.client.Alerts(ctx, &api.QueryOptions{Service: "web", Pending: true}); err != nil || len(pending) != 0 {
		t.Errorf("?pending lists %+v (%v), want none", pending, err)
	}
	m, err := scrape(ctx, httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, receiver string
		min            float64
	}{
		{"bftmon_notify_delivered_total", "pager", 1},
		{"bftmon_notify_delivered_total", "flaky", 1},
		{"bftmon_notify_retried_total", "flaky", 3},
		{"bftmon_notify_retried_total", "hang", 1},
		{"bftmon_notify_delivery_latency_seconds", "pager", 1},
	} {
		if v, ok := sample(m, tc.name, map[string]string{"receiver": tc.receiver}); !ok || v < tc.min {
			t.Errorf("%s{receiver=%q} = %v, want >= %v", tc.name, tc.receiver, v, tc.min)
		}
	}
}
