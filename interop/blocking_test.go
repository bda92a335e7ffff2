package interop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
)

// blockingGet is one GET of a read: its index header and body.
type blockingGet struct {
	index int64
	body  []byte
	err   error
}

// get reads url and the index in header.
func get(ctx context.Context, c *http.Client, url, header string) blockingGet {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return blockingGet{err: err}
	}
	resp, err := c.Do(req)
	if err != nil {
		return blockingGet{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	idx, perr := strconv.ParseInt(resp.Header.Get(header), 10, 64)
	if err == nil && perr != nil {
		err = fmt.Errorf("GET %s: %s %q: %v", url, header, resp.Header.Get(header), perr)
	}
	return blockingGet{index: idx, body: body, err: err}
}

// TestBlockingQueryEndToEnd holds blocking queries on service web over real
// HTTP — the native read and the Consul health route — and checks they
// stay pending through a committed change of another service, then answer
// with the change of web, at its height.
func TestBlockingQueryEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	tn.register(ctx, t, tn.instance("web", "web-1", "10.1.0.1", 80, nil))
	tn.waitPassing(ctx, t, "web", 1)

	base := "http://" + tn.httpAddr
	for _, tc := range []struct {
		name, path, header string
	}{
		{"native", "/v1/services/web", api.IndexHeader},
		{"consul", "/v1/health/service/web", "X-Consul-Index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := get(ctx, http.DefaultClient, base+tc.path, tc.header)
			if first.err != nil || first.index < 1 {
				t.Fatalf("first read: index %d, %v", first.index, first.err)
			}
			var before []json.RawMessage
			if err := json.Unmarshal(first.body, &before); err != nil {
				t.Fatal(err)
			}
			answered := make(chan blockingGet, 1)
			go func() {
				answered <- get(ctx, http.DefaultClient, fmt.Sprintf("%s%s?index=%d&wait=60s", base, tc.path, first.index), tc.header)
			}()
			// Another service changes, and the block that commits it is
			// done: the query on web must not answer for it.
			other := tn.register(ctx, t, tn.instance("other-"+tc.name, "o-1", "10.9.0.1", 80, nil))
			waitFor(t, "the node past the other service's block", 30*time.Second, func() (bool, error) {
				st, err := tn.client.Status(ctx)
				return err == nil && st.Height > other, err
			})
			select {
			case g := <-answered:
				t.Fatalf("answered (index %d, %v) for a change of another service at height %d: %s", g.index, g.err, other, g.body)
			default:
			}
			// web changes: the query answers with it, at its height.
			height := tn.register(ctx, t, tn.instance("web", "web-2-"+tc.name, "10.1.0.2", 80, nil))
			var g blockingGet
			select {
			case g = <-answered:
			case <-time.After(30 * time.Second):
				t.Fatalf("no answer 30s after web changed at height %d", height)
			}
			if g.err != nil {
				t.Fatal(g.err)
			}
			if g.index != height {
				t.Errorf("index %d, want %d (the height of web's change)", g.index, height)
			}
			var insts []json.RawMessage
			if err := json.Unmarshal(g.body, &insts); err != nil || len(insts) != len(before)+1 {
				t.Errorf("answer %s (%v): want %d instances, the new one too", g.body, err, len(before)+1)
			}
		})
	}
}

// TestIdleBlockingQueries holds 1000 blocking queries on web: the node
// holds them all (bftmon_http_blocking_queries), they stay pending through
// blocks that do not change web, and all answer with its change. It logs
// the CPU the process spent over ten blocks with them idle.
func TestIdleBlockingQueries(t *testing.T) {
	const n = 1000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 4*n {
		lim.Cur = min(lim.Max, 4*n)
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	tn.register(ctx, t, tn.instance("web", "web-1", "10.1.0.1", 80, nil))
	tn.waitPassing(ctx, t, "web", 1)

	url := "http://" + tn.httpAddr + "/v1/health/service/web"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}}
	defer client.CloseIdleConnections()
	first := get(ctx, client, url, "X-Consul-Index")
	if first.err != nil {
		t.Fatal(first.err)
	}
	idle := cpuOverBlocks(ctx, t, tn, 10)
	answers := make(chan blockingGet, n)
	for range n {
		go func() {
			answers <- get(ctx, client, fmt.Sprintf("%s?index=%d&wait=5m", url, first.index), "X-Consul-Index")
		}()
	}
	parked := func() (float64, error) {
		fams, err := scrapeMetrics(ctx, tn.httpAddr)
		if err != nil {
			return 0, err
		}
		return fams["bftmon_http_blocking_queries"], nil
	}
	waitFor(t, fmt.Sprintf("%d blocking queries parked", n), 60*time.Second, func() (bool, error) {
		v, err := parked()
		return err == nil && v == n, fmt.Errorf("%v parked (%v)", v, err)
	})

	// Ten blocks with them idle: the process' CPU time, against ten blocks
	// without them (a measurement for docs/BENCHMARKS.md, not asserted).
	t.Logf("process CPU over ten blocks (node, observer and this test together): %v without blocking queries, %v with %d idle ones",
		idle, cpuOverBlocks(ctx, t, tn, 10), n)

	other := tn.register(ctx, t, tn.instance("other", "o-1", "10.9.0.1", 80, nil))
	waitFor(t, "the node past the other service's block", 30*time.Second, func() (bool, error) {
		s, err := tn.client.Status(ctx)
		return err == nil && s.Height > other, err
	})
	if v, err := parked(); err != nil || v != n {
		t.Fatalf("after a change of another service: %v parked (%v), want %d", v, err, n)
	}
	select {
	case g := <-answers:
		t.Fatalf("a query answered (index %d, %v) for another service's change", g.index, g.err)
	default:
	}

	height := tn.register(ctx, t, tn.instance("web", "web-2", "10.1.0.2", 80, nil))
	for i := range n {
		select {
		case g := <-answers:
			if g.err != nil || g.index != height {
				t.Fatalf("answer %d: index %d (%v), want %d", i, g.index, g.err, height)
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d answered after web changed", i, n)
		}
	}
}

// cpuOverBlocks is the CPU time the process spends while the node commits
// blocks more blocks.
func cpuOverBlocks(ctx context.Context, t *testing.T, tn *testNode, blocks int64) time.Duration {
	t.Helper()
	st, err := tn.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	waitFor(t, fmt.Sprintf("%d more blocks", blocks), 60*time.Second, func() (bool, error) {
		s, err := tn.client.Status(ctx)
		return err == nil && s.Height >= st.Height+blocks, err
	})
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	return time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
}
