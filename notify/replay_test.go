package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
)

// register registers service with one check (ttl 3 s: three empty blocks
// make it stale).
func (c *chain) register(service string) {
	c.t.Helper()
	si := types.ServiceInstance{Name: service, Id: service + "-1", Address: "127.0.0.1", Checks: []types.Check{{
		Id: "http", Kind: "http", Http: &types.HTTPParams{Url: "http://127.0.0.1:1/"}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
	c.block([]string{"root"}, types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: si}}})
}

// report has every observer report st on service's check in one block,
// and returns the block's alerts.
func (c *chain) report(service string, st types.Status) []types.Alert {
	c.t.Helper()
	var msgs []types.Msg
	for range testObservers {
		msgs = append(msgs, types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: []types.Observation{
			{Service: service, Instance: service + "-1", Check: "http", Status: st, Output: st.Name()}}}}})
	}
	al, _ := c.block(testObservers, msgs...)
	return al
}

// change reports st and returns the one alert it raises.
func (c *chain) change(service string, st types.Status) types.Alert {
	c.t.Helper()
	al := c.report(service, st)
	if len(al) != 1 {
		c.t.Fatalf("report %s on %s: alerts %+v, want one", st.Name(), service, al)
	}
	return al[0]
}

// past moves the chain's block time to ago before now.
func (c *chain) past(ago time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = time.Now().Add(-ago).UnixMilli()
}

// request is one request a recorder received: the alert id of a native
// delivery, or the alerts of an Alertmanager one, and when it came.
type request struct {
	id  string
	am  []amAlert
	got time.Time
}

// recorder is a real HTTP receiver that records every request.
type recorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []request
}

