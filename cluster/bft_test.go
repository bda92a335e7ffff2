package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
)

// target is a real HTTP service that can be taken down and brought back.
type target struct {
	srv  *httptest.Server
	down atomic.Bool
}

func newTarget(t *testing.T) *target {
	tg := &target{}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if tg.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *target) addr() string { return tg.srv.Listener.Addr().String() }

// webCheck returns the agreed state of web/web-1/http as node n sees it.
func webCheck(ctx context.Context, n *Node) (api.Check, error) {
	insts, _, err := n.Client.Service(ctx, "web", nil)
	if err != nil {
		return api.Check{}, err
	}
	if len(insts) != 1 || len(insts[0].Checks) != 1 {
		return api.Check{}, fmt.Errorf("unexpected instances %+v", insts)
	}
	return insts[0].Checks[0], nil
}

// waitCheck waits until node n sees web's check with the given verdict and
// hard status.
func waitCheck(c *Cluster, n *Node, verdict, hard string) api.Check {
	c.t.Helper()
	var got api.Check
	c.WaitFor(fmt.Sprintf("%s to see web %s (hard %s)", n.Name, verdict, hard), Patience, func(ctx context.Context) (bool, error) {
		ch, err := webCheck(ctx, n)
		got = ch
		if err != nil {
			return false, err
		}
		return ch.Status == verdict && ch.HardStatus == hard, fmt.Errorf("verdict %s hard %s", ch.Status, ch.HardStatus)
	})
	return got
}

// alertsSince lists web's alerts of a kind committed above height.
func alertsSince(ctx context.Context, n *Node, kind string, height int64) ([]api.Alert, error) {
	all, _, err := n.Client.Alerts(ctx, &api.QueryOptions{Limit: 1000})
	if err != nil {
		return nil, err
	}
	var out []api.Alert
	for _, a := range all {
		if a.Kind == kind && a.Height > height {
			out = append(out, a)
		}
	}
	return out, nil
}

