package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// NodeConfig sizes the node benchmark.
type NodeConfig struct {
	Checks        int
	Interval      time.Duration
	Duration      time.Duration // measured, after one interval of warm-up
	BlockInterval time.Duration
}

// Node runs a one-node network (the dev node's settings, in a temporary
// home) whose observer runs cfg.Checks checks against the targets, and
// prints the observations its blocks commit per second.
func Node(ctx context.Context, w io.Writer, t *Targets, cfg NodeConfig) error {
	bn, err := startNode(ctx, cfg.BlockInterval)
	if err != nil {
		return err
	}
	defer bn.stop()
	n := bn.n

	var (
		mu      sync.Mutex
		blocks  []abci.Block
		measure bool
	)
	n.OnCommit(func(b abci.Block) {
		mu.Lock()
		defer mu.Unlock()
		if measure {
			blocks = append(blocks, abci.Block{Height: b.Height, Observations: b.Observations, Txs: b.Txs})
		}
	})

	op, c := bn.op, bn.c
	all := t.Checks(cfg.Checks, cfg.Interval)
	fmt.Fprintf(w, "node: registering %d checks (%d instances of up to %d checks)...\n", len(all), (len(all)+app.MaxChecks-1)/app.MaxChecks, app.MaxChecks)
	for i := 0; i < len(all); i += app.MaxChecks {
		si := types.ServiceInstance{Name: "bench", Id: fmt.Sprintf("i%04d", i/app.MaxChecks), Address: "127.0.0.1", Checks: all[i:min(i+app.MaxChecks, len(all))]}
		res, err := c.Register(ctx, op.Private, si)
		if err != nil {
			return fmt.Errorf("register %s: %w", si.Id, err)
		}
		if res.Code != 0 {
			return fmt.Errorf("register %s: code %d: %s", si.Id, res.Code, res.Log)
		}
	}
	pace := "blocks as transactions come (bftmon init's lan profile)"
	if cfg.BlockInterval > 0 {
		pace = "blocks every " + cfg.BlockInterval.String()
	}
	fmt.Fprintf(w, "checks every %s, %s; warming up for %s...\n", cfg.Interval, pace, cfg.Interval)
	select {
	case <-time.After(cfg.Interval):
	case <-ctx.Done():
		return ctx.Err()
	}
	before, start := readUsage(), time.Now()
	mu.Lock()
	measure = true
	mu.Unlock()
	fmt.Fprintf(w, "measuring for %s...\n", cfg.Duration)
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
		return ctx.Err()
	}
	mu.Lock()
	measure = false
	got := blocks
	mu.Unlock()
	after, wall := readUsage(), time.Since(start)

	committed, txs, refused := 0, 0, 0
	for _, b := range got {
		committed += b.Observations
		for _, tx := range b.Txs {
			txs++
			if tx.Code != 0 {
				refused++
			}
		}
	}
	fmt.Fprintf(w, "committed     %d observations in %d blocks (%d txs, %d refused) in %s: %.0f observations/s (schedule asks %.0f/s)\n",
		committed, len(got), txs, refused, wall.Round(time.Millisecond), float64(committed)/wall.Seconds(), float64(cfg.Checks)/cfg.Interval.Seconds())
	fmt.Fprintf(w, "CPU           %.1f%% of one core for node and observer together\n", 100*float64(after.cpu-before.cpu)/float64(wall))
	fmt.Fprintf(w, "memory        RSS %s, peak %s\n", mib(after.rss), mib(after.peakRSS))
	return nil
}

// benchNode is a one-node network with the dev node's settings in a
// temporary home.
type benchNode struct {
	n    *node.Node
	home string
	c    *api.Client
	op   keys.Key
}

func startNode(ctx context.Context, blockInterval time.Duration) (*benchNode, error) {
	home, err := os.MkdirTemp("", "bftmon-bench-")
	if err != nil {
		return nil, err
	}
	addr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "127.0.0.1:0"
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	httpAddr := addr()
	if err := node.Init(node.InitOptions{Home: home, ChainID: "bench", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + addr(), P2PAddr: "tcp://" + addr(), DNSAddr: "127.0.0.1:0", BlockInterval: blockInterval}); err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	n, err := node.Start(ctx, node.Config{Home: home, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	op, err := keys.Load(filepath.Join(home, node.OperatorKeyFile))
	if err != nil {
		n.Stop()
		os.RemoveAll(home)
		return nil, err
	}
	return &benchNode{n: n, home: home, c: api.NewClient(httpAddr), op: op}, nil
}

func (b *benchNode) stop() {
	b.n.Stop()
	os.RemoveAll(b.home)
}
