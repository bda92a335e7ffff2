package notify

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/store"
)

const testChain = "notify-test"

func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// chain is a real app over a memory store, four observers of weight 1,
// committing the blocks a test makes; it is the notifier's Chain.
type chain struct {
	t      *testing.T
	mu     sync.Mutex
	st     *store.Store
	app    *app.App
	height int64
	now    int64
	nonce  uint64
}

var testObservers = []string{"o1", "o2", "o3", "o4"}

func newChain(t *testing.T) *chain {
	g := &app.Genesis{Operators: []app.GenesisOperator{{Name: "root", PubKey: b64(testKey("root").Public().(ed25519.PublicKey)), Prefixes: []string{""}}}}
	for _, o := range testObservers {
		g.Observers = append(g.Observers, app.GenesisObserver{Name: o, PubKey: b64(testKey(o).Public().(ed25519.PublicKey)), Datacenter: "dc1", Weight: 1})
	}
	st := store.NewMemory()
	a, err := app.New(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.InitChain(testChain, g); err != nil {
		t.Fatal(err)
	}
	// Block times near now: the notifier expires alerts older than MaxAge.
	return &chain{t: t, st: st, app: a, now: time.Now().UnixMilli()}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func id(name string) string { return types.KeyID(testKey(name).Public().(ed25519.PublicKey)) }

func (c *chain) Read() (*app.Query, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.st.Reader(0)
	if err != nil {
		return nil, err
	}
	return app.NewQuery(r)
}

func (c *chain) ChainID() string { return testChain }

// block commits msgs, each signed by its signer, and returns the block's
// alerts and receipts.
func (c *chain) block(signers []string, msgs ...types.Msg) ([]types.Alert, []types.Delivery) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.height++
	c.now += 1000
	c.app.BeginBlock(c.height, c.now)
	for i, m := range msgs {
		c.nonce++
		tx, err := types.SignTx(testChain, testKey(signers[i]), c.nonce, m)
		if err != nil {
			c.t.Fatal(err)
		}
		if _, err := c.app.DeliverTx(tx); err != nil {
			c.t.Fatalf("tx %d by %s: %v", i, signers[i], err)
		}
	}
	alerts, _, err := c.app.EndBlock()
	if err != nil {
		c.t.Fatal(err)
	}
	ds := slices.Clone(c.app.Deliveries())
	if _, _, err := c.st.Commit(); err != nil {
		c.t.Fatal(err)
	}
	return alerts, ds
}

// alert registers a service and has every observer see it pass and then
// fail: one committed state_change alert.
func (c *chain) alert() types.Alert {
	c.t.Helper()
	si := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Checks: []types.Check{{
		Id: "http", Kind: "http", Http: &types.HTTPParams{Url: "http://127.0.0.1:1/"}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
	c.block([]string{"root"}, types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: si}}})
	report := func(st types.Status) []types.Alert {
		var msgs []types.Msg
		for range testObservers {
			msgs = append(msgs, types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: []types.Observation{
				{Service: "web", Instance: "web-1", Check: "http", Status: st, Output: st.Name()}}}}})
		}
		al, _ := c.block(testObservers, msgs...)
		return al
	}
	report(types.STATUS_PASSING)
	al := report(types.STATUS_CRITICAL)
	if len(al) != 1 {
		c.t.Fatalf("alerts %+v, want one", al)
	}
	return al[0]
}

func receiptMsg(alertID, receiver string, ack []byte) types.Msg {
	return types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: alertID, Receiver: receiver, Ack: ack}}}
}

// hooks is a set of receivers behind one test server: /NAME counts the
// deliveries of receiver NAME, answering with an ack by the key "rk-NAME"
// when acks[NAME] says so ("bad": one by another key).
type hooks struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  map[string]int
	acks map[string]string
}

