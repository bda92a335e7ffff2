package checks

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// Scheduler defaults, used for zero Config fields and check intervals.
const (
	// DefaultMaxConcurrent bounds the probes in flight.
	DefaultMaxConcurrent = 64
	// DefaultFlushInterval is how often results are submitted.
	DefaultFlushInterval = time.Second
	// DefaultMaxBatch bounds the observations per Submit call.
	DefaultMaxBatch = 2000
	// DefaultMaxBatchBytes bounds the encoded observations per Submit call,
	// well below the largest transaction (types.MaxTxBytes).
	DefaultMaxBatchBytes = types.MaxTxBytes / 2
	// DefaultInterval is the interval of a check that sets none.
	DefaultInterval = 10 * time.Second
)

// fullEvery makes every fullEvery-th report of a check carry its output even
// when unchanged, so a lost or pruned output is rewritten before long.
const fullEvery = 10

// refreshEvery makes a vouching scheduler (Config.Vouch) report every
// refreshEvery-th unchanged result of a check in full: its latency is
// brought up to date, and its observer's standing counts it.
const refreshEvery = 30

// idleWait is how long the timer loop sleeps with nothing scheduled; Update
// wakes it earlier.
const idleWait = time.Hour

// Target is one check this observer must run.
type Target struct {
	Service, Instance string
	Check             types.Check
}

// Key identifies a target: service/instance/check id.
func (t Target) Key() string {
	return t.Service + "/" + t.Instance + "/" + t.Check.Id
}

// Config configures a Scheduler. Only Submit is required.
type Config struct {
	// MaxConcurrent bounds the probes in flight (default 64).
	MaxConcurrent int
	// FlushInterval is how often results are submitted (default 1s).
	FlushInterval time.Duration
	// MaxBatch bounds the observations per Submit call (default 2000); a
	// flush with more is split into several calls.
	MaxBatch int
	// MaxBatchBytes bounds the encoded size of the observations per Submit
	// call (default DefaultMaxBatchBytes).
	MaxBatchBytes int
	// Submit signs and sends one batch (setting its prev_nonce when
	// vouching); an error means it was not accepted. An error wrapping
	// ErrRetry (a full mempool, an unreachable node) puts the batch's
	// results back for the next flush, unless newer ones arrived.
	Submit func(ctx context.Context, b *types.ObservationBatch) error
	// Vouch makes each flush send only the results that changed (and each
	// check's every refreshEvery-th in full), and vouch for the rest in the
	// flush's last batch (types.ObservationBatch.unchanged_as_of_ms): as of
	// the earliest of every active check's last accepted probe plus its
	// interval. It vouches only when every active target's latest result
	// was accepted and every batch of the flush before was.
	Vouch bool
	// Resync, if set, is asked at each flush whether the chain stopped
	// counting this observer's vouches for what it had (its stamp's floor
	// rose); if so, every target's last accepted result is sent again.
	Resync func() bool
	// OnResult, if set, sees every result as it arrives (for metrics). It
	// must not block.
	OnResult func(Target, Result)
	// Intercept, if set, may answer for a target instead of its probe (a
	// test node's fault injector uses it to make targets unreachable).
	Intercept func(Target) (Result, bool)
	// OnStart, if set, sees how late each probe starts after its scheduled
	// time (for metrics and benchmarks). It must not block.
	OnStart func(late time.Duration)
	// Logger receives submit failures (default slog.Default()).
	Logger *slog.Logger
	// Now stamps observations (default time.Now). Scheduling uses the
	// monotonic clock regardless.
	Now func() time.Time
}

// Stats are the scheduler's counters since it was made.
type Stats struct {
	// Targets is the number of targets currently scheduled.
	Targets int
	// Probes counts finished probes.
	Probes uint64
	// Skipped counts runs not started because the previous run of the same
	// target was still in flight.
	Skipped uint64
	// Batches counts Submit calls that succeeded, and Observations the
	// observations they carried.
	Batches      uint64
	Observations uint64
	// SubmitErrors counts Submit calls that failed, and Retried the results
	// put back for the next flush after a failure that wrapped ErrRetry.
	SubmitErrors uint64
	Retried      uint64
}

// ErrRetry marks a Submit error after which the batch is worth sending
// again: the results go back into the buffer for the next flush.
var ErrRetry = errors.New("retry later")

// Scheduler runs this observer's checks, each on its own interval, from one
// timer loop, and submits their results in batches.
type Scheduler struct {
	cfg  Config
	sem  chan struct{} // one token per probe in flight
	wake chan struct{} // tells the timer loop the schedule changed
	// changed tells the flush loop that a result's status differs from the
	// one last submitted: a change is worth sending before the next tick.
	changed chan struct{}

	mu      sync.Mutex
	entries map[string]*entry
	queue   runQueue             // every entry, by next run time
	pending map[string]report    // latest unsubmitted result per key
	sent    map[string]sentState // last accepted report per key
	stats   Stats
}