func newRecorder(t *testing.T) *recorder {
	rc := &recorder{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := request{id: r.Header.Get(HeaderID), got: time.Now()}
		if req.id == "" {
			if err := json.Unmarshal(body, &req.am); err != nil {
				t.Errorf("alertmanager body %q: %v", body, err)
			}
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.got = append(rc.got, req)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *recorder) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

func (rc *recorder) ids() []string {
	var out []string
	for _, r := range rc.requests() {
		out = append(out, r.id)
	}
	return out
}

// openNotifier makes a notifier over the outbox in dir with receiver r
// (mode all: no turns), as the node o1.
func openNotifier(t *testing.T, c *chain, dir string, r Receiver) *Notifier {
	t.Helper()
	if r.Mode == "" {
		r.Mode = ModeAll
	}
	if r.Format == "" {
		r.Format = FormatNative
	}
	if r.Kinds == nil {
		r.Kinds = []string{"state_change"} // the test services go stale as blocks pass
	}
	r.Timeout = 5 * time.Second
	cfg := Config{HandoffDelay: time.Hour, MaxAge: time.Hour, ResendInterval: 100 * time.Millisecond, ResolvedFor: 400 * time.Millisecond,
		RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, Receivers: []Receiver{r}}
	n, err := New(Options{Config: cfg, Dir: dir, Observer: id("o1"), Chain: c})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// queued lists the alert ids n holds for receiver, oldest first.
func (n *Notifier) queued(receiver string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var es []*entry
	for _, e := range n.entries {
		if e.Receiver == receiver {
			es = append(es, e)
		}
	}
	slices.SortFunc(es, func(a, b *entry) int {
		if a.Pos.before(b.Pos) {
			return -1
		}
		return 1
	})
	var out []string
	for _, e := range es {
		out = append(out, e.AlertID)
	}
	return out
}

// runUntil runs n until stop is called (which waits for it to return).
func runUntil(n *Notifier) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	return func() { cancel(); <-done }
}

// TestRestartNeverReplaysOlder: a node that delivered a check's alerts
// and restarts re-sends none of them; alerts committed while it was down
// reach the receiver only as the check's newest, never an older one
// after a newer.
func TestRestartNeverReplaysOlder(t *testing.T) {
	c := newChain(t)
	c.past(10 * time.Minute) // block times behind the clock, within max_age
	c.register("web")
	c.report("web", types.STATUS_PASSING)
	rc := newRecorder(t)
	dir := t.TempDir()
	r := Receiver{Name: "pager", URL: rc.srv.URL + "/pager", SinceAll: true}

	n := openNotifier(t, c, dir, r)
	stop := runUntil(n)
	down := c.change("web", types.STATUS_CRITICAL)
	n.Committed([]types.Alert{down}, nil)
	testutil.WaitFor(t, "the first alert delivered", 30*time.Second, func() (bool, error) {
		return len(rc.ids()) == 1, nil
	})
	up := c.change("web", types.STATUS_PASSING)
	n.Committed([]types.Alert{up}, nil)
	testutil.WaitFor(t, "both alerts delivered", 30*time.Second, func() (bool, error) {
		return len(rc.ids()) == 2 && len(n.queued("pager")) == 0, nil
	})
	stop()
	if got := rc.ids(); !slices.Equal(got, []string{down.Id, up.Id}) {
		t.Fatalf("delivered %v, want [%s %s]", got, down.Id, up.Id)
	}

	// First restart: no receipt was committed (this node has no Receipt),
	// so nothing settles the two alerts; still, they were sent.
	n = openNotifier(t, c, dir, r)
	if err := n.catchUp(); err != nil {
		t.Fatal(err)
	}
	if q := n.queued("pager"); len(q) != 0 {
		t.Errorf("after a restart, %v queued again (delivered before)", q)
	}
	n.out.close()

	// Down again: the check fails and recovers. Only the recovery is sent.
	down2 := c.change("web", types.STATUS_CRITICAL)
	up2 := c.change("web", types.STATUS_PASSING)
	n = openNotifier(t, c, dir, r)
	stop = runUntil(n)
	defer stop()
	testutil.WaitFor(t, "the newest alert delivered", 30*time.Second, func() (bool, error) {
		return slices.Contains(rc.ids(), up2.Id), nil
	})
	// Entries fall due by block time: an older one would have gone first.
	if got, want := rc.ids(), []string{down.Id, up.Id, up2.Id}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v (not %s, older than %s)", got, want, down2.Id, up2.Id)
	}
}

// TestRestartSupersededByCommitted: an alert this node still owed when it
// went down is dropped at start once a newer alert about its check is
// committed, even though other nodes delivered that one (it is settled,
// and this node will not send it).
func TestRestartSupersededByCommitted(t *testing.T) {
	c := newChain(t)
	c.past(10 * time.Minute)
	c.register("web")
	c.report("web", types.STATUS_PASSING)
	down := c.change("web", types.STATUS_CRITICAL)
	rc := newRecorder(t)
	dir := t.TempDir()
	r := Receiver{Name: "pager", URL: rc.srv.URL + "/pager", Mode: ModeOne, SinceAll: true}

	n := openNotifier(t, c, dir, r) // handoff 1h: o1's turn never comes in this test
	n.Committed([]types.Alert{down}, nil)
	if q := n.queued("pager"); !slices.Equal(q, []string{down.Id}) {
		t.Fatalf("queued %v, want [%s]", q, down.Id)
	}
	n.out.close()

	up := c.change("web", types.STATUS_PASSING)
	c.block([]string{"o2", "o3"}, receiptMsg(up.Id, "pager", nil), receiptMsg(up.Id, "pager", nil))
	n = openNotifier(t, c, dir, r)
	defer n.out.close()
	if err := n.catchUp(); err != nil {
		t.Fatal(err)
	}
	if q := n.queued("pager"); len(q) != 0 {
		t.Errorf("after a restart, %v queued: %s is older than the committed %s", q, down.Id, up.Id)
	}
}

// TestSince: a receiver new to a node's outbox starts at the node's start
// ("now", the default), from a given time, or catches up with every alert
// within max_age ("all"); once recorded, it catches up normally after a
// restart.
func TestSince(t *testing.T) {
	c := newChain(t)
	c.past(20 * time.Minute)
	c.register("early")
	c.report("early", types.STATUS_PASSING)
	early := c.change("early", types.STATUS_CRITICAL)
	c.past(10 * time.Minute)
	c.register("late")
	c.report("late", types.STATUS_PASSING)
	late := c.change("late", types.STATUS_CRITICAL)
	rc := newRecorder(t)
	for _, tc := range []struct {
		name  string
		since string
		want  []string
	}{
		{"default", "", nil},
		{"now", "now", nil},
		{"all", "all", []string{early.Id, late.Id}},
		{"time", time.UnixMilli(late.TimeMs).Add(-time.Minute).UTC().Format(time.RFC3339), []string{late.Id}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := (Settings{Receivers: []ReceiverSettings{{Name: "r", URL: rc.srv.URL, Since: tc.since}}}).Check("bftmon.json", nil)
			if err != nil {
				t.Fatal(err)
			}
			n := openNotifier(t, c, t.TempDir(), cfg.Receivers[0])
			defer n.out.close()
			if err := n.catchUp(); err != nil {
				t.Fatal(err)
			}
			if q := n.queued("r"); !slices.Equal(q, tc.want) {
				t.Errorf("queued %v, want %v", q, tc.want)
			}
		})
	}

	// A receiver recorded by a first start catches up with what was
	// committed while the node was down (since "now" is the first start).
	dir := t.TempDir()
	r := Receiver{Name: "r", URL: rc.srv.URL}
	n := openNotifier(t, c, dir, r)
	// As if that start was five minutes ago; the alert below is committed
	// since, before the next start.
	if err := n.out.putSeen("r", seen{From: time.Now().Add(-5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	n.out.close()
	c.past(time.Minute)
	c.register("later")
	c.report("later", types.STATUS_PASSING)
	later := c.change("later", types.STATUS_CRITICAL)
	n = openNotifier(t, c, dir, r)
	defer n.out.close()
	if err := n.catchUp(); err != nil {
		t.Fatal(err)
	}
	if q := n.queued("r"); !slices.Equal(q, []string{later.Id}) {
		t.Errorf("after a restart, queued %v, want [%s]", q, later.Id)
	}
}

// TestAlertmanagerStaleResent: a stale alert is re-sent to Alertmanager
// while the check's committed verdict is stale, then resolved once it is
// fresh, and the entry ends after resolved_for.
func TestAlertmanagerStaleResent(t *testing.T) {
	c := newChain(t)
	c.past(10 * time.Minute)
	c.register("web")
	c.report("web", types.STATUS_PASSING)
	c.report("web", types.STATUS_PASSING)
	var stale types.Alert
	for i := 0; stale.Id == ""; i++ {
		if i == 10 {
			t.Fatal("no stale alert after 10 empty blocks")
		}
		als, _ := c.block(nil)
		for _, al := range als {
			if al.Kind == "stale" {
				stale = al
			}
		}
	}
	rc := newRecorder(t)
	n := openNotifier(t, c, t.TempDir(), Receiver{Name: "am", URL: rc.srv.URL + "/api/v2/alerts", Format: FormatAlertmanager, SinceAll: true, Kinds: []string{"stale"}})
	stop := runUntil(n)
	defer stop()
	n.Committed([]types.Alert{stale}, nil)
	firing := func(r request) bool {
		return len(r.am) == 1 && r.am[0].Labels["alertname"] == "BftmonCheckStale" && r.am[0].EndsAt.After(r.got)
	}
	testutil.WaitFor(t, "the stale alert re-sent while stale", 30*time.Second, func() (bool, error) {
		return len(rc.requests()) >= 3, nil
	})
	for i, r := range rc.requests() {
		if !firing(r) {
			t.Fatalf("request %d while stale: %+v, want it firing (endsAt ahead)", i, r.am)
		}
	}
	c.report("web", types.STATUS_PASSING)
	testutil.WaitFor(t, "the resolution", 30*time.Second, func() (bool, error) {
		rs := rc.requests()
		last := rs[len(rs)-1]
		return !firing(last) && len(last.am) == 1 && !last.am[0].EndsAt.After(last.got), nil
	})
	testutil.WaitFor(t, "the entry done after resolved_for", 30*time.Second, func() (bool, error) {
		return len(n.queued("am")) == 0, nil
	})
	// Once resolved, never firing again.
	rs := rc.requests()
	resolved := false
	for i, r := range rs {
		if !firing(r) {
			resolved = true
		} else if resolved {
			t.Errorf("request %d fires again after the resolution: %+v", i, r.am)
		}
	}
}