func newHooks(t *testing.T) *hooks {
	h := &hooks{got: map[string]int{}, acks: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path[1:]
		h.mu.Lock()
		defer h.mu.Unlock()
		h.got[name]++
		body, _ := io.ReadAll(r.Body)
		_, digest, err := CheckBody(body)
		if err != nil {
			t.Errorf("delivery to %s: %v", name, err)
		}
		switch h.acks[name] {
		case "good":
			w.Header().Set(HeaderAck, Acknowledge(testKey("rk-"+name), testChain, r.Header.Get(HeaderID), name, digest))
		case "bad":
			w.Header().Set(HeaderAck, Acknowledge(testKey("someone"), testChain, r.Header.Get(HeaderID), name, digest))
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hooks) count(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got[name]
}

// metric is the value of a per-receiver metric in reg (0 if absent).
func metric(t *testing.T, reg *prometheus.Registry, name, receiver string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "receiver" && l.GetValue() == receiver {
					return value(m)
				}
			}
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// sentReceipt is what a notifier's Receipt was called with.
type sentReceipt struct {
	alert, receiver string
	ack             []byte
}

func startNotifier(t *testing.T, c *chain, h *hooks, observer string, handoff time.Duration, receivers ...string) (*Notifier, *prometheus.Registry, func() []sentReceipt) {
	t.Helper()
	cfg := Config{HandoffDelay: handoff, MaxAge: time.Hour, ResendInterval: time.Minute, ResolvedFor: time.Minute,
		RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	for _, r := range receivers {
		cfg.Receivers = append(cfg.Receivers, Receiver{Name: r, URL: h.srv.URL + "/" + r, Format: FormatNative, Mode: ModeOne, Timeout: 5 * time.Second,
			SinceAll: true, Kinds: []string{"state_change"}}) // the test service goes stale too: not these alerts
	}
	var mu sync.Mutex
	var sent []sentReceipt
	reg := prometheus.NewRegistry()
	n, err := New(Options{Config: cfg, Dir: t.TempDir(), Observer: id(observer), Chain: c, Registerer: reg,
		Receipt: func(_ context.Context, alertID, receiver string, ack []byte) error {
			mu.Lock()
			defer mu.Unlock()
			sent = append(sent, sentReceipt{alertID, receiver, ack})
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return n, reg, func() []sentReceipt { mu.Lock(); defer mu.Unlock(); return slices.Clone(sent) }
}

// run runs n until the test ends.
func run(t *testing.T, n *Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestStandDownRule: in mode one a node's entry for (alert, receiver) is
// dropped only when the committed receipts settle it — observers above a
// third of the weight (2 of 4 here), or one acknowledged receipt — when
// they are committed, when its turn comes, and when it catches up at
// start. One other node's receipt cancels nothing.
func TestStandDownRule(t *testing.T) {
	c := newChain(t)
	al := c.alert()
	order := Order(al.Id, []string{id("o1"), id("o2"), id("o3"), id("o4")})
	name := map[string]string{}
	for _, o := range testObservers {
		name[id(o)] = o
	}
	first, me, third, fourth := name[order[0]], name[order[1]], name[order[2]], name[order[3]]
	c.block([]string{"root", "root"},
		types.Msg{Sum: &types.Msg_RegisterReceiver{RegisterReceiver: &types.RegisterReceiver{Name: "acked", PubKey: testKey("rk-acked").Public().(ed25519.PublicKey)}}},
		types.Msg{Sum: &types.Msg_RegisterReceiver{RegisterReceiver: &types.RegisterReceiver{Name: "one", PubKey: testKey("rk-one").Public().(ed25519.PublicKey)}}})
	h := newHooks(t)
	h.acks["one"] = "good"
	h.acks["bad"] = "bad"

	// This node is second in the order: its entries fall due one
	// hand-off after the alert. Receivers:
	//   one     one other node's receipt is committed first → still delivers
	//   two     two other nodes' receipts (2 of 4 > a third) → stands down
	//   acked   one other node's acknowledged receipt → stands down
	//   late    two receipts committed that this node was not told of → stands down at its turn
	//   bad     no receipt; answers with an ack that does not verify → delivered, receipt without ack
	nt, reg, sent := startNotifier(t, c, h, me, 300*time.Millisecond, "one", "two", "acked", "late", "bad")
	nt.Committed([]types.Alert{al}, nil)
	for _, r := range []string{"one", "two", "acked", "late", "bad"} {
		if v := metric(t, reg, "bftmon_notify_pending", r); v != 1 {
			t.Fatalf("%s: %v pending after the alert, want 1", r, v)
		}
	}
	step := func(what string, signers []string, msgs ...types.Msg) {
		t.Helper()
		_, ds := c.block(signers, msgs...)
		if len(ds) != len(msgs) {
			t.Fatalf("%s: %d receipts committed of %d", what, len(ds), len(msgs))
		}
		nt.Committed(nil, ds)
	}
	step("one receipt for one", []string{first}, receiptMsg(al.Id, "one", nil))
	if v := metric(t, reg, "bftmon_notify_pending", "one"); v != 1 {
		t.Fatalf("one receipt of 4 settled this node's entry for one (pending %v)", v)
	}
	step("first receipt for two", []string{first}, receiptMsg(al.Id, "two", nil))
	if v := metric(t, reg, "bftmon_notify_pending", "two"); v != 1 {
		t.Fatalf("one receipt of 4 settled this node's entry for two (pending %v)", v)
	}
	step("second receipt for two", []string{third}, receiptMsg(al.Id, "two", nil))
	digest, err := types.AlertDigest(&al)
	if err != nil {
		t.Fatal(err)
	}
	ack := ed25519.Sign(testKey("rk-acked"), types.AckBytes(testChain, al.Id, "acked", digest))
	step("acked receipt", []string{fourth}, receiptMsg(al.Id, "acked", ack))
	for _, tc := range []struct {
		receiver         string
		pending, settled float64
	}{{"one", 1, 0}, {"two", 0, 1}, {"acked", 0, 1}, {"late", 1, 0}, {"bad", 1, 0}} {
		if p, s := metric(t, reg, "bftmon_notify_pending", tc.receiver), metric(t, reg, "bftmon_notify_settled_by_others_total", tc.receiver); p != tc.pending || s != tc.settled {
			t.Errorf("%s: pending %v, settled by others %v; want %v, %v", tc.receiver, p, s, tc.pending, tc.settled)
		}
	}
	// Receipts this node does not hear of (as if it missed the block): its
	// turn reads the committed state.
	c.block([]string{first, fourth}, receiptMsg(al.Id, "late", nil), receiptMsg(al.Id, "late", nil))

	run(t, nt)
	testutil.WaitFor(t, "every entry delivered or settled", 30*time.Second, func() (bool, error) {
		for _, r := range []string{"one", "late", "bad"} {
			if v := metric(t, reg, "bftmon_notify_pending", r); v != 0 {
				return false, fmt.Errorf("%s: %v pending", r, v)
			}
		}
		return len(sent()) == 2, fmt.Errorf("receipts sent %+v", sent())
	})
	for _, tc := range []struct {
		receiver string
		copies   int
	}{{"one", 1}, {"two", 0}, {"acked", 0}, {"late", 0}, {"bad", 1}} {
		if got := h.count(tc.receiver); got != tc.copies {
			t.Errorf("%s received %d copies from this node, want %d", tc.receiver, got, tc.copies)
		}
	}
	if v := metric(t, reg, "bftmon_notify_settled_by_others_total", "late"); v != 1 {
		t.Errorf("late: settled by others %v, want 1 (at its turn)", v)
	}
	for _, r := range sent() {
		switch r.receiver {
		case "one":
			if !ed25519.Verify(testKey("rk-one").Public().(ed25519.PublicKey), types.AckBytes(testChain, al.Id, "one", digest), r.ack) {
				t.Errorf("receipt for one: ack %x does not verify (the receiver acknowledged)", r.ack)
			}
		case "bad":
			if r.ack != nil {
				t.Errorf("receipt for bad carries an ack that does not verify: %x", r.ack)
			}
		default:
			t.Errorf("unexpected receipt %+v", r)
		}
	}
	if v := metric(t, reg, "bftmon_notify_acknowledged_total", "one"); v != 1 {
		t.Errorf("acknowledged deliveries of one: %v, want 1", v)
	}

	// A node starting later catches up: it queues what the committed
	// receipts do not settle, and nothing else.
	c.block([]string{first}, receiptMsg(al.Id, "fresh", nil))
	nt2, lreg, _ := startNotifier(t, c, h, me, time.Hour, "one", "two", "acked", "fresh", "none")
	run(t, nt2)
	testutil.WaitFor(t, "the catch-up", 30*time.Second, func() (bool, error) {
		return metric(t, lreg, "bftmon_notify_pending", "none") == 1, nil
	})
	for _, tc := range []struct {
		receiver string
		pending  float64
	}{{"one", 1}, {"two", 0}, {"acked", 0}, {"fresh", 1}, {"none", 1}} {
		// one: only first's receipt is committed (this node's Receipt
		// is a stub), so one is owed again.
		if v := metric(t, lreg, "bftmon_notify_pending", tc.receiver); v != tc.pending {
			t.Errorf("after catch-up, %s: %v pending, want %v", tc.receiver, v, tc.pending)
		}
	}
}