// entry is one scheduled target.
type entry struct {
	key      string
	target   Target
	def      []byte // the check's encoding, to recognise an unchanged definition
	prober   Prober
	interval time.Duration
	next     time.Time
	index    int           // position in the queue
	running  bool          // a probe is waiting for a slot or in flight
	late     time.Duration // how late the current run was found due
}

// report is a result waiting to be submitted, with the entry that produced
// it, so that a result of a since removed or redefined target is dropped.
type report struct {
	entry *entry
	obs   types.Observation
	full  string // the output, kept when obs is sent as unchanged without it
}

// sentState is what the chain last accepted from this scheduler for a key.
type sentState struct {
	status    types.Status
	output    string
	unchanged int // reports sent as unchanged (or vouched for) since the last full one
	// confirmed is the observed time (unix ms) of the latest result that
	// agreed with status and output, and latencyUs its latency.
	confirmed int64
	latencyUs int64
}

// NewScheduler makes a scheduler with no targets; call Update and Run.
// It panics if cfg.Submit is nil.
func NewScheduler(cfg Config) *Scheduler {
	if cfg.Submit == nil {
		panic("checks: NewScheduler: Config.Submit is nil")
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Scheduler{
		cfg:     cfg,
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		wake:    make(chan struct{}, 1),
		changed: make(chan struct{}, 1),
		entries: make(map[string]*entry),
		pending: make(map[string]report),
		sent:    make(map[string]sentState),
	}
}

// Update replaces the set of targets. A target with the same key and the
// same check definition as before keeps its schedule; a new or redefined
// one first runs after its splay; a removed one stops, and a result it is
// still producing is dropped. Of targets sharing a key, the last wins.
// Passive targets are kept, to take Report, but never probed.
func (s *Scheduler) Update(targets []Target) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	want := make(map[string]bool, len(targets))
	for _, t := range targets {
		key := t.Key()
		want[key] = true
		def, err := t.Check.Marshal() // an encoding error counts as a change
		if old, ok := s.entries[key]; ok {
			if err == nil && bytes.Equal(old.def, def) {
				continue
			}
			s.remove(old)
		}
		s.add(newEntry(key, t, def, now))
	}
	for key, e := range s.entries {
		if !want[key] {
			s.remove(e)
		}
	}
	s.stats.Targets = len(s.entries)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// newEntry schedules t's first run at now plus its splay. A passive
// target gets no prober and no run.
func newEntry(key string, t Target, def []byte, now time.Time) *entry {
	if IsPassive(t.Check) {
		return &entry{key: key, target: t, def: def, index: -1}
	}
	interval := time.Duration(t.Check.IntervalMs) * time.Millisecond
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &entry{
		key:      key,
		target:   t,
		def:      def,
		prober:   proberOf(t.Check),
		interval: interval,
		next:     now.Add(splay(key, interval)),
	}
}

// splay is a stable offset in [0, interval) derived from key, so that
// targets added together do not all run together.
func splay(key string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(key))
	return time.Duration(h.Sum64() % uint64(interval))
}

func (s *Scheduler) add(e *entry) {
	s.entries[e.key] = e
	if e.prober != nil {
		heap.Push(&s.queue, e)
	}
}

func (s *Scheduler) remove(e *entry) {
	if c, ok := e.prober.(io.Closer); ok {
		c.Close() // a kept-alive connection does not outlive its check
	}
	if e.index >= 0 {
		heap.Remove(&s.queue, e.index)
	}
	delete(s.entries, e.key)
	delete(s.pending, e.key)
	delete(s.sent, e.key)
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Run probes the targets and submits their results until ctx ends, then
// waits for the probes in flight and returns nil. Call it once.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.flushLoop(ctx) })

	timer := time.NewTimer(idleWait)
	defer timer.Stop()
	for {
		now := time.Now()
		e, wait := s.due(now)
		if e == nil {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-s.wake:
			case <-timer.C:
			}
			continue
		}
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		if s.cfg.OnStart != nil {
			// Lateness counts from the scheduled time to the probe's start,
			// waiting for a concurrency slot included.
			s.cfg.OnStart(time.Since(now) + e.late)
		}
		wg.Go(func() {
			defer func() { <-s.sem }()
			s.probe(ctx, e)
		})
	}
}

