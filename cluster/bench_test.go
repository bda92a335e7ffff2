package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// BenchmarkCommitLatency measures, on a 4-node loopback network with the
// testnet's consensus settings, the time from broadcasting a transaction
// (a registration, through POST /v1/txs) to its commit, and the block time.
//
//	go test -run '^$' -bench CommitLatency -benchtime 50x ./cluster
func BenchmarkCommitLatency(b *testing.B) {
	ctx := context.Background()
	c := New(b, 4, 2)
	c.StartAll()
	c.WaitHeight(3)
	n0 := c.Nodes[0]
	st0, err := n0.Client.Status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		si := types.ServiceInstance{Name: "bench", Id: fmt.Sprintf("b%d", i), Address: "127.0.0.1"}
		start := time.Now()
		res, err := c.Nodes[i%len(c.Nodes)].Client.Register(ctx, c.Operator.Private, si)
		if err != nil || res.Code != 0 {
			b.Fatalf("register: %+v %v", res, err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	st1, err := n0.Client.Status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	blockTime := st1.BlockTime.Sub(st0.BlockTime) / time.Duration(max(1, st1.Height-st0.Height))
	b.ReportMetric(float64(q(.50).Milliseconds()), "p50-commit-ms")
	b.ReportMetric(float64(q(.99).Milliseconds()), "p99-commit-ms")
	b.ReportMetric(float64(blockTime.Milliseconds()), "block-ms")
	b.Logf("%d txs: commit latency p50 %s p99 %s max %s; block time %s over %d blocks",
		len(lat), q(.50).Round(time.Millisecond), q(.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond),
		blockTime.Round(time.Millisecond), st1.Height-st0.Height)
}
