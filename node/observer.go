package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/api"
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
	stats *probeMetrics
	byz   *byzantine // nil: an honest observer

	mu        sync.Mutex
	lastNonce uint64
	// prevBatch is the nonce of the last batch the mempool took (the next
	// batch's prev_nonce), and floor the stamp floor last seen; synced
	// tells whether both were read from the state once.
	prevBatch uint64
	floor     int64
	synced    bool
	changed   chan struct{} // the catalog changed: recompute the targets
	ready     atomic.Bool   // this observer was found in the committed observer set
}

func newObserver(key keys.Key, a *abci.Application, b *broadcaster, st Settings, pm *probeMetrics, byz *byzantine, f *faults, logger *slog.Logger) *observer {
	o := &observer{key: key, app: a, bcast: b, log: logger.With("observer", key.Name), stats: pm, byz: byz, changed: make(chan struct{}, 1)}
	o.sched = checks.NewScheduler(checks.Config{
		MaxConcurrent: st.MaxConcurrentProbes,
		FlushInterval: time.Duration(st.FlushInterval),
		Submit:        o.submit,
		// The test behaviours (--byzantine) report every result, as the
		// liars the tests model do; an honest observer vouches.
		Vouch:     byz == nil,
		Resync:    o.resync,
		Logger:    o.log,
		OnResult:  func(t checks.Target, r checks.Result) { pm.observed(key.Name, t, r) },
		OnStart:   func(late time.Duration) { pm.late.Observe(late.Seconds()) },
		Intercept: f.intercept,
	})
	o.changed <- struct{}{}
	return o
}

