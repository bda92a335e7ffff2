package bench

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/checks"
)

// ObserverConfig sizes the observer benchmark.
type ObserverConfig struct {
	Checks        int
	Interval      time.Duration
	Duration      time.Duration // measured, after one interval of warm-up
	MaxConcurrent int
}

// Observer runs one observer's scheduler over cfg.Checks checks against the
// targets for one interval of warm-up plus cfg.Duration, signing every
// batch as the node would but sending it nowhere, and prints how well it
// kept its schedule, its CPU and its memory.
func Observer(ctx context.Context, w io.Writer, t *Targets, cfg ObserverConfig) error {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	var (
		mu        sync.Mutex
		late      []time.Duration
		measuring atomic.Bool
		txBytes   atomic.Int64
		failed    atomic.Int64
		nonce     atomic.Uint64
	)
	s := checks.NewScheduler(checks.Config{
		MaxConcurrent: cfg.MaxConcurrent,
		Logger:        slog.New(slog.DiscardHandler),
		Submit: func(_ context.Context, b *types.ObservationBatch) error {
			msg := types.Msg{Sum: &types.Msg_Observe{Observe: b}}
			tx, err := types.SignTx("bench", key, nonce.Add(1), msg)
			if err != nil {
				return err
			}
			if measuring.Load() {
				txBytes.Add(int64(len(tx)))
			}
			return nil
		},
		OnStart: func(d time.Duration) {
			if measuring.Load() {
				mu.Lock()
				late = append(late, d)
				mu.Unlock()
			}
		},
		OnResult: func(_ checks.Target, r checks.Result) {
			if measuring.Load() && r.Status != types.STATUS_PASSING {
				failed.Add(1)
			}
		},
	})
	targets := make([]checks.Target, 0, cfg.Checks)
	for i, c := range t.Checks(cfg.Checks, cfg.Interval) {
		targets = append(targets, checks.Target{Service: fmt.Sprintf("svc%03d", i/64), Instance: "i", Check: c})
	}
	s.Update(targets)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	fmt.Fprintf(w, "observer: %d checks (half http, half tcp) every %s, at most %d probes at once; warming up for %s...\n",
		cfg.Checks, cfg.Interval, cfg.MaxConcurrent, cfg.Interval)
	select {
	case <-time.After(cfg.Interval):
	case <-ctx.Done():
		return ctx.Err()
	}
	before, st0, start := readUsage(), s.Stats(), time.Now()
	measuring.Store(true)
	fmt.Fprintf(w, "measuring for %s...\n", cfg.Duration)
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
		return ctx.Err()
	}
	measuring.Store(false)
	after, st1, wall := readUsage(), s.Stats(), time.Since(start)
	cancel()
	<-done

	probes := st1.Probes - st0.Probes
	want := float64(cfg.Checks) * wall.Seconds() / cfg.Interval.Seconds()
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(w, "probes        %d in %s: %.0f/s (schedule asks %.0f/s), %d not passing\n",
		probes, wall.Round(time.Millisecond), float64(probes)/wall.Seconds(), want/wall.Seconds(), failed.Load())
	fmt.Fprintf(w, "skipped runs  %d (a run still going when the next fell due)\n", st1.Skipped-st0.Skipped)
	fmt.Fprintf(w, "lateness      %s\n", summary(late))
	fmt.Fprintf(w, "CPU           %.1f%% of one core (%s user+system)\n",
		100*float64(after.cpu-before.cpu)/float64(wall), (after.cpu - before.cpu).Round(time.Millisecond))
	fmt.Fprintf(w, "memory        RSS %s, peak %s\n", mib(after.rss), mib(after.peakRSS))
	fmt.Fprintf(w, "submitted     %d batches, %d observations, %.0f KiB/s of signed transactions\n",
		st1.Batches-st0.Batches, st1.Observations-st0.Observations, float64(txBytes.Load())/1024/wall.Seconds())
	return nil
}