// TestByzantineScenarios runs SPEC §4's claims on a real 4-node network
// over 2 datacenters (node0, node1 in dc1; node2, node3 in dc2) watching a
// real HTTP target, one scenario after the other on the same chain, and
// checks the invariants after each.
func TestByzantineScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	ctx := context.Background()
	c := New(t, 4, 2)
	c.StartAll()
	n0, n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3]
	tg := newTarget(t)
	web := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Checks: []types.Check{{
		Id: "http", Kind: "http", Http: &types.HTTPParams{Url: tg.srv.URL + "/health"},
		IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000, ConfirmMs: 2000,
	}}}
	if res, err := n0.Client.Register(ctx, c.Operator.Private, web); err != nil || res.Code != 0 {
		t.Fatalf("register: %+v %v", res, err)
	}
	waitCheck(c, n0, "passing", "passing")
	c.CheckInvariants(ctx)

	timed := func(name string, f func()) {
		t.Helper()
		start := time.Now()
		f()
		t.Logf("scenario %s: verdict reached in %s", name, time.Since(start).Round(10*time.Millisecond))
		c.CheckInvariants(ctx)
	}

	t.Run("1 always-critical liar cannot raise an alert and becomes suspect", func(t *testing.T) {
		c.t = t
		from := n0.Height(ctx)
		timed("1", func() {
			n3.Restart("--byzantine=always-critical")
			c.WaitFor("node3 suspect", Patience, func(ctx context.Context) (bool, error) {
				ch, err := webCheck(ctx, n0)
				if err == nil && (ch.Status == "critical" || ch.HardStatus != "passing") {
					t.Fatalf("the liar moved the verdict: %s (hard %s)", ch.Status, ch.HardStatus)
				}
				obs, _, err := n0.Client.Observers(ctx, nil)
				for _, o := range obs {
					if o.Name == "node3" {
						return o.Suspect, fmt.Errorf("node3 standing %+v", o)
					}
				}
				return false, err
			})
		})
		if al, err := alertsSince(ctx, n0, "state_change", from); err != nil || len(al) != 0 {
			t.Fatalf("state_change alerts while a liar cried wolf: %+v %v", al, err)
		}
		sus, err := alertsSince(ctx, n0, "observer_suspect", from)
		if err != nil || len(sus) != 1 {
			t.Fatalf("observer_suspect alerts: %+v %v", sus, err)
		}
		ch, _ := webCheck(ctx, n0)
		for _, o := range ch.Observers {
			if want := map[bool]string{true: "critical", false: "passing"}[o.Name == "node3"]; o.Status != want {
				t.Fatalf("%s reports %s, want %s", o.Name, o.Status, want)
			}
		}
	})

	t.Run("2 always-passing liar cannot hide an outage", func(t *testing.T) {
		c.t = t
		n3.Restart("--byzantine=always-passing")
		from := n0.Height(ctx)
		timed("2", func() {
			tg.down.Store(true)
			waitCheck(c, n0, "critical", "critical")
		})
		al, err := alertsSince(ctx, n0, "state_change", from)
		if err != nil || len(al) != 1 || al[0].From != "passing" || al[0].To != "critical" {
			t.Fatalf("want one passing→critical alert, got %+v %v", al, err)
		}
		tg.down.Store(false)
		waitCheck(c, n0, "passing", "passing")
	})

	t.Run("3 a node killed with SIGKILL: verdicts go on, it catches up", func(t *testing.T) {
		c.t = t
		n3.Restart()
		n1.Kill()
		timed("3", func() {
			tg.down.Store(true)
			waitCheck(c, n0, "critical", "critical")
		})
		tg.down.Store(false)
		waitCheck(c, n2, "passing", "passing")
		n1.Start()
		n1.WaitUp()
		h := c.MaxHeight(ctx)
		c.WaitHeight(h + 2)
		waitCheck(c, n1, "passing", "passing")
		c.CheckInvariants(ctx) // the restarted node included, at every height
	})

	t.Run("3b a node paused with SIGSTOP: the others go on, it catches up on SIGCONT", func(t *testing.T) {
		c.t = t
		n2.Pause()
		h := n0.Height(ctx)
		c.WaitFor("three nodes committing without node2", Patience, func(ctx context.Context) (bool, error) {
			return n0.Height(ctx) >= h+5 && n1.Height(ctx) >= h+5, nil
		})
		n2.Resume()
		c.WaitHeight(c.MaxHeight(ctx) + 1)
		waitCheck(c, n2, "passing", "passing")
		c.CheckInvariants(ctx)
	})

	t.Run("4 a datacenter cut off from the target: disputed, no state change, healed", func(t *testing.T) {
		c.t = t
		from := n0.Height(ctx)
		timed("4", func() {
			n2.SetUnreachable(tg.addr())
			n3.SetUnreachable(tg.addr())
			ch := waitCheck(c, n0, "disputed", "passing")
			for _, o := range ch.Observers {
				if want := map[bool]string{true: "critical", false: "passing"}[o.Datacenter == "dc2"]; o.Status != want {
					t.Fatalf("%s in %s sees %s, want %s", o.Name, o.Datacenter, o.Status, want)
				}
			}
			c.WaitFor("a disputed alert after confirm", Patience, func(ctx context.Context) (bool, error) {
				al, err := alertsSince(ctx, n0, "disputed", from)
				return len(al) == 1, err
			})
		})
		n2.SetUnreachable()
		n3.SetUnreachable()
		waitCheck(c, n0, "passing", "passing")
		if al, err := alertsSince(ctx, n0, "state_change", from); err != nil || len(al) != 0 {
			t.Fatalf("state_change alerts during a partition: %+v %v", al, err)
		}
	})

	t.Run("5 replay, equivocate, garbage and flood are refused; the network goes on", func(t *testing.T) {
		c.t = t
		n3.Restart("--byzantine=replay,equivocate,garbage,flood")
		from := n0.Height(ctx)
		timed("5", func() {
			c.WaitFor("each attack refused with its code", Patience, func(ctx context.Context) (bool, error) {
				m, err := n3.Metrics(ctx)
				if err != nil {
					return false, err
				}
				// Of an equivocation's two halves only one ever commits: a
				// proposal carries one signer's nonce once, and the other
				// half is then a replay (the app hashes below stay equal).
				want := map[string]float64{
					"replay refused as a replay (3)":        Metric(m, "bftmon_byzantine_txs_total", `mode="replay"`, `code="3"`),
					"garbage refused as malformed (1)":      Metric(m, "bftmon_byzantine_txs_total", `mode="garbage"`, `code="1"`),
					"forgeries refused as badly signed (2)": Metric(m, "bftmon_byzantine_txs_total", `mode="garbage"`, `code="2"`),
					"equivocations sent":                    Metric(m, "bftmon_byzantine_txs_total", `mode="equivocate"`),
					"flood sent":                            Metric(m, "bftmon_byzantine_txs_total", `mode="flood"`),
				}
				for what, v := range want {
					if v == 0 {
						return false, fmt.Errorf("no %s yet", what)
					}
				}
				return true, nil
			})
			c.WaitHeight(from + 10)
		})
		ch, err := webCheck(ctx, n0)
		if err != nil || ch.Status != "passing" || ch.HardStatus != "passing" {
			t.Fatalf("under attack web is %+v (%v), want passing", ch, err)
		}
		if al, err := alertsSince(ctx, n0, "state_change", from); err != nil || len(al) != 0 {
			t.Fatalf("state_change alerts under attack: %+v %v", al, err)
		}
		if al, err := alertsSince(ctx, n0, "disputed", from); err != nil || len(al) != 0 {
			t.Fatalf("disputed alerts under attack: %+v %v", al, err)
		}
		for _, n := range c.Running() {
			if m, _ := n.Metrics(ctx); strings.Contains(m, `bftmon_txs_total{code="99"}`) {
				t.Fatalf("%s committed a tx with an internal error", n.Name)
			}
		}
		n3.Restart()
	})
	t.Run("6 a proposer stuffing blocks with junk: its proposals are rejected, the network goes on", func(t *testing.T) {
		c.t = t
		junk := func() (sum float64) { // committed malformed txs, summed over the honest nodes
			for _, n := range []*Node{n0, n1, n2} {
				m, _ := n.Metrics(ctx)
				sum += Metric(m, "bftmon_txs_total", `code="1"`)
			}
			return sum
		}
		rounds := func() (sum float64) {
			for _, n := range []*Node{n0, n1, n2} {
				m, _ := n.Metrics(ctx)
				sum += Metric(m, "cometbft_consensus_round_increment_total")
			}
			return sum
		}
		// The rounds an honest network loses anyway, for comparison.
		h0, r0 := n0.Height(ctx), rounds()
		c.WaitHeight(h0 + 12)
		baseline := rounds() - r0
		n3.Restart("--byzantine=stuff-blocks")
		junk0, r1 := junk(), rounds()
		from := n0.Height(ctx)
		timed("6", func() {
			c.WaitFor("node3 to propose stuffed blocks and the others to reject them", Patience, func(ctx context.Context) (bool, error) {
				m3, err := n3.Metrics(ctx)
				if err != nil {
					return false, err
				}
				var rejected float64
				for _, n := range []*Node{n0, n1, n2} {
					m, _ := n.Metrics(ctx)
					rejected += Metric(m, "cometbft_consensus_proposal_receive_count", `status="rejected"`)
				}
				stuffed := Metric(m3, "bftmon_byzantine_stuffed_proposals_total")
				return stuffed >= 2 && rejected >= 4 && n0.Height(ctx) >= from+12,
					fmt.Errorf("%v stuffed proposals, %v rejections, height %d", stuffed, rejected, n0.Height(ctx))
			})
		})
		lost := rounds() - r1
		t.Logf("stuff-blocks: %d heights committed; rounds lost (summed over 3 honest nodes): %v with the stuffer, %v in as many heights before", n0.Height(ctx)-from, lost, baseline)
		if j := junk() - junk0; j != 0 {
			t.Fatalf("%v junk transactions were committed", j)
		}
		if ch, err := webCheck(ctx, n0); err != nil || ch.Status != "passing" {
			t.Fatalf("web %+v (%v), want passing", ch, err)
		}
		n3.Restart()
	})
}
