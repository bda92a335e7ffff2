package checks

import (
	"container/heap"
	"context"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// Target is one check this observer must run.
type Target struct {
	Service, Instance string
	Check             types.Check
}

// Key is "service/instance/check".
func (t Target) Key() string { return t.Service + "/" + t.Instance + "/" + t.Check.Id }

// Config configures a Scheduler.
type Config struct {
	// MaxConcurrent bounds the probes in flight (default 64).
	MaxConcurrent int
	// FlushInterval is how often results are submitted (default 1s).
	FlushInterval time.Duration
	// MaxBatch is the most observations per Submit call (default 2000).
	MaxBatch int
	// Submit signs and sends one batch; an error means it was not accepted.
	Submit func(ctx context.Context, obs []types.Observation) error
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Stats counts what the scheduler did.
type Stats struct {
	Probes, Skipped, Batches, SubmitErrors uint64
}

// Scheduler runs each target at its interval, with a stable per-check splay,
// at most MaxConcurrent probes at once and never two runs of one check at
// once, and submits the latest result of every check once per flush.
type Scheduler struct {
	cfg Config

	mu      sync.Mutex
	entries map[string]*entry
	queue   entryHeap
	results map[string]Result // latest results since the last flush
	stats   Stats
	wake    chan struct{}
}

type entry struct {
	target  Target
	def     string // the check's encoding, to notice changed definitions
	prober  Prober
	every   time.Duration
	next    time.Time
	running bool
	index   int // in the heap; -1 when removed

	sentStatus types.Status
	sentOutput string
	sentValid  bool
	reports    int
}

// NewScheduler returns a scheduler with no targets.
func NewScheduler(cfg Config) *Scheduler {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 64
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Scheduler{cfg: cfg, entries: map[string]*entry{}, results: map[string]Result{}, wake: make(chan struct{}, 1)}
}

// Update replaces the set of targets. Targets whose definition is unchanged
// keep their schedule; new and changed ones start at their splay.
func (s *Scheduler) Update(targets []Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	keep := make(map[string]bool, len(targets))
	for _, t := range targets {
		k := t.Key()
		keep[k] = true
		bz, _ := t.Check.Marshal()
		def := string(bz)
		if e, ok := s.entries[k]; ok && e.def == def {
			continue
		} else if ok {
			s.remove(e)
		}
		e := &entry{target: t, def: def, every: time.Duration(t.Check.IntervalMs) * time.Millisecond}
		if e.every <= 0 {
			e.every = 10 * time.Second
		}
		p, err := New(t.Check)
		if err != nil {
			e.prober = failing{Result{Status: types.STATUS_UNKNOWN, Output: clip(err.Error())}}
		} else {
			e.prober = p
		}
		e.next = now.Add(splay(k, e.every))
		s.entries[k] = e
		heap.Push(&s.queue, e)
	}
	for k, e := range s.entries {
		if !keep[k] {
			s.remove(e)
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) remove(e *entry) {
	if e.index >= 0 {
		heap.Remove(&s.queue, e.index)
	}
	delete(s.entries, e.target.Key())
	delete(s.results, e.target.Key())
}

// splay spreads first runs over the interval by a stable hash of the key.
func splay(key string, every time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(key))
	return time.Duration(h.Sum64() % uint64(every))
}

// Stats returns the counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Run runs probes and flushes until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	sem := make(chan struct{}, s.cfg.MaxConcurrent)
	var wg sync.WaitGroup
	defer wg.Wait()
	flush := time.NewTicker(s.cfg.FlushInterval)
	defer flush.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due := s.due()
		for _, e := range due {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Add(1)
			go func(e *entry) {
				defer wg.Done()
				defer func() { <-sem }()
				res := e.prober.Probe(ctx)
				s.mu.Lock()
				e.running = false
				s.stats.Probes++
				if s.entries[e.target.Key()] == e && ctx.Err() == nil {
					s.results[e.target.Key()] = res
				}
				s.mu.Unlock()
			}(e)
		}
		timer.Reset(s.untilNext())
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C:
		case <-flush.C:
			s.flush(ctx)
		}
	}
}

// due pops the entries whose time has come and reschedules them; a check
// still running is skipped this round.
func (s *Scheduler) due() []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var out []*entry
	for len(s.queue) > 0 && !s.queue[0].next.After(now) {
		e := s.queue[0]
		for !e.next.After(now) {
			e.next = e.next.Add(e.every)
		}
		heap.Fix(&s.queue, 0)
		if e.running {
			s.stats.Skipped++
			continue
		}
		e.running = true
		out = append(out, e)
	}
	return out
}

func (s *Scheduler) untilNext() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return time.Hour
	}
	return max(s.queue[0].next.Sub(s.cfg.Now()), 0)
}

// flush submits the latest results, delta-encoded, in batches.
func (s *Scheduler) flush(ctx context.Context) {
	s.mu.Lock()
	if len(s.results) == 0 {
		s.mu.Unlock()
		return
	}
	now := s.cfg.Now().UnixMilli()
	obs := make([]types.Observation, 0, len(s.results))
	for k, r := range s.results {
		e := s.entries[k]
		o := types.Observation{
			Service: e.target.Service, Instance: e.target.Instance, Check: e.target.Check.Id,
			Status: r.Status, LatencyUs: r.Latency.Microseconds(), Output: r.Output, ObservedAtMs: now,
		}
		e.reports++
		if e.sentValid && e.sentStatus == r.Status && e.sentOutput == r.Output && e.reports%10 != 0 {
			o.Output, o.Unchanged = "", true
		}
		e.sentStatus, e.sentOutput, e.sentValid = r.Status, r.Output, true
		obs = append(obs, o)
	}
	s.results = map[string]Result{}
	s.mu.Unlock()

	for start := 0; start < len(obs); start += s.cfg.MaxBatch {
		batch := obs[start:min(start+s.cfg.MaxBatch, len(obs))]
		err := s.cfg.Submit(ctx, batch)
		s.mu.Lock()
		s.stats.Batches++
		if err != nil {
			s.stats.SubmitErrors++
			for _, o := range batch { // send in full next time
				if e := s.entries[o.Service+"/"+o.Instance+"/"+o.Check]; e != nil {
					e.sentValid = false
				}
			}
		}
		s.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("submit observations", "count", len(batch), "err", err)
		}
	}
}

// failing is the prober of a check that cannot be built.
type failing struct{ r Result }

func (f failing) Probe(context.Context) Result { return f.r }

type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *entryHeap) Push(x any)        { e := x.(*entry); e.index = len(*h); *h = append(*h, e) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