// due returns the next target to probe, marked running, or, when none is
// due, how long until one is. A due target still running is skipped: runs
// never pile up.
func (s *Scheduler) due(now time.Time) (*entry, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > 0 {
		e := s.queue[0]
		if wait := e.next.Sub(now); wait > 0 {
			return nil, wait
		}
		// The next run keeps the target's phase, past any runs missed.
		e.late = now.Sub(e.next)
		missed := now.Sub(e.next) / e.interval
		e.next = e.next.Add((missed + 1) * e.interval)
		heap.Fix(&s.queue, 0)
		if e.running {
			s.stats.Skipped++
			continue
		}
		e.running = true
		return e, 0
	}
	return nil, idleWait
}

// probe runs one probe of e and buffers its result.
func (s *Scheduler) probe(ctx context.Context, e *entry) {
	r, intercepted := Result{}, false
	if s.cfg.Intercept != nil {
		r, intercepted = s.cfg.Intercept(e.target)
	}
	if !intercepted {
		r = e.prober.Probe(ctx)
	}
	s.mu.Lock()
	e.running = false
	s.stats.Probes++
	s.mu.Unlock()
	if ctx.Err() != nil {
		return // shutting down: the result says nothing about the target
	}
	s.buffer(e, r)
}

// ErrNotScheduled is Report's error for a check that is not among the
// scheduler's passive targets.
var ErrNotScheduled = errors.New("not a passive check of this observer")

// Report buffers a submitted result of a passive target for the next flush.
func (s *Scheduler) Report(t Target, r Result) error {
	s.mu.Lock()
	e := s.entries[t.Key()]
	s.mu.Unlock()
	if e == nil || !IsPassive(e.target.Check) {
		return fmt.Errorf("report %s: %w", t.Key(), ErrNotScheduled)
	}
	s.buffer(e, r)
	return nil
}

