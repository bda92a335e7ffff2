package interop_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKVThroughput measures committed puts per second through the HTTP
// API (token writes, each answered at its commit) from 1 and 16 clients,
// and, with wrk, reads per second of GET /v1/kv/KEY, on a one-node network
// with the dev node's block interval (500 ms). It runs with
// BFTMON_KV_BENCH=1 only: a measurement, not a check
// (BFTMON_KV_BENCH_BLOCK=100ms sets another block interval).
func TestKVThroughput(t *testing.T) {
	if os.Getenv("BFTMON_KV_BENCH") == "" {
		t.Skip("a measurement: set BFTMON_KV_BENCH=1")
	}
	blockInterval = 500 * time.Millisecond
	if v := os.Getenv("BFTMON_KV_BENCH_BLOCK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("BFTMON_KV_BENCH_BLOCK=%q: %v", v, err)
		}
		blockInterval = d
	}
	defer func() { blockInterval = 100 * time.Millisecond }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tn := startKVNode(ctx, t)
	w := tn.client.Token(rootToken)
	for _, clients := range []int{1, 16, 64} {
		var n atomic.Int64
		var wg sync.WaitGroup
		dur := 10 * time.Second
		end := time.Now().Add(dur)
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Now().Before(end); i++ {
					ok, _, err := w.KVPut(ctx, fmt.Sprintf("bench/%d/%d", c, i), []byte("value"), nil)
					if err != nil || !ok {
						t.Errorf("put: %v %v", ok, err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		t.Logf("%d clients: %d committed puts in %s: %.1f puts/s", clients, n.Load(), dur, float64(n.Load())/dur.Seconds())
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Logf("no wrk: no read figure")
		return
	}
	if ok, _, err := w.KVPut(ctx, "bench/read", []byte("value"), nil); err != nil || !ok {
		t.Fatal(err)
	}
	out, err := exec.Command("wrk", "-t2", "-c16", "-d10s", "http://"+tn.httpAddr+"/v1/kv/bench/read").CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	t.Logf("wrk GET /v1/kv/bench/read:\n%s", out)
}
