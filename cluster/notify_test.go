package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/notify"
)

const receiverSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// arrival is one request a receiver got.
type arrival struct {
	id, node string
	status   int // what the receiver answered (0: the client went away)
	sigErr   error
	at       time.Time // when it arrived
	acked    bool      // the receiver answered with a Bftmon-Ack
	digest   string    // the body's digest (native deliveries)
	checkErr error     // why a checking receiver refused the body
}

// receiver is a real webhook receiver that records every request, and can
// be down (503) or hold requests until released or the sender goes away.
// With an ack key it acknowledges what it accepts (Bftmon-Ack), as the
// payload's chain_id, id and receiver say.
type receiver struct {
	srv *httptest.Server
	ack ed25519.PrivateKey
	// check, if set, is asked about each body first: a body it refuses is
	// answered 422 and not acknowledged.
	check atomic.Pointer[func(context.Context, []byte) error]

	mu       sync.Mutex
	arrivals []arrival
	down     bool
	hold     chan struct{} // non-nil: requests wait on it
	held     map[string]string
}

func newReceiver(t *testing.T) *receiver { return newAckReceiver(t, nil) }

// newAckReceiver is newReceiver acknowledging with key ack (nil: never).
func newAckReceiver(t *testing.T, ack ed25519.PrivateKey) *receiver {
	r := &receiver{held: map[string]string{}, ack: ack}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		a := arrival{id: req.Header.Get(notify.HeaderID), node: req.Header.Get(notify.HeaderNode), at: time.Now()}
		a.sigErr = notify.Verify(receiverSecret, a.id, req.Header.Get(notify.HeaderTimestamp), req.Header.Get(notify.HeaderSignature), body, time.Now(), time.Minute)
		r.mu.Lock()
		hold, down := r.hold, r.down
		if hold != nil {
			r.held[a.id] = a.node
		}
		r.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
			}
		}
		a.status = http.StatusOK
		switch {
		case req.Context().Err() != nil:
			a.status = 0
		case down:
			a.status = http.StatusServiceUnavailable
		}
		var p notify.Payload
		if json.Unmarshal(body, &p) == nil {
			a.digest = p.Digest
		}
		if check := r.check.Load(); check != nil && a.status == http.StatusOK {
			if a.checkErr = (*check)(req.Context(), body); a.checkErr != nil {
				a.status = http.StatusUnprocessableEntity
			}
		}
		if r.ack != nil && a.status == http.StatusOK && a.sigErr == nil && p.ID == a.id {
			w.Header().Set(notify.HeaderAck, notify.Acknowledge(r.ack, p.ChainID, p.ID, p.Receiver, types.DigestOf(p.Record)))
			a.acked = true
		}
		r.mu.Lock()
		r.arrivals = append(r.arrivals, a)
		r.mu.Unlock()
		if a.status != 0 {
			w.WriteHeader(a.status)
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// delivered lists the successful deliveries of alert id.
func (r *receiver) delivered(id string) []arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []arrival
	for _, a := range r.arrivals {
		if a.id == id && a.status == http.StatusOK {
			out = append(out, a)
		}
	}
	return out
}

// attempts lists every request for alert id.
func (r *receiver) attempts(id string) []arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []arrival
	for _, a := range r.arrivals {
		if a.id == id {
			out = append(out, a)
		}
	}
	return out
}

