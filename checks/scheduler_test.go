package checks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// quiet is the scheduler's logger in tests: refused submits are expected.
var quiet = slog.New(slog.DiscardHandler)

// patience bounds every wait in these tests; none should come near it.
const patience = 10 * time.Second

// waitFor polls cond until it holds, failing the test after patience.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(patience)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// submitCall is one call of a fakeSubmit.
type submitCall struct {
	n     int // calls are numbered from 0
	obs   []types.Observation
	vouch int64 // the batch's unchanged_as_of_ms
	err   error
}

// fakeSubmit records Submit calls; fail decides which calls are refused.
type fakeSubmit struct {
	calls chan submitCall
	n     atomic.Int64
	fail  func(n int) bool
}

func newFakeSubmit(fail func(n int) bool) *fakeSubmit {
	return &fakeSubmit{calls: make(chan submitCall, 1000), fail: fail}
}

func (f *fakeSubmit) submit(ctx context.Context, b *types.ObservationBatch) error {
	c := submitCall{n: int(f.n.Add(1)) - 1, obs: slices.Clone(b.Observations), vouch: b.UnchangedAsOfMs}
	if f.fail != nil && f.fail(c.n) {
		c.err = errors.New("mempool full")
	}
	select {
	case f.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	return c.err
}

func (f *fakeSubmit) next(t *testing.T) submitCall {
	t.Helper()
	select {
	case c := <-f.calls:
		return c
	case <-time.After(patience):
		t.Fatal("nothing submitted")
		return submitCall{}
	}
}

// run runs s until the test ends.
func run(t *testing.T, s *Scheduler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// counter is an HTTP handler that counts its requests.
type counter struct{ hits atomic.Int64 }

func (c *counter) ServeHTTP(http.ResponseWriter, *http.Request) { c.hits.Add(1) }

// server serves h until the test (and any scheduler started after it) ends.
func server(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestSchedulerSubmits(t *testing.T) {
	web := server(t, &counter{})
	db := listen(t).Addr().String()
	now := time.UnixMilli(1_700_000_000_000)
	f := newFakeSubmit(nil)
	s := NewScheduler(Config{Logger: quiet, FlushInterval: 10 * time.Millisecond, Submit: f.submit, Now: func() time.Time { return now }})

	h := httpCheck(types.HTTPParams{Url: web.URL})
	h.IntervalMs = 20
	c := tcpCheck(db)
	c.IntervalMs = 20
	broken := types.Check{Id: "b", Kind: "smoke-signal", IntervalMs: 20}
	s.Update([]Target{
		{Service: "web", Instance: "web-1", Check: h},
		{Service: "db", Instance: "db-1", Check: c},
		{Service: "web", Instance: "web-1", Check: broken},
	})
	run(t, s)

	want := map[string]types.Observation{
		"web/web-1/h": {Service: "web", Instance: "web-1", Check: "h", Status: types.STATUS_PASSING, Output: "HTTP 200 OK"},
		"db/db-1/t":   {Service: "db", Instance: "db-1", Check: "t", Status: types.STATUS_PASSING, Output: "TCP connect to " + db + " ok"},
		"web/web-1/b": {Service: "web", Instance: "web-1", Check: "b", Status: types.STATUS_UNKNOWN, Output: `check b: unknown kind "smoke-signal" (known: dns, exec, grpc, http, https, passive, tcp)`},
	}
	for len(want) > 0 {
		for _, o := range f.next(t).obs {
			key := o.Service + "/" + o.Instance + "/" + o.Check
			w, ok := want[key]
			if !ok || o.Unchanged {
				continue
			}
			if o.Status != w.Status || o.Output != w.Output || o.ObservedAtMs != now.UnixMilli() || o.LatencyUs < 0 {
				t.Fatalf("%s: got %+v, want %+v observed at %d", key, o, w, now.UnixMilli())
			}
			delete(want, key)
		}
	}
	// The last call is settled after it returns.
	waitFor(t, "stats", func() bool {
		st := s.Stats()
		return st.Targets == 3 && st.Probes >= 3 && st.Batches >= 1 && st.Observations >= 3
	})
}

// TestSchedulerDelta: a repeated result goes out as a refresh without
// output, every 10th report in full, and after a refused submit the next
// report is full again.
func TestSchedulerDelta(t *testing.T) {
	addr := listen(t).Addr().String()
	const refused = 12
	f := newFakeSubmit(func(n int) bool { return n == refused })
	s := NewScheduler(Config{Logger: quiet, FlushInterval: 5 * time.Millisecond, Submit: f.submit})
	c := tcpCheck(addr)
	c.IntervalMs = 5
	s.Update([]Target{{Service: "db", Instance: "db-1", Check: c}})
	run(t, s)

	full := map[int]bool{0: true, 10: true, refused + 1: true}
	for i := 0; i <= refused+1; i++ {
		call := f.next(t)
		if call.n != i || len(call.obs) != 1 || (call.err != nil) != (i == refused) {
			t.Fatalf("call %d: got call %d with %d observations, err %v", i, call.n, len(call.obs), call.err)
		}
		o := call.obs[0]
		if o.Status != types.STATUS_PASSING {
			t.Fatalf("report %d: %+v", i, o)
		}
		if full[i] && (o.Unchanged || o.Output == "") || !full[i] && (!o.Unchanged || o.Output != "") {
			t.Fatalf("report %d: unchanged %v output %q, want full %v", i, o.Unchanged, o.Output, full[i])
		}
	}
	if st := s.Stats(); st.SubmitErrors != 1 {
		t.Fatalf("stats %+v, want 1 submit error", st)
	}
}

func TestSchedulerUpdateRemoves(t *testing.T) {
	var kept, removed counter
	keptSrv, removedSrv := server(t, &kept), server(t, &removed)
	f := newFakeSubmit(nil)
	s := NewScheduler(Config{Logger: quiet, FlushInterval: 5 * time.Millisecond, Submit: f.submit})
	a := Target{Service: "web", Instance: "a", Check: httpCheck(types.HTTPParams{Url: keptSrv.URL})}
	a.Check.IntervalMs = 5
	b := Target{Service: "web", Instance: "b", Check: httpCheck(types.HTTPParams{Url: removedSrv.URL})}
	b.Check.IntervalMs = 5
	s.Update([]Target{a, b})
	run(t, s)

	seen := map[string]bool{}
	for !seen[a.Key()] || !seen[b.Key()] {
		for _, o := range f.next(t).obs {
			seen[o.Service+"/"+o.Instance+"/"+o.Check] = true
		}
	}

	s.Update([]Target{a})
	// A flush under way may still carry b's last result: it is call n at
	// the latest. Every later call must not.
	n := int(f.n.Load())
	hits := removed.hits.Load()
	from := kept.hits.Load()
	waitFor(t, "more probes of the kept target", func() bool { return kept.hits.Load() >= from+5 })
	for call := f.next(t); call.n <= n+3; call = f.next(t) {
		for _, o := range call.obs {
			if o.Instance == "b" && call.n > n {
				t.Fatalf("call %d after the update carries the removed target: %+v", call.n, o)
			}
		}
	}
	// One probe may have been in flight during the update.
	if got := removed.hits.Load(); got > hits+1 {
		t.Fatalf("removed target still probed: %d hits at the update, %d now", hits, got)
	}
	if st := s.Stats(); st.Targets != 1 {
		t.Fatalf("stats %+v, want 1 target", st)
	}
}

// blocker is an HTTP handler whose requests wait for a token on release
// (or for their client to give up), tracking how many are in flight.
type blocker struct {
	release  chan struct{}
	arrived  chan struct{}
	inFlight atomic.Int64
	mu       sync.Mutex
	max      int64
}

func newBlocker() *blocker {
	return &blocker{release: make(chan struct{}), arrived: make(chan struct{}, 1000)}
}

func (b *blocker) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	b.mu.Lock()
	b.max = max(b.max, n)
	b.mu.Unlock()
	b.arrived <- struct{}{}
	select {
	case <-b.release:
	case <-r.Context().Done():
	}
}

func (b *blocker) maxInFlight() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max
}

func (b *blocker) waitArrival(t *testing.T) {
	t.Helper()
	select {
	case <-b.arrived:
	case <-time.After(patience):
		t.Fatal("no request arrived")
	}
}

// TestSchedulerNoPileUp: a probe slower than its interval never runs twice
// at once; the runs due meanwhile are skipped.
func TestSchedulerNoPileUp(t *testing.T) {
	b := newBlocker()
	srv := server(t, b)
	s := NewScheduler(Config{Logger: quiet, FlushInterval: 5 * time.Millisecond, Submit: newFakeSubmit(nil).submit})
	c := httpCheck(types.HTTPParams{Url: srv.URL})
	c.IntervalMs = 5
	s.Update([]Target{{Service: "web", Instance: "web-1", Check: c}})
	run(t, s)

	b.waitArrival(t)
	waitFor(t, "skipped runs", func() bool { return s.Stats().Skipped >= 5 })
	b.release <- struct{}{}
	b.waitArrival(t) // the next run starts once the first is done
	b.release <- struct{}{}
	if m := b.maxInFlight(); m != 1 {
		t.Fatalf("%d concurrent runs of one check, want 1", m)
	}
}

// TestSchedulerMaxConcurrent: no more than MaxConcurrent probes are in
// flight, and a finished probe frees its slot for the next.
func TestSchedulerMaxConcurrent(t *testing.T) {
	b := newBlocker()
	srv := server(t, b)
	s := NewScheduler(Config{Logger: quiet, MaxConcurrent: 2, FlushInterval: 5 * time.Millisecond, Submit: newFakeSubmit(nil).submit})
	var targets []Target
	for i := range 5 {
		c := httpCheck(types.HTTPParams{Url: srv.URL})
		c.IntervalMs = 5
		targets = append(targets, Target{Service: "web", Instance: fmt.Sprint("web-", i), Check: c})
	}
	s.Update(targets)
	run(t, s)

	b.waitArrival(t)
	b.waitArrival(t)
	for range 6 {
		b.release <- struct{}{}
		b.waitArrival(t)
	}
	if m := b.maxInFlight(); m != 2 {
		t.Fatalf("%d probes in flight at most, want 2", m)
	}
}

// TestSchedulerBatches: a flush larger than MaxBatch is split, in key order,
// and a refused batch makes only its own keys report in full next time.
func TestSchedulerBatches(t *testing.T) {
	f := newFakeSubmit(func(n int) bool { return n == 1 })
	s := NewScheduler(Config{Logger: quiet, MaxBatch: 2, Submit: f.submit})
	var targets []Target
	for i := range 5 {
		// An unknown kind probes at once, as unknown, with no I/O.
		targets = append(targets, Target{Service: "svc", Instance: fmt.Sprint("i", i), Check: types.Check{Id: "c", Kind: "none"}})
	}
	s.Update(targets)
	flushAll := func() (sizes []int, full []string) {
		for _, e := range s.entries {
			s.probe(context.Background(), e)
		}
		s.flush(context.Background())
		for len(f.calls) > 0 {
			call := <-f.calls
			sizes = append(sizes, len(call.obs))
			for _, o := range call.obs {
				if !o.Unchanged {
					full = append(full, o.Instance)
				}
			}
		}
		return sizes, full
	}

	sizes, full := flushAll()
	if fmt.Sprint(sizes) != "[2 2 1]" || fmt.Sprint(full) != "[i0 i1 i2 i3 i4]" {
		t.Fatalf("first flush: batch sizes %v, full reports %v", sizes, full)
	}
	// The second batch (i2, i3) was refused.
	sizes, full = flushAll()
	if fmt.Sprint(sizes) != "[2 2 1]" || fmt.Sprint(full) != "[i2 i3]" {
		t.Fatalf("second flush: batch sizes %v, full reports %v", sizes, full)
	}
	if st := s.Stats(); st.Batches != 5 || st.SubmitErrors != 1 || st.Observations != 8 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSchedulerUpdateKeepsSchedule(t *testing.T) {
	s := NewScheduler(Config{Logger: quiet, Submit: newFakeSubmit(nil).submit})
	a := Target{Service: "web", Instance: "a", Check: tcpCheck("127.0.0.1:1")}
	b := Target{Service: "web", Instance: "b", Check: tcpCheck("127.0.0.1:2")}
	s.Update([]Target{a, b})
	ea, eb := s.entries[a.Key()], s.entries[b.Key()]

	b.Check.TimeoutMs++
	s.Update([]Target{a, b})
	if s.entries[a.Key()] != ea {
		t.Fatal("an unchanged target was rescheduled")
	}
	if s.entries[b.Key()] == eb {
		t.Fatal("a redefined target kept its old definition")
	}
	s.Update([]Target{b})
	if _, ok := s.entries[a.Key()]; ok || len(s.queue) != 1 {
		t.Fatalf("removed target still scheduled: %d queued", len(s.queue))
	}
}

func TestSplay(t *testing.T) {
	const interval = 50 * time.Millisecond
	seen := map[time.Duration]bool{}
	for i := range 100 {
		key := fmt.Sprintf("web/web-%d/http", i)
		d := splay(key, interval)
		if d < 0 || d >= interval || d != splay(key, interval) {
			t.Fatalf("splay(%s) = %v, not stable in [0, %v)", key, d, interval)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 keys got only %d distinct splays", len(seen))
	}
}

func TestSchedulerPassive(t *testing.T) {
	f := newFakeSubmit(nil)
	var seen atomic.Int64
	s := NewScheduler(Config{Logger: quiet, FlushInterval: 5 * time.Millisecond, Submit: f.submit,
		OnResult: func(Target, Result) { seen.Add(1) }})
	passive := Target{Service: "db", Instance: "db-1", Check: types.Check{Id: "backup", Kind: "passive", TtlMs: 60_000}}
	probed := Target{Service: "db", Instance: "db-1", Check: types.Check{Id: "none", Kind: "none", IntervalMs: 5}}
	s.Update([]Target{passive, probed})
	run(t, s)

	if err := s.Report(probed, Result{Status: types.STATUS_PASSING}); !errors.Is(err, ErrNotScheduled) {
		t.Fatalf("report for a probed check: %v, want ErrNotScheduled", err)
	}
	unknown := passive
	unknown.Instance = "db-2"
	if err := s.Report(unknown, Result{Status: types.STATUS_PASSING}); !errors.Is(err, ErrNotScheduled) {
		t.Fatalf("report for an unscheduled check: %v, want ErrNotScheduled", err)
	}
	if err := s.Report(passive, Result{Status: types.STATUS_WARNING, Output: "backup is 26h old"}); err != nil {
		t.Fatal(err)
	}
	// The probed check reports on its own; the passive one only once, as reported.
	var backup []types.Observation
	for len(backup) == 0 {
		for _, o := range f.next(t).obs {
			if o.Check == "backup" {
				backup = append(backup, o)
			}
		}
	}
	if o := backup[0]; o.Status != types.STATUS_WARNING || o.Output != "backup is 26h old" {
		t.Fatalf("passive report: %+v", o)
	}
	waitFor(t, "a few more flushes", func() bool { return f.n.Load() > 5 })
	for len(f.calls) > 0 {
		for _, o := range (<-f.calls).obs {
			if o.Check == "backup" {
				t.Fatalf("a passive check was reported without a submitted result: %+v", o)
			}
		}
	}
	if st := s.Stats(); st.Targets != 2 || seen.Load() < 2 {
		t.Fatalf("stats %+v, OnResult saw %d", st, seen.Load())
	}
}

// TestSchedulerNeverProbesPassive: a passive target, even one given an
// interval, is never probed, neither when added nor when redefined, while
// the targets beside it are probed again and again.
func TestSchedulerNeverProbesPassive(t *testing.T) {
	var mu sync.Mutex
	probes := map[string]int{}
	s := NewScheduler(Config{Logger: quiet, FlushInterval: 5 * time.Millisecond, Submit: newFakeSubmit(nil).submit,
		Intercept: func(tg Target) (Result, bool) {
			mu.Lock()
			defer mu.Unlock()
			probes[tg.Key()]++
			return Result{Status: types.STATUS_PASSING, Output: "ok"}, true
		}})
	passive := Target{Service: "db", Instance: "db-1", Check: types.Check{Id: "backup", Kind: "passive", IntervalMs: 5, TtlMs: 60_000}}
	probed := Target{Service: "db", Instance: "db-1", Check: types.Check{Id: "ping", Kind: "tcp", Tcp: &types.TCPParams{Address: "127.0.0.1:1"}, IntervalMs: 5}}
	probedN := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return probes[probed.Key()] >= n
		}
	}
	s.Update([]Target{passive, probed})
	run(t, s)
	waitFor(t, "the probed target to be probed 10 times", probedN(10))
	passive.Check.TtlMs = 120_000 // redefined: a new entry
	s.Update([]Target{passive, probed})
	waitFor(t, "the probed target to be probed 20 times", probedN(20))

	mu.Lock()
	defer mu.Unlock()
	if n := probes[passive.Key()]; n != 0 {
		t.Fatalf("the passive target was probed %d times", n)
	}
	if st := s.Stats(); st.Targets != 2 {
		t.Fatalf("stats %+v, want 2 targets", st)
	}
}

func TestSchedulerRetry(t *testing.T) {
	// Call 0 fails with a full mempool, call 1 with a refusal.
	calls := 0
	s := NewScheduler(Config{Logger: quiet, Submit: func(_ context.Context, _ *types.ObservationBatch) error {
		calls++
		switch calls {
		case 1:
			return fmt.Errorf("%w: mempool is full", ErrRetry)
		case 2:
			return errors.New("refused: code 5")
		}
		return nil
	}})
	tg := Target{Service: "db", Instance: "db-1", Check: types.Check{Id: "backup", Kind: "passive", TtlMs: 60_000}}
	s.Update([]Target{tg})
	if err := s.Report(tg, Result{Status: types.STATUS_CRITICAL, Output: "no backup"}); err != nil {
		t.Fatal(err)
	}
	s.flush(context.Background())
	if len(s.pending) != 1 || s.Stats().Retried != 1 {
		t.Fatalf("after a full mempool the result must wait for the next flush: pending %d, stats %+v", len(s.pending), s.Stats())
	}
	s.flush(context.Background())
	if len(s.pending) != 0 || s.Stats().Retried != 1 || s.Stats().SubmitErrors != 2 {
		t.Fatalf("a refused batch is not retried: pending %d, stats %+v", len(s.pending), s.Stats())
	}
}

func TestSchedulerBatchBytes(t *testing.T) {
	var sizes []int
	s := NewScheduler(Config{Logger: quiet, MaxBatchBytes: 1000, Submit: func(_ context.Context, b *types.ObservationBatch) error {
		obs := b.Observations
		if b.Size() > 1000+4*len(obs) {
			t.Errorf("batch of %d bytes", b.Size())
		}
		sizes = append(sizes, len(obs))
		return nil
	}})
	var targets []Target
	for i := range 10 {
		targets = append(targets, Target{Service: "svc", Instance: fmt.Sprint("i", i), Check: types.Check{Id: "c", Kind: "passive", TtlMs: 1000}})
	}
	s.Update(targets)
	for _, tg := range targets {
		// About 260 bytes each: three fit in 1000.
		if err := s.Report(tg, Result{Status: types.STATUS_PASSING, Output: strings.Repeat("x", 240)}); err != nil {
			t.Fatal(err)
		}
	}
	s.flush(context.Background())
	if fmt.Sprint(sizes) != "[3 3 3 1]" {
		t.Fatalf("batch sizes %v, want [3 3 3 1]", sizes)
	}
}

// TestSchedulerFlushesChangesEarly: with an hour-long flush interval, a
// result whose status changed is submitted at once (the test's patience is
// far below the interval), and one that did not change waits for the tick.
func TestSchedulerFlushesChangesEarly(t *testing.T) {
	f := newFakeSubmit(nil)
	s := NewScheduler(Config{Logger: quiet, FlushInterval: time.Hour, Submit: f.submit})
	passive := Target{Service: "db", Instance: "db-1", Check: types.Check{Id: "backup", Kind: "passive", TtlMs: 60_000}}
	s.Update([]Target{passive})
	run(t, s)
	for i, st := range []types.Status{types.STATUS_PASSING, types.STATUS_CRITICAL} {
		if err := s.Report(passive, Result{Status: st}); err != nil {
			t.Fatal(err)
		}
		if c := f.next(t); len(c.obs) != 1 || c.obs[0].Status != st {
			t.Fatalf("change %d: submitted %+v, want %s", i, c.obs, st.Name())
		}
	}
	// The same status again: nothing before the (hour-long) tick. The
	// submission that would betray an early flush would come within
	// milliseconds; a further change afterwards proves the loop is alive
	// and that the unchanged result was not sent on its own.
	if err := s.Report(passive, Result{Status: types.STATUS_CRITICAL}); err != nil {
		t.Fatal(err)
	}
	if err := s.Report(passive, Result{Status: types.STATUS_WARNING}); err != nil {
		t.Fatal(err)
	}
	if c := f.next(t); len(c.obs) != 1 || c.obs[0].Status != types.STATUS_WARNING {
		t.Fatalf("submitted %+v, want only the warning", c.obs)
	}
}

// TestSchedulerVouches: a vouching scheduler sends only changed results and
// vouches for the rest as of the earliest of each active target's last
// accepted result plus its interval; it vouches for nothing while a target
// has no accepted result (after a refused submit, say), sending its
// unchanged results as unchanged reports meanwhile; it sends every
// refreshEvery-th unchanged result in full, and after a resync sends every
// target's last accepted result again.
func TestSchedulerVouches(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	resync := false
	f := newFakeSubmit(func(n int) bool { return n == 3 })
	s := NewScheduler(Config{Logger: quiet, Vouch: true, Submit: f.submit, Now: func() time.Time { return now },
		Resync: func() bool { r := resync; resync = false; return r }})
	tcp := func(id string, iv int64) Target {
		return Target{Service: "web", Instance: "web-1", Check: types.Check{Id: id, Kind: "tcp", IntervalMs: iv, TimeoutMs: 1000, TtlMs: 3 * iv,
			Tcp: &types.TCPParams{Address: "127.0.0.1:1"}}}
	}
	fast, slow := tcp("fast", 1000), tcp("slow", 10_000)
	pushed := Target{Service: "web", Instance: "web-1", Check: types.Check{Id: "pushed", Kind: "passive", TtlMs: 60_000}}
	s.Update([]Target{fast, slow, pushed})
	result := func(tg Target, st types.Status) {
		t.Helper()
		s.mu.Lock()
		e := s.entries[tg.Key()]
		s.mu.Unlock()
		s.buffer(e, Result{Status: st, Output: st.Name()})
	}
	flush := func() submitCall {
		t.Helper()
		s.flush(context.Background())
		return f.next(t)
	}
	checks := func(c submitCall) []string {
		var ids []string
		for _, o := range c.obs {
			ids = append(ids, o.Check)
		}
		return ids
	}
	t0 := now.UnixMilli()

	result(fast, types.STATUS_PASSING)
	result(slow, types.STATUS_PASSING)
	c := flush()
	if got := checks(c); !slices.Equal(got, []string{"fast", "slow"}) || c.vouch != t0 {
		t.Fatalf("first flush sent %v vouching as of %d, want fast and slow in full, as of %d", got, c.vouch, t0)
	}

	now = now.Add(time.Second)
	result(fast, types.STATUS_PASSING)
	c = flush()
	if len(c.obs) != 0 || c.vouch != t0+1000 {
		t.Fatalf("unchanged flush sent %v vouching as of %d, want nothing but a vouch as of %d", checks(c), c.vouch, t0+1000)
	}

	// A passive result is never vouched for; the slow check bounds the vouch.
	now = now.Add(9500 * time.Millisecond)
	result(fast, types.STATUS_CRITICAL)
	if err := s.Report(pushed, Result{Status: types.STATUS_PASSING}); err != nil {
		t.Fatal(err)
	}
	c = flush()
	if got := checks(c); !slices.Equal(got, []string{"fast", "pushed"}) || c.vouch != t0+10_000 {
		t.Fatalf("flush after a change sent %v vouching as of %d, want fast and pushed, as of the slow check's %d", got, c.vouch, t0+10_000)
	}

	// Call 3 is refused: the fast check has no accepted result, so the next
	// flush vouches only once it is sent again.
	now = now.Add(time.Second)
	result(fast, types.STATUS_PASSING)
	if c = flush(); c.err == nil {
		t.Fatal("call 3 was not refused")
	}
	now = now.Add(time.Second)
	result(slow, types.STATUS_PASSING)
	if c = flush(); !slices.Equal(checks(c), []string{"slow"}) || !c.obs[0].Unchanged || c.vouch != 0 {
		t.Fatalf("flush after a refused one sent %+v vouching as of %d, want slow as an unchanged report and no vouch: the fast check's change is not accepted", c.obs, c.vouch)
	}
	result(fast, types.STATUS_PASSING)
	if c = flush(); !slices.Equal(checks(c), []string{"fast"}) || c.vouch == 0 {
		t.Fatalf("flush sent %v vouching as of %d, want fast in full and a vouch", checks(c), c.vouch)
	}

	// Resync: every target's last accepted result again, in full.
	resync = true
	if c = flush(); !slices.Equal(checks(c), []string{"fast", "pushed", "slow"}) || c.obs[0].Unchanged || c.obs[0].ObservedAtMs == 0 {
		t.Fatalf("resync sent %+v, want every target in full with its observed time", c.obs)
	}

	// Every refreshEvery-th unchanged result goes in full.
	full := 0
	for range 2 * refreshEvery {
		now = now.Add(time.Second)
		result(fast, types.STATUS_PASSING)
		if c = flush(); len(c.obs) > 0 {
			full++
		}
	}
	if full != 2 {
		t.Fatalf("%d of %d unchanged results went in full, want 2", full, 2*refreshEvery)
	}
}
