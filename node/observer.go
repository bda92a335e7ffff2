package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/checks"
	"github.com/bftmon/bftmon/keys"
)

// observer runs this node's checks and submits the results, signed with the
// observer key, one transaction per flush.
type observer struct {
	key   keys.Key
	app   *abci.Application
	bcast *broadcaster
	sched *checks.Scheduler
	log   *slog.Logger

	mu        sync.Mutex
	lastNonce uint64
	changed   chan struct{} // the catalog changed: recompute the targets
	ready     atomic.Bool   // this observer was found in the committed observer set
}

func newObserver(key keys.Key, a *abci.Application, b *broadcaster, st Settings, logger *slog.Logger) *observer {
	o := &observer{key: key, app: a, bcast: b, log: logger.With("observer", key.Name), changed: make(chan struct{}, 1)}
	o.sched = checks.NewScheduler(checks.Config{
		MaxConcurrent: st.MaxConcurrentProbes,
		FlushInterval: time.Duration(st.FlushInterval),
		Submit:        o.submit,
		Logger:        o.log,
	})
	o.changed <- struct{}{}
	return o
}

// committed is the commit listener: it notices catalog changes.
func (o *observer) committed(blk abci.Block) {
	if blk.CatalogChanged || !o.ready.Load() {
		select {
		case o.changed <- struct{}{}:
		default:
		}
	}
}

func (o *observer) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := o.sched.Run(ctx); err != nil {
			o.log.Error("scheduler stopped", "err", err)
		}
	}()
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.changed:
			o.refresh()
		}
	}
}

// refresh gives the scheduler the checks in this observer's scope.
func (o *observer) refresh() {
	q, err := o.app.Read()
	if err != nil {
		o.log.Error("read catalog", "err", err)
		return
	}
	var me *types.Observer
	for _, ob := range q.Observers() {
		if ob.Id == o.key.ID() {
			me = &ob
			break
		}
	}
	if me == nil && q.Info().Height == 0 {
		return // before genesis: wait for the first block
	}
	first := !o.ready.Swap(true)
	if me == nil {
		o.log.Warn("this node's observer key is not in the observer set; running no checks", "id", o.key.ID())
		o.sched.Update(nil)
		return
	}
	if first {
		o.log.Info("observing", "id", me.Id, "datacenter", me.Datacenter)
	}
	insts, err := q.Instances()
	if err != nil {
		o.log.Error("read catalog", "err", err)
		return
	}
	var targets []checks.Target
	for _, si := range insts {
		for _, c := range si.Checks {
			if app.InScope(&c, me) {
				targets = append(targets, checks.Target{Service: si.Name, Instance: si.Id, Check: c})
			}
		}
	}
	o.log.Debug("checks in scope", "count", len(targets))
	o.sched.Update(targets)
}

// nonce returns a nonce above every nonce this key used before, even across
// restarts: the clock in nanoseconds, or the last one plus one.
func (o *observer) nonce() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := uint64(time.Now().UnixNano())
	if n <= o.lastNonce {
		n = o.lastNonce + 1
	}
	o.lastNonce = n
	return n
}

// submit signs one batch and hands it to the mempool.
func (o *observer) submit(ctx context.Context, obs []types.Observation) error {
	msg := types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs}}}
	tx, err := types.SignTx(o.app.ChainID(), o.key.Private, o.nonce(), msg)
	if err != nil {
		return err
	}
	res, err := o.bcast.Submit(ctx, tx)
	if err != nil {
		return err
	}
	if res.Code != 0 {
		return &submitError{res}
	}
	return nil
}

type submitError struct{ res TxResult }

func (e *submitError) Error() string {
	return fmt.Sprintf("observation batch refused (code %d): %s", e.res.Code, e.res.Log)
}