// buffer keeps r as e's latest unsubmitted result, unless e was removed or
// redefined meanwhile.
func (s *Scheduler) buffer(e *entry, r Result) {
	obs := types.Observation{
		Service:      e.target.Service,
		Instance:     e.target.Instance,
		Check:        e.target.Check.Id,
		Status:       r.Status,
		LatencyUs:    r.Latency.Microseconds(),
		Output:       clip(r.Output),
		ObservedAtMs: s.cfg.Now().UnixMilli(),
	}
	if s.cfg.OnResult != nil {
		s.cfg.OnResult(e.target, r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries[e.key] != e {
		return // the target was removed or redefined
	}
	s.pending[e.key] = report{entry: e, obs: obs}
	if last, ok := s.sent[e.key]; !ok || last.status != obs.Status {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// minFlushGap bounds how often changed results flush ahead of the ticker
// (a tenth of the flush interval, at most 100ms), so a mass outage still
// makes few transactions.
func (s *Scheduler) minFlushGap() time.Duration {
	return min(s.cfg.FlushInterval/10, 100*time.Millisecond)
}

// flushLoop submits the buffered results every FlushInterval until ctx
// ends, and at once (but at most every tenth of the interval, or 100ms) when a
// result's status changed: detection latency is then the probe's, not the
// flush tick's.
func (s *Scheduler) flushLoop(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.FlushInterval)
	defer ticker.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-s.changed:
			if wait := s.minFlushGap() - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		last = time.Now()
		s.flush(ctx)
	}
}

// flush submits the buffered results in batches of at most MaxBatch
// observations and MaxBatchBytes bytes.
func (s *Scheduler) flush(ctx context.Context) {
	if s.cfg.Resync != nil && s.cfg.Resync() {
		s.resync()
	}
	reports, vouch := s.takePending()
	chunks := slices.Collect(s.batches(reports))
	if len(chunks) == 0 && vouch > 0 {
		chunks = [][]report{nil} // a vouch alone
	}
	failed := false
	for i, batch := range chunks {
		b := &types.ObservationBatch{Observations: make([]types.Observation, len(batch))}
		for i, r := range batch {
			b.Observations[i] = r.obs
		}
		if i == len(chunks)-1 && !failed {
			b.UnchangedAsOfMs = vouch
		}
		err := s.cfg.Submit(ctx, b)
		if err != nil && ctx.Err() != nil {
			return // shutting down
		}
		if err != nil {
			failed = true
			s.cfg.Logger.Warn("submit observations", "observations", len(batch), "err", err)
		}
		s.settle(batch, err)
	}
}

// resync puts every target's last accepted result back into the buffer, to
// be sent in full, unless a newer one is waiting.
func (s *Scheduler) resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, last := range s.sent {
		e := s.entries[key]
		if _, newer := s.pending[key]; e == nil || newer {
			continue
		}
		s.pending[key] = report{entry: e, obs: types.Observation{
			Service: e.target.Service, Instance: e.target.Instance, Check: e.target.Check.Id,
			Status: last.status, Output: last.output, LatencyUs: last.latencyUs, ObservedAtMs: last.confirmed,
		}}
	}
	clear(s.sent)
}

// batches splits reports into runs of at most MaxBatch observations whose
// encodings add up to at most MaxBatchBytes (a single larger one goes alone).
func (s *Scheduler) batches(reports []report) iter.Seq[[]report] {
	return func(yield func([]report) bool) {
		start, size := 0, 0
		for i := range reports {
			// An observation's share of the batch: its encoding and framing.
			n := reports[i].obs.Size() + 4
			if i > start && (i-start == s.cfg.MaxBatch || size+n > s.cfg.MaxBatchBytes) {
				if !yield(reports[start:i]) {
					return
				}
				start, size = i, 0
			}
			size += n
		}
		if start < len(reports) {
			yield(reports[start:])
		}
	}
}

// takePending empties the buffer into reports sorted by key, each sent as
// unchanged when the chain already has its status and output, or (Vouch)
// left out and vouched for; it returns the vouch's time (0: none). A result
// is left out only when the flush vouches: otherwise it goes as unchanged.
func (s *Scheduler) takePending() ([]report, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var vouch int64
	if s.cfg.Vouch {
		vouch = s.vouchTime()
	}
	reports := make([]report, 0, len(s.pending))
	for _, r := range s.pending {
		last, ok := s.sent[r.entry.key]
		r.full = r.obs.Output
		same := ok && last.status == r.obs.Status && last.output == r.obs.Output
		switch {
		case same && vouch > 0 && !IsPassive(r.entry.target.Check) && last.unchanged < refreshEvery-1:
			last.unchanged++
			last.confirmed, last.latencyUs = r.obs.ObservedAtMs, r.obs.LatencyUs
			s.sent[r.entry.key] = last
			continue
		case same && last.unchanged < fullEvery-1:
			r.obs.Unchanged = true
			r.obs.Output = ""
		}
		reports = append(reports, r)
	}
	clear(s.pending)
	slices.SortFunc(reports, func(a, b report) int {
		switch {
		case a.entry.key < b.entry.key:
			return -1
		case a.entry.key > b.entry.key:
			return 1
		}
		return 0
	})
	return reports, vouch
}

// vouchTime is the time as of which every active target's latest result is
// on the chain, less its interval: the earliest of their last accepted (or
// pending, about to be sent or vouched for) result's time plus interval,
// and now. It is 0 when a target has neither an accepted result nor a
// pending one. s.mu is held.
func (s *Scheduler) vouchTime() int64 {
	at := s.cfg.Now().UnixMilli()
	active := 0
	for key, e := range s.entries {
		if IsPassive(e.target.Check) {
			continue
		}
		active++
		var seen int64
		if r, ok := s.pending[key]; ok {
			seen = r.obs.ObservedAtMs
		} else if last, ok := s.sent[key]; ok {
			seen = last.confirmed
		} else {
			return 0
		}
		at = min(at, seen+e.interval.Milliseconds())
	}
	if active == 0 {
		return 0
	}
	return at
}

// settle records the outcome of submitting batch. After a failure the keys
// are forgotten, so their next reports carry full output; after a failure
// worth retrying, each result goes back into the buffer unless a newer one
// arrived.
func (s *Scheduler) settle(batch []report, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.stats.SubmitErrors++
		retry := errors.Is(err, ErrRetry)
		for _, r := range batch {
			key := r.entry.key
			delete(s.sent, key)
			if _, newer := s.pending[key]; retry && !newer && s.entries[key] == r.entry {
				if r.obs.Unchanged {
					r.obs.Unchanged, r.obs.Output = false, r.full
				}
				s.pending[key] = r
				s.stats.Retried++
			}
		}
		return
	}
	s.stats.Batches++
	s.stats.Observations += uint64(len(batch))
	for _, r := range batch {
		key := r.entry.key
		if s.entries[key] != r.entry {
			continue // removed or redefined meanwhile
		}
		if r.obs.Unchanged {
			last := s.sent[key]
			last.unchanged++
			last.confirmed, last.latencyUs = r.obs.ObservedAtMs, r.obs.LatencyUs
			s.sent[key] = last
			continue
		}
		s.sent[key] = sentState{status: r.obs.Status, output: r.full, confirmed: r.obs.ObservedAtMs, latencyUs: r.obs.LatencyUs}
	}
}

// runQueue is a min-heap of entries by next run time.
type runQueue []*entry

func (q runQueue) Len() int           { return len(q) }
func (q runQueue) Less(i, j int) bool { return q[i].next.Before(q[j].next) }
func (q runQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (q *runQueue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}

func (q *runQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.index = -1
	return e
}