// TestAlertDelivery runs delivery mode one on a real 4-node network with a
// real receiver: each alert arrives at least once and signed while all is
// well, in at most two copies (the first node's receipt alone is a quarter
// of the weight, so the second node delivers too; their two receipts settle
// the rest); a responsible node killed mid-delivery hands over to the next; a
// receiver down for a while gets the alert when it is back, across a
// restart of the node that owes it; a lying node that stays silent when it
// is responsible delays the page by one hand-off but cannot suppress it.
func TestAlertDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	ctx := context.Background()
	c := New(t, 4, 2)
	recv := newReceiver(t)
	c.SetNotify(notify.Settings{HandoffDelay: "3s", RetryBase: "200ms", RetryMax: "1s", Receivers: []notify.ReceiverSettings{
		{Name: "pager", URL: recv.srv.URL, Secret: receiverSecret, Kinds: []string{"state_change"}},
	}})
	c.StartAll()
	byName := map[string]*Node{}
	for _, n := range c.Nodes {
		byName[n.Name] = n
	}
	tg := newTarget(t)
	web := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Checks: []types.Check{{
		Id: "http", Kind: "http", Http: &types.HTTPParams{Url: tg.srv.URL + "/health"},
		IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000,
	}}}
	if res, err := c.Nodes[0].Client.Register(ctx, c.Operator.Private, web); err != nil || res.Code != 0 {
		t.Fatalf("register: %+v %v", res, err)
	}
	waitCheck(c, c.Nodes[0], "passing", "passing")

	// flip takes the target down or brings it back and returns the
	// state_change alert the network commits for it.
	flip := func(down bool) api.Alert {
		t.Helper()
		from := c.MaxHeight(ctx)
		tg.down.Store(down)
		to := map[bool]string{true: "critical", false: "passing"}[down]
		var al api.Alert
		c.WaitFor("the state_change alert to "+to, Patience, func(ctx context.Context) (bool, error) {
			for _, n := range c.Running() {
				list, err := alertsSince(ctx, n, "state_change", from)
				if err != nil {
					continue
				}
				for _, a := range list {
					if a.To == to {
						al = a
						return true, nil
					}
				}
				return false, fmt.Errorf("alerts since %d: %+v", from, list)
			}
			return false, fmt.Errorf("no node answers")
		})
		return al
	}
	// settled waits until no running node has anything pending for pager.
	settled := func() {
		t.Helper()
		c.WaitFor("every node's outbox settled", Patience, func(ctx context.Context) (bool, error) {
			for _, n := range c.Running() {
				m, err := n.Metrics(ctx)
				if err != nil {
					return false, err
				}
				if v := Metric(m, "bftmon_notify_pending", `receiver="pager"`); v != 0 {
					return false, fmt.Errorf("%s has %v pending", n.Name, v)
				}
			}
			return true, nil
		})
	}
	waitDelivered := func(id string) []arrival {
		t.Helper()
		var got []arrival
		c.WaitFor("alert "+id+" delivered", 2*Patience, func(context.Context) (bool, error) {
			got = recv.delivered(id)
			return len(got) > 0, fmt.Errorf("attempts %+v", recv.attempts(id))
		})
		return got
	}

	t.Run("at least once, signed, at most two copies", func(t *testing.T) {
		c.t = t
		al := flip(true)
		got := waitDelivered(al.ID)
		settled()
		got = recv.delivered(al.ID)
		var by []string
		for _, a := range got {
			by = append(by, a.node)
			if a.sigErr != nil {
				t.Errorf("signature of %s's copy: %v", a.node, a.sigErr)
			}
		}
		t.Logf("alert %s: %d copies, by %v", al.ID, len(got), by)
		if len(got) > 2 || len(got) == 2 && by[0] == by[1] {
			t.Fatalf("alert %s delivered %d times: %+v; want at most once by each of the first two nodes", al.ID, len(got), got)
		}
		c.WaitFor("a receipt committed per copy, by who delivered it", Patience, func(ctx context.Context) (bool, error) {
			list, _, err := c.Nodes[0].Client.Alerts(ctx, &api.QueryOptions{Service: "web"})
			for _, a := range list {
				if a.ID == al.ID {
					var names []string
					for _, d := range a.Deliveries {
						names = append(names, d.Name)
					}
					slices.Sort(names)
					return slices.Equal(names, sortedCopy(by)), fmt.Errorf("deliveries %+v, copies by %v", a.Deliveries, by)
				}
			}
			return false, err
		})
	})

	t.Run("responsible node killed mid-delivery", func(t *testing.T) {
		c.t = t
		recv.mu.Lock()
		release := make(chan struct{})
		recv.hold = release
		recv.mu.Unlock()
		al := flip(false)
		var first string
		c.WaitFor("the responsible node's delivery to arrive", Patience, func(context.Context) (bool, error) {
			recv.mu.Lock()
			defer recv.mu.Unlock()
			first = recv.held[al.ID]
			return first != "", nil
		})
		byName[first].Kill()
		recv.mu.Lock()
		recv.hold = nil
		recv.mu.Unlock()
		// The held request is never released: it ends when the receiver's
		// server sees the killed node's connection close (status 0), which
		// it may do only after other requests were answered. Releasing it
		// could answer 200 to a dead connection and count a delivery the
		// killed node never completed.
		t.Cleanup(func() { close(release) })
		got := waitDelivered(al.ID)
		for _, a := range got {
			if a.node == first {
				t.Errorf("the killed %s completed a delivery: %+v", first, got)
			}
		}
		t.Logf("%s killed while delivering %s; delivered by %s", first, al.ID, got[0].node)
		byName[first].Start()
		byName[first].WaitUp()
		settled()
		// The restarted node waits a hand-off for the receipts it missed,
		// so normally the page arrived once; at least once is the promise.
		var by []string
		for _, a := range recv.delivered(al.ID) {
			by = append(by, a.node)
		}
		t.Logf("delivered %d time(s) in all, by %v", len(by), by)
	})

	t.Run("receiver down, owing node restarted", func(t *testing.T) {
		c.t = t
		recv.mu.Lock()
		recv.down = true
		recv.mu.Unlock()
		al := flip(true)
		var owing string
		c.WaitFor("a failed attempt", Patience, func(context.Context) (bool, error) {
			for _, a := range recv.attempts(al.ID) {
				owing = a.node
				return a.status == http.StatusServiceUnavailable, nil
			}
			return false, nil
		})
		byName[owing].Kill()
		byName[owing].Start()
		byName[owing].WaitUp()
		c.WaitFor(owing+" to retry after its restart", Patience, func(ctx context.Context) (bool, error) {
			m, err := byName[owing].Metrics(ctx)
			return err == nil && Metric(m, "bftmon_notify_retried_total", `receiver="pager"`) > 0, err
		})
		recv.mu.Lock()
		recv.down = false
		recv.mu.Unlock()
		got := waitDelivered(al.ID)
		t.Logf("%d attempts while down; delivered by %s", len(recv.attempts(al.ID))-len(got), got[0].node)
		settled()
	})

	t.Run("a silent lying node cannot suppress a page", func(t *testing.T) {
		c.t = t
		liar := c.Nodes[3]
		liar.Restart("--byzantine=always-passing")
		liarID := liar.ObserverID()
		for i := 0; ; i++ {
			if i == 16 {
				t.Fatalf("in 16 alerts %s was never first in the delivery order", liar.Name)
			}
			al := flip(!tg.down.Load())
			obs, _, err := c.Nodes[0].Client.Observers(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var live []string
			for _, o := range obs {
				if !o.Suspect {
					live = append(live, o.ID)
				}
			}
			got := waitDelivered(al.ID)
			for _, a := range got {
				if a.node == liar.Name {
					t.Fatalf("the silent liar delivered: %+v", got)
				}
			}
			if order := notify.Order(al.ID, live); len(order) > 0 && order[0] == liarID {
				t.Logf("alert %d: %s was responsible for %s and stayed silent; %s delivered", i+1, liar.Name, al.ID, got[0].node)
				break
			}
		}
		settled()
		c.CheckInvariants(ctx)
	})
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// copyStats summarises the copies per alert a receiver got.
func copyStats(copies []int) string {
	if len(copies) == 0 {
		return "no alerts"
	}
	hist := map[int]int{}
	sum := 0
	for _, n := range copies {
		hist[n]++
		sum += n
	}
	var keys []int
	for k := range hist {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d copies ×%d", k, hist[k]))
	}
	return fmt.Sprintf("%d alerts, %.2f copies per alert (%s)", len(copies), float64(sum)/float64(len(copies)), strings.Join(parts, ", "))
}

// median of durations (0 for none).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestDeliverySettleRule runs the settle rule of mode one on a real 4-node
// network (docs/alerts.md): a node stands down only once receipts from
// more than a third of the observer weight are committed, or one carries
// the receiver's acknowledgement. Two receivers are configured on every
// node: pager (plain) and acker (its ed25519 key registered by the
// operator; it answers every delivery with Bftmon-Ack).
//
//  1. All honest: every alert reaches pager in one or two copies (normally
//     two: the first node's receipt is a quarter of the weight, so the
//     second node delivers a hand-off later) and acker in exactly one,
//     whose committed receipt is acknowledged.
//  2. node3 restarted with --byzantine=forge-receipts: it observes
//     honestly, delivers nothing and commits a receipt for every alert and
//     receiver at once. The target is flipped until at least 12 alerts
//     were committed and node3 was first in the delivery order of at least
//     two (before this rule, its receipt made everyone stand down: the page
//     was lost). Every alert still reaches both receivers; copies are
//     counted per alert and logged.
func TestDeliverySettleRule(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	ctx := context.Background()
	c := New(t, 4, 2)
	_, ackKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pager, acker := newReceiver(t), newAckReceiver(t, ackKey)
	c.SetNotify(notify.Settings{HandoffDelay: "3s", RetryBase: "200ms", RetryMax: "1s", Receivers: []notify.ReceiverSettings{
		{Name: "pager", URL: pager.srv.URL, Secret: receiverSecret, Kinds: []string{"state_change"}},
		{Name: "acker", URL: acker.srv.URL, Secret: receiverSecret, Kinds: []string{"state_change"}},
	}})
	c.StartAll()
	n0 := c.Nodes[0]
	pub := ackKey.Public().(ed25519.PublicKey)
	if _, err := n0.Client.RegisterReceiver(ctx, c.Operator.Private, "acker", pub); err != nil {
		t.Fatal(err)
	}
	if list, _, err := n0.Client.Receivers(ctx, nil); err != nil || len(list) != 1 || list[0].PubKey != base64.StdEncoding.EncodeToString(pub) {
		t.Fatalf("receivers %+v, %v", list, err)
	}
	tg := newTarget(t)
	web := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Checks: []types.Check{{
		Id: "http", Kind: "http", Http: &types.HTTPParams{Url: tg.srv.URL + "/health"},
		IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000,
	}}}
	if res, err := n0.Client.Register(ctx, c.Operator.Private, web); err != nil || res.Code != 0 {
		t.Fatalf("register: %+v %v", res, err)
	}
	waitCheck(c, n0, "passing", "passing")

	round := func() api.Alert {
		return flipRound(c, n0, tg, map[string]*receiver{"pager": pager, "acker": acker}, "")
	}
	byName := func(ds []api.Delivery, receiver string) (names []string, acked int) {
		for _, d := range ds {
			if d.Receiver == receiver {
				names = append(names, d.Name)
				if d.Acknowledged {
					acked++
				}
			}
		}
		return names, acked
	}
	check := func(t *testing.T, al api.Alert, maxPager int, forger string) (pagerCopies int, latency time.Duration) {
		t.Helper()
		pg, ak := pager.delivered(al.ID), acker.delivered(al.ID)
		var from []string
		seen := map[string]bool{}
		for _, a := range pg {
			from = append(from, a.node)
			if a.sigErr != nil {
				t.Errorf("%s: signature of %s's copy: %v", al.ID, a.node, a.sigErr)
			}
			if seen[a.node] {
				t.Errorf("%s: %s delivered to pager twice", al.ID, a.node)
			}
			seen[a.node] = true
		}
		for _, a := range append(slices.Clone(pg), ak...) {
			if a.node == forger {
				t.Errorf("%s: the forger %s delivered: %+v", al.ID, forger, a)
			}
		}
		if len(pg) < 1 || len(pg) > maxPager {
			t.Errorf("%s: pager got %d copies (from %v), want 1..%d", al.ID, len(pg), from, maxPager)
		}
		// acker: one copy; its receipt, acknowledged, settles it for all.
		if len(ak) != 1 || !ak[0].acked {
			t.Errorf("%s: acker got %d copies %+v, want one, acknowledged", al.ID, len(ak), ak)
		}
		names, acked := byName(al.Deliveries, "acker")
		if acked != 1 {
			t.Errorf("%s: acker's receipts %v with %d acknowledged, want one acknowledged", al.ID, names, acked)
		}
		first := pg[0].at
		for _, a := range pg {
			if a.at.Before(first) {
				first = a.at
			}
		}
		return len(pg), first.Sub(al.Time)
	}

	t.Run("all honest", func(t *testing.T) {
		c.t = t
		var copies []int
		var lat []time.Duration
		for i := range 4 {
			al := round()
			n, l := check(t, al, 2, "")
			copies, lat = append(copies, n), append(lat, l)
			pg, _ := byName(al.Deliveries, "pager")
			t.Logf("alert %d %s: pager %d copies (receipts by %v), acker %d, first copy %v after the block",
				i+1, al.ID, n, pg, len(acker.delivered(al.ID)), l.Round(time.Millisecond))
		}
		t.Logf("all honest: pager %s; acker 1 copy per alert; first copy p50 %v after the block", copyStats(copies), median(lat).Round(time.Millisecond))
	})

	t.Run("a receipt forger cannot suppress a page", func(t *testing.T) {
		c.t = t
		forger := c.Nodes[3]
		forger.Restart("--byzantine=forge-receipts")
		forgerID := forger.ObserverID()
		var copies, firstCopies []int
		var lat, firstLat []time.Duration
		forgedFirst, forged := 0, 0
		for i := 0; i < 12 || forgedFirst < 2; i++ {
			if i == 32 {
				t.Fatalf("in 32 alerts %s was first in the delivery order %d times, want 2", forger.Name, forgedFirst)
			}
			al := round()
			obs, _, err := n0.Client.Observers(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var live []string
			for _, o := range obs {
				if !o.Suspect {
					live = append(live, o.ID)
				}
			}
			order := notify.Order(al.ID, live)
			isFirst := len(order) > 0 && order[0] == forgerID
			n, l := check(t, al, 3, forger.Name)
			pg, _ := byName(al.Deliveries, "pager")
			if slices.Contains(pg, forger.Name) {
				forged++
			}
			copies, lat = append(copies, n), append(lat, l)
			if isFirst {
				forgedFirst++
				firstCopies, firstLat = append(firstCopies, n), append(firstLat, l)
			}
			var by []string
			for _, a := range pager.delivered(al.ID) {
				by = append(by, a.node)
			}
			t.Logf("alert %d %s: forger first %v; pager %d copies by %v, receipts by %v; acker %d; first copy %v after the block",
				i+1, al.ID, isFirst, n, by, pg, len(acker.delivered(al.ID)), l.Round(time.Millisecond))
		}
		if forged < len(copies)/2 {
			t.Errorf("the forger's receipt was committed for %d of %d alerts: it did not do its part", forged, len(copies))
		}
		t.Logf("with a forger: pager %s; forger first in %d: %s, first copy p50 %v (all: p50 %v); forged receipts committed for %d",
			copyStats(copies), forgedFirst, copyStats(firstCopies), median(firstLat).Round(time.Millisecond), median(lat).Round(time.Millisecond), forged)
		c.CheckInvariants(ctx)
	})
}

// flipRound flips tg, waits until the state_change alert it causes reached
// every receiver of rcvs (by name) and every node's outbox is settled, and
// returns the alert with its committed receipts, which by then include one
// by each node that delivered a copy (but liar, whose receipts the app may
// refuse).
func flipRound(c *Cluster, n0 *Node, tg *target, rcvs map[string]*receiver, liar string) api.Alert {
	c.t.Helper()
	from := c.MaxHeight(context.Background())
	down := !tg.down.Load()
	tg.down.Store(down)
	to := map[bool]string{true: "critical", false: "passing"}[down]
	var al api.Alert
	c.WaitFor("the state_change alert to "+to, Patience, func(ctx context.Context) (bool, error) {
		list, err := alertsSince(ctx, n0, "state_change", from)
		for _, a := range list {
			if a.To == to {
				al = a
				return true, nil
			}
		}
		return false, err
	})
	c.WaitFor("alert "+al.ID+" at every receiver", 2*Patience, func(context.Context) (bool, error) {
		for name, rc := range rcvs {
			if len(rc.delivered(al.ID)) == 0 {
				return false, fmt.Errorf("%s has no copy: attempts %+v", name, rc.attempts(al.ID))
			}
		}
		return true, nil
	})
	c.WaitFor("every outbox settled", Patience, func(ctx context.Context) (bool, error) {
		for _, n := range c.Running() {
			m, err := n.Metrics(ctx)
			if err != nil {
				return false, err
			}
			if v := Metric(m, "bftmon_notify_pending"); v != 0 {
				return false, fmt.Errorf("%s has %v pending", n.Name, v)
			}
		}
		return true, nil
	})
	c.WaitFor("the receipts of "+al.ID, Patience, func(ctx context.Context) (bool, error) {
		list, err := alertsSince(ctx, n0, "state_change", from)
		for _, a := range list {
			if a.ID == al.ID {
				al = a
			}
		}
		for name, rc := range rcvs {
			for _, a := range rc.delivered(al.ID) {
				if a.node != liar && !slices.ContainsFunc(al.Deliveries, func(d api.Delivery) bool { return d.Receiver == name && d.Name == a.node }) {
					return false, fmt.Errorf("no receipt by %s for %s in %+v (%v)", a.node, name, al.Deliveries, err)
				}
			}
		}
		return true, nil
	})
	return al
}