// committed is the commit listener: it notices catalog changes.
func (o *observer) committed(blk abci.Block) {
	if blk.Changes.Catalog || !o.ready.Load() {
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
	me := o.self(q)
	if me == nil && q.Info().Height == 0 {
		return // before genesis: wait for the first block
	}
	first := !o.ready.Swap(true)
	if me == nil {
		o.log.Warn("this node's observer key is not in the observer set; running no checks", "id", o.key.ID())
		o.sched.Update(nil)
		o.stats.retain(nil)
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
	o.stats.retain(targets)
}

// self is this observer in the committed observer set, or nil.
func (o *observer) self(q *app.Query) *types.Observer {
	for _, ob := range q.Observers() {
		if ob.Id == o.key.ID() {
			return &ob
		}
	}
	return nil
}

// passive queues a submitted result of a passive check in this observer's
// scope for the next flush. It refuses a check that is unknown, probed
// rather than passive, or out of scope.
func (o *observer) passive(pr api.PassiveResult) (api.ObserveAck, error) {
	name := pr.Service + "/" + pr.Instance + "/" + pr.Check
	q, err := o.app.Read()
	if err != nil {
		return api.ObserveAck{}, fmt.Errorf("read catalog: %w", err)
	}
	me := o.self(q)
	if me == nil {
		return api.ObserveAck{}, fmt.Errorf("this node's observer %s is not in the observer set: %w", o.key.ID(), api.ErrBadRequest)
	}
	insts, err := q.Service(pr.Service)
	if err != nil {
		return api.ObserveAck{}, fmt.Errorf("service %q is not registered: %w", pr.Service, api.ErrNotFound)
	}
	var check *types.Check
	for _, iv := range insts {
		if iv.Instance.Id != pr.Instance {
			continue
		}
		for i := range iv.Instance.Checks {
			if iv.Instance.Checks[i].Id == pr.Check {
				check = &iv.Instance.Checks[i]
			}
		}
	}
	switch {
	case check == nil:
		return api.ObserveAck{}, fmt.Errorf("check %s is not registered: %w", name, api.ErrNotFound)
	case !checks.IsPassive(*check):
		return api.ObserveAck{}, fmt.Errorf("check %s is a %s check, probed by the observers themselves; only passive checks take submitted results: %w", name, check.Kind, api.ErrBadRequest)
	case !app.InScope(check, me):
		return api.ObserveAck{}, fmt.Errorf("check %s is observed from datacenters %v, and this observer is in %s: %w", name, check.Datacenters, me.Datacenter, api.ErrBadRequest)
	}
	po := checks.ParsePluginOutput(pr.Output)
	r := checks.Result{Status: types.FromExitCode(pr.Code), Output: po.Text, Perf: po.Perf}
	if r.Output == "" {
		r.Output = "(no output submitted)"
	}
	t := checks.Target{Service: pr.Service, Instance: pr.Instance, Check: *check}
	if err := o.sched.Report(t, r); err != nil {
		// The check was registered in a block this observer has not
		// scheduled yet: catch up and try once more.
		o.refresh()
		if err := o.sched.Report(t, r); err != nil {
			return api.ObserveAck{}, fmt.Errorf("%w: %w", err, api.ErrBadRequest)
		}
	}
	return api.ObserveAck{Observer: o.key.Name, Check: name, Status: r.Status.Name()}, nil
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

// resync reads this observer's stamp from the committed state: the first
// time, to follow on from the batch the chain applied last; then, to tell
// the scheduler when the floor rose (a batch went missing or a report was
// skipped), after which it sends every result again.
func (o *observer) resync() bool {
	q, err := o.app.Read()
	if err != nil {
		o.log.Warn("read stamp", "err", err)
		return false
	}
	st, err := q.Stamp(o.key.ID())
	if err != nil || st == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.synced {
		o.synced, o.floor = true, st.FloorHeight
		if o.prevBatch == 0 {
			o.prevBatch = st.LastNonce
		}
		return false
	}
	if st.FloorHeight > o.floor {
		o.floor = st.FloorHeight
		o.log.Info("the chain stopped counting vouches for earlier reports; reporting every check again", "floor", st.FloorHeight)
		return true
	}
	return false
}

// submit signs one batch and hands it to the mempool.
func (o *observer) submit(ctx context.Context, b *types.ObservationBatch) error {
	obs := o.byz.lie(b.Observations)
	nonce := o.nonce()
	o.mu.Lock()
	prev := o.prevBatch
	o.mu.Unlock()
	msg := types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs, PrevNonce: prev, UnchangedAsOfMs: b.UnchangedAsOfMs}}}
	tx, err := types.SignTx(o.app.ChainID(), o.key.Private, nonce, msg)
	if err != nil {
		return err
	}
	defer o.byz.after(ctx, o, tx, nonce, obs)
	res, err := o.bcast.Submit(ctx, tx)
	if err != nil {
		// The mempool is full or the node is not taking transactions yet:
		// the scheduler keeps the results for its next flush.
		return fmt.Errorf("%w: %w", checks.ErrRetry, err)
	}
	if res.Code == uint32(app.CodeBusy) {
		// This signer's share of the mempool is full: the scheduler keeps
		// the results for its next flush.
		return fmt.Errorf("%w: %w", checks.ErrRetry, &submitError{res})
	}
	if res.Code != 0 {
		return &submitError{res}
	}
	o.mu.Lock()
	o.prevBatch = nonce
	o.mu.Unlock()
	return nil
}

// receipt commits this node's delivery receipt of an alert to a receiver,
// with the receiver's acknowledgement (nil: none).
func (o *observer) receipt(ctx context.Context, alertID, receiver string, ack []byte) error {
	msg := types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: alertID, Receiver: receiver, Ack: ack}}}
	tx, err := types.SignTx(o.app.ChainID(), o.key.Private, o.nonce(), msg)
	if err != nil {
		return err
	}
	res, err := o.bcast.Commit(ctx, tx)
	if err != nil {
		return fmt.Errorf("receipt of %s for %s: %w", alertID, receiver, err)
	}
	if res.Code != 0 {
		return fmt.Errorf("receipt of %s for %s refused (code %d): %s", alertID, receiver, res.Code, res.Log)
	}
	return nil
}

type submitError struct{ res TxResult }

func (e *submitError) Error() string {
	return fmt.Sprintf("observation batch refused (code %d): %s", e.res.Code, e.res.Log)
}
