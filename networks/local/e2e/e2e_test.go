package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/cluster"
)

// TestE2E runs the local Docker cluster (docker-compose.yml: node0, node1
// in dc1, node2, node3 in dc2, two demo targets, a webhook receiver) and,
// one scenario after the other on the same chain, the BFT network's
// scenarios over real container networks, dc2 cut off from dc1, and a
// rolling restart (docs/TESTING.md). Every fault is one of the scripts of
// networks/local/scripts. It skips, with one line, only when no Docker
// daemon answers or no compose is installed.
func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("the Docker cluster: skipped with -short (make test-all runs it)")
	}
	n := Start(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *Net)
	}{
		{"1 always-critical liar cannot raise an alert and becomes suspect", alwaysCritical},
		{"2 always-passing liar cannot hide an outage", alwaysPassing},
		{"3 a node killed: verdicts go on, it catches up", killed},
		{"4 dc2 cut off from the targets: disputed, no state change, healed", targetsCut},
		{"5 a proposer stuffing blocks: rejected, the network goes on", stuffBlocks},
		{"6 dc2 cut off from dc1: consensus stops, no alert, verdicts catch up after heal", peersCut},
		{"7 rolling restart: blocks keep coming, nothing committed is lost", rollingRestart},
	} {
		if !t.Run(sc.name, func(t *testing.T) { sc.run(t, n) }) {
			t.Fatalf("scenario %q failed: the later ones need its end state, so they do not run", sc.name)
		}
	}
}

// ctxOf is a context for a scenario's own reads, ended at the run's
// deadline or when the scenario ends.
func ctxOf(t *testing.T, n *Net) context.Context {
	ctx, cancel := context.WithCancel(n.ctx)
	t.Cleanup(cancel)
	return ctx
}

// round is a duration for the log.
func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

// noStateChange fails the test if the node committed a state_change alert
// above height.
func noStateChange(t *testing.T, ctx context.Context, nd *Node, height int64, while string) {
	t.Helper()
	al, err := alertsSince(ctx, nd, "state_change", "", height)
	if err != nil {
		t.Fatal(err)
	}
	if len(al) != 0 {
		t.Fatalf("%s committed state_change alerts %s: %s", nd.Name, while, describe(al))
	}
}

// noStateChangeReceived fails the test if the webhook receiver got a
// state_change alert committed above height.
func noStateChangeReceived(t *testing.T, n *Net, height int64, while string) {
	t.Helper()
	for _, r := range n.receivedAbove(t, height) {
		if r.Kind == "state_change" {
			t.Fatalf("the webhook receiver got a state_change alert %s: %+v", while, r)
		}
	}
}

// oneStateChange is the one state_change alert from → to about instance
// the node committed above height; it fails the test unless there is
// exactly one.
func oneStateChange(t *testing.T, ctx context.Context, nd *Node, instance string, height int64, from, to string) api.Alert {
	t.Helper()
	all, err := alertsSince(ctx, nd, "state_change", instance, height)
	if err != nil {
		t.Fatal(err)
	}
	var al []api.Alert
	for _, a := range all {
		if a.From == from && a.To == to {
			al = append(al, a)
		}
	}
	if len(al) != 1 {
		t.Fatalf("%s: want one state_change alert %s %s→%s above height %d, got %s", nd.Name, instance, from, to, height, describe(all))
	}
	return al[0]
}

// alwaysCritical: node3 reports every check critical while the targets are
// healthy. Three honest observers outweigh it: the verdicts stay passing,
// no state_change is committed, and node3 becomes suspect (one
// observer_suspect alert, delivered).
func alwaysCritical(t *testing.T, n *Net) {
	ctx := ctxOf(t, n)
	n0, n3 := n.Nodes[0], n.Nodes[3]
	from := n.MaxHeight(ctx)
	start := time.Now()
	n.Script(t, "node.sh", "node3", "byzantine", "always-critical")
	n.WaitUp(t, n3, from)
	d := n.WaitFor(t, "node3 suspect while every verdict stays passing", func(ctx context.Context) (bool, error) {
		for _, inst := range instances {
			ch, err := demoCheck(ctx, n0, inst)
			if err != nil {
				return false, err
			}
			if ch.Status == "critical" || ch.HardStatus != "passing" {
				t.Fatalf("the liar moved demo/%s: verdict %s, hard %s", inst, ch.Status, ch.HardStatus)
			}
		}
		obs, _, err := n0.Client.Observers(ctx, nil)
		for _, o := range obs {
			if o.Name == "node3" {
				return o.Suspect, fmt.Errorf("node3: %d agreed, %d disagreed, not suspect", o.Agreed, o.Disagreed)
			}
		}
		return false, err
	})
	for _, inst := range instances {
		ch, err := demoCheck(ctx, n0, inst)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range ch.Observers {
			want := "passing"
			if o.Name == "node3" {
				want = "critical"
			}
			if o.Status != want {
				t.Fatalf("demo/%s: %s reports %s, want %s", inst, o.Name, o.Status, want)
			}
		}
	}
	noStateChange(t, ctx, n0, from, "while a liar cried wolf")
	sus, err := alertsSince(ctx, n0, "observer_suspect", "", from)
	if err != nil {
		t.Fatal(err)
	}
	obs, _, err := n0.Client.Observers(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(obs, func(o api.Observer) bool { return o.Name == "node3" })
	if len(sus) != 1 || i < 0 || sus[0].Observer != obs[i].ID {
		t.Fatalf("want one observer_suspect alert about node3, got %s", describe(sus))
	}
	got := n.WaitDelivered(t, sus[0])
	noStateChangeReceived(t, n, from, "while a liar cried wolf")
	n.sum.add(t, "1 always-critical liar (node3): suspect %s after node.sh byzantine began (%s after node3 was up again), verdicts stayed passing, 0 state_change, the observer_suspect alert delivered (copies: %d)",
		round(time.Since(start)), round(d), got.Copies)
	n.CheckInvariants(t)
}

// alwaysPassing: node3 reports every check passing; target-dc1 fails. The
// three honest observers decide critical all the same, the alert is
// committed with node3's lie among its views, and delivered.
func alwaysPassing(t *testing.T, n *Net) {
	ctx := ctxOf(t, n)
	n0, n3 := n.Nodes[0], n.Nodes[3]
	n.Script(t, "node.sh", "node3", "byzantine", "always-passing")
	n.WaitUp(t, n3, n.MaxHeight(ctx))
	from := n.MaxHeight(ctx)
	start := time.Now()
	n.Script(t, "target.sh", "target-dc1", "fail")
	n.waitCheck(t, n0, "target-dc1", "critical", "critical")
	d := time.Since(start)
	al := oneStateChange(t, ctx, n0, "target-dc1", from, "passing", "critical")
	critical := 0
	for _, v := range al.Views {
		switch {
		case v.Name == "node3" && v.Status != "passing":
			t.Fatalf("node3, lying, reported %s in the alert's views", v.Status)
		case v.Status == "critical" && v.Fresh:
			critical++
		}
	}
	if critical < 3 {
		t.Fatalf("the alert's views hold %d fresh critical reports, want the three honest ones: %+v", critical, al.Views)
	}
	n.WaitDelivered(t, al)
	delivered := time.Since(start)
	n.Script(t, "target.sh", "target-dc1", "heal")
	n.waitCheck(t, n0, "target-dc1", "passing", "passing")
	n.WaitDelivered(t, oneStateChange(t, ctx, n0, "target-dc1", from, "critical", "passing"))
	n.Script(t, "node.sh", "node3", "honest")
	n.WaitUp(t, n3, n.MaxHeight(ctx))
	n.sum.add(t, "2 always-passing liar (node3): target-dc1 agreed critical %s after target.sh fail, alert delivered after %s", round(d), round(delivered))
	n.CheckInvariants(t)
}

// killed: node1 is SIGKILLed; the other three decide target-dc2's outage
// and deliver its alert; node1 starts again, catches up and agrees.
func killed(t *testing.T, n *Net) {
	ctx := ctxOf(t, n)
	n0, n1, n2 := n.Nodes[0], n.Nodes[1], n.Nodes[2]
	n.Script(t, "node.sh", "node1", "kill")
	if s, err := n1.Status(ctx); err == nil {
		t.Fatalf("node1 answers after node.sh kill: %+v", s)
	}
	from := n.MaxHeight(ctx)
	start := time.Now()
	n.Script(t, "target.sh", "target-dc2", "fail")
	n.waitCheck(t, n0, "target-dc2", "critical", "critical")
	d := time.Since(start)
	n.waitCheck(t, n2, "target-dc2", "critical", "critical")
	al := oneStateChange(t, ctx, n0, "target-dc2", from, "passing", "critical")
	n.WaitDelivered(t, al)
	delivered := time.Since(start)
	n.Script(t, "target.sh", "target-dc2", "heal")
	n.waitCheck(t, n0, "target-dc2", "passing", "passing")
	n.WaitDelivered(t, oneStateChange(t, ctx, n0, "target-dc2", from, "critical", "passing"))
	top := n.MaxHeight(ctx)
	start = time.Now()
	n.Script(t, "node.sh", "node1", "start")
	catchUp := n.WaitUp(t, n1, top)
	n.waitCheck(t, n1, "target-dc2", "passing", "passing")
	if got := oneStateChange(t, ctx, n1, "target-dc2", from, "passing", "critical"); got.ID != al.ID {
		t.Fatalf("node1 has alert %s, the others %s", got.ID, al.ID)
	}
	n.sum.add(t, "3 node1 killed: target-dc2 agreed critical %s after target.sh fail by the other three, alert delivered after %s; node1 caught up %s after node.sh start (%d blocks behind)",
		round(d), round(delivered), round(catchUp), top-from)
	n.CheckInvariants(t)
}

// targetsCut: dc2's observers lose both targets (cut.sh dc2 targets): two
// observers see critical, two passing, so both checks go disputed with
// their hard status passing; one disputed alert each, no state_change;
// heal.sh returns them to passing.
func targetsCut(t *testing.T, n *Net) {
	ctx := ctxOf(t, n)
	n0 := n.Nodes[0]
	from := n.MaxHeight(ctx)
	start := time.Now()
	cutTook := n.Script(t, "cut.sh", "dc2", "targets")
	for _, inst := range instances {
		ch := n.waitCheck(t, n0, inst, "disputed", "passing")
		for _, o := range ch.Observers {
			want := "passing"
			if o.Datacenter == "dc2" {
				want = "critical"
			}
			if o.Status != want {
				t.Fatalf("demo/%s: %s in %s sees %s, want %s", inst, o.Name, o.Datacenter, o.Status, want)
			}
		}
	}
	d := time.Since(start)
	var disputed []api.Alert
	n.WaitFor(t, "a disputed alert about each instance", func(ctx context.Context) (bool, error) {
		al, err := alertsSince(ctx, n0, "disputed", "", from)
		disputed = al
		return len(al) == len(instances), err
	})
	for _, al := range disputed {
		n.WaitDelivered(t, al)
	}
	noStateChange(t, ctx, n0, from, "while dc2 was cut off from the targets")
	heal := time.Now()
	healTook := n.Script(t, "heal.sh", "dc2", "targets")
	for _, inst := range instances {
		n.waitCheck(t, n0, inst, "passing", "passing")
	}
	recovered := time.Since(heal)
	noStateChange(t, ctx, n0, from, "while dc2 was cut off from the targets or healing")
	noStateChangeReceived(t, n, from, "while dc2 was cut off from the targets")
	if al, err := alertsSince(ctx, n0, "disputed", "", from); err != nil || len(al) != len(instances) {
		t.Fatalf("want one disputed alert per instance, got %s (%v)", describe(al), err)
	}
	n.sum.add(t, "4 dc2 cut off from the targets: both checks disputed %s after cut.sh began (it took %s), 2 disputed alerts delivered, 0 state_change; passing again %s after heal.sh began (it took %s)",
		round(d), round(cutTook), round(recovered), round(healTook))
	n.CheckInvariants(t)
}

// stuffBlocks: node3 proposes blocks stuffed with junk transactions
// (node.sh node3 byzantine stuff-blocks): the honest nodes reject them, the
// network commits through the next rounds' proposers, no junk is ever
// committed, the verdicts stay passing.
func stuffBlocks(t *testing.T, n *Net) {
	ctx := ctxOf(t, n)
	honest, n3 := n.Nodes[:3], n.Nodes[3]
	sum := func(metric string, match ...string) (v float64) {
		for _, nd := range honest {
			m, _ := nd.Metrics(ctx)
			v += cluster.Metric(m, metric, match...)
		}
		return v
	}
	n.Script(t, "node.sh", "node3", "byzantine", "stuff-blocks")
	n.WaitUp(t, n3, n.MaxHeight(ctx))
	junk0 := sum("bftmon_txs_total", `code="1"`)
	rejected0 := sum("cometbft_consensus_proposal_receive_count", `status="rejected"`)
	rounds0 := sum("cometbft_consensus_round_increment_total")
	from := n.MaxHeight(ctx)
	d := n.WaitFor(t, "node3 to propose stuffed blocks, the others to reject them, and 12 heights to commit", func(ctx context.Context) (bool, error) {
		m3, err := n3.Metrics(ctx)
		if err != nil {
			return false, err
		}
		stuffed := cluster.Metric(m3, "bftmon_byzantine_stuffed_proposals_total")
		rejected := sum("cometbft_consensus_proposal_receive_count", `status="rejected"`) - rejected0
		h := n.MaxHeight(ctx, honest...)
		return stuffed >= 2 && rejected >= 4 && h >= from+12,
			fmt.Errorf("%v stuffed proposals, %v rejections, height %d of %d", stuffed, rejected, h, from+12)
	})
	if j := sum("bftmon_txs_total", `code="1"`) - junk0; j != 0 {
		t.Fatalf("%v junk transactions were committed", j)
	}
	for _, inst := range instances {
		if ch, err := demoCheck(ctx, n.Nodes[0], inst); err != nil || ch.Status != "passing" || ch.HardStatus != "passing" {
			t.Fatalf("demo/%s: %+v (%v), want passing", inst, ch, err)
		}
	}
	heights := n.MaxHeight(ctx, honest...) - from
	rounds := sum("cometbft_consensus_round_increment_total") - rounds0
	n.Script(t, "node.sh", "node3", "honest")
	n.WaitUp(t, n3, n.MaxHeight(ctx))
	n.sum.add(t, "5 stuff-blocks proposer (node3): rejected and %d heights committed in %s, 0 junk committed, %v rounds lost (summed over the 3 honest nodes)",
		heights, round(d), rounds)
	n.CheckInvariants(t)
}

// peersCut: dc2 leaves the backbone (cut.sh dc2 peers). With 2 of 4
// validators on each side neither side has a quorum: every node stops
// committing, and a target broken meanwhile is seen by every observer but
// neither decided nor alerted. After heal.sh blocks resume and the verdict
// catches up: the outage is agreed critical and its alert delivered.
func peersCut(t *testing.T, n *Net) {
	ctx := ctxOf(t, n)
	n0, n2 := n.Nodes[0], n.Nodes[2]
	h0 := n.MaxHeight(ctx)
	cut := time.Now()
	cutTook := n.Script(t, "cut.sh", "dc2", "peers")
	hCut := n.MaxHeight(ctx)
	t.Logf("heights right after the cut: %v", n.Heights(ctx))
	// Part 1: consensus stops on both sides.
	stalled := n.WaitFor(t, "every node to stop committing", func(ctx context.Context) (bool, error) {
		for _, nd := range n.Nodes {
			s, err := nd.Status(ctx)
			if err != nil {
				return false, err
			}
			if s.Committing {
				return false, fmt.Errorf("%s still committing at height %d (%d peers)", nd.Name, s.Height, s.Peers)
			}
		}
		return true, nil
	})
	stall := n.Heights(ctx)
	t.Logf("heights once every node stopped committing (%s after the cut): %v", round(stalled), stall)
	for name, h := range stall {
		// At most the block whose votes were out when the second node left.
		if h > hCut+1 {
			t.Fatalf("%s committed up to %d, more than one block after the cut (%d): a side without a quorum decided", name, h, hCut)
		}
	}
	// Part 2: an outage during the split is neither decided nor alerted.
	n.Script(t, "target.sh", "target-dc1", "fail")
	n.WaitFor(t, "every observer to see target-dc1 fail", func(ctx context.Context) (bool, error) {
		for _, nd := range n.Nodes {
			m, err := nd.Metrics(ctx)
			if err != nil {
				return false, err
			}
			if v := cluster.Metric(m, "bftmon_probe_status", `instance="target-dc1"`); v != 2 {
				return false, fmt.Errorf("%s's observer reports target-dc1 as %v", nd.Name, v)
			}
		}
		return true, nil
	})
	for name, h := range n.Heights(ctx) {
		if h != stall[name] {
			t.Fatalf("%s went from height %d to %d without a quorum", name, stall[name], h)
		}
	}
	for _, nd := range []*Node{n0, n2} {
		if al, err := alertsSince(ctx, nd, "", "", h0); err != nil || len(al) != 0 {
			t.Fatalf("%s committed alerts during the split: %s (%v)", nd.Name, describe(al), err)
		}
		if ch, err := demoCheck(ctx, nd, "target-dc1"); err != nil || ch.HardStatus != "passing" {
			t.Fatalf("%s: demo/target-dc1 %+v (%v) during the split, want hard passing", nd.Name, ch, err)
		}
	}
	if got := n.receivedAbove(t, h0); len(got) != 0 {
		t.Fatalf("the webhook receiver got alerts during the split: %+v", got)
	}
	halted := time.Since(cut)
	// Part 3: heal; blocks resume, the verdict catches up, the alert goes out.
	heal := time.Now()
	healTook := n.Script(t, "heal.sh", "dc2", "peers")
	top := maxOf(stall)
	n.WaitFor(t, "every node to commit again", func(ctx context.Context) (bool, error) {
		for _, nd := range n.Nodes {
			if h := nd.Height(ctx); h <= top {
				return false, fmt.Errorf("%s still at height %d", nd.Name, h)
			}
		}
		return true, nil
	})
	resumed := time.Since(heal)
	n.waitCheck(t, n0, "target-dc1", "critical", "critical")
	caught := time.Since(heal)
	al := oneStateChange(t, ctx, n0, "target-dc1", h0, "passing", "critical")
	if al.Height <= top {
		t.Fatalf("the outage's alert was committed at %d, before the heal (%d)", al.Height, top)
	}
	n.WaitDelivered(t, al)
	delivered := time.Since(heal)
	others, err := alertsSince(ctx, n0, "", "", h0)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range others {
		if a.ID != al.ID && (a.Kind == "state_change" || a.Kind == "stale") {
			t.Fatalf("after the heal the network committed %s besides the outage's alert", describe([]api.Alert{a}))
		}
	}
	t.Logf("alerts committed after the heal: %s", describe(others))
	n.Script(t, "target.sh", "target-dc1", "heal")
	n.waitCheck(t, n0, "target-dc1", "passing", "passing")
	for _, nd := range n.Nodes {
		n.WaitUp(t, nd, top)
	}
	n.sum.add(t, "6 dc2 cut off from dc1: cut.sh took %s, %d blocks committed while it ran, %d of them with 3 of 4 (after node2, cut first, stopped at %d), %d after it returned; every node reported not committing %s after it (node.StallAfter); 0 blocks and 0 alerts in the %s split, with target-dc1 failing; from heal.sh's start (it took %s) blocks resumed after %s, target-dc1 was agreed critical after %s and its alert delivered after %s",
		round(cutTook), hCut-h0, maxOf(stall)-stall["node2"], stall["node2"], maxOf(stall)-hCut, round(stalled), round(halted), round(healTook), round(resumed), round(caught), round(delivered))
	n.CheckInvariants(t)
}

// maxOf is the largest of the heights.
func maxOf(m map[string]int64) int64 {
	var h int64
	for _, v := range m {
		h = max(h, v)
	}
	return h
}

// registration is what a registration commits of an instance.
type registration struct {
	Service, ID, Address, Datacenter string
	Port                             int
	Height                           int64
}

// committed is what a node serves of the committed registrations and alerts.
type committed struct {
	regs   map[string]registration
	alerts map[string]api.Alert
}

// readCommitted reads every node's registrations and alerts.
func readCommitted(t *testing.T, ctx context.Context, nd *Node) committed {
	t.Helper()
	c := committed{regs: map[string]registration{}, alerts: map[string]api.Alert{}}
	svcs, _, err := nd.Client.Services(ctx, nil)
	if err != nil {
		t.Fatalf("%s: services: %v", nd.Name, err)
	}
	for _, s := range svcs {
		insts, _, err := nd.Client.Service(ctx, s.Name, nil)
		if err != nil {
			t.Fatalf("%s: service %s: %v", nd.Name, s.Name, err)
		}
		for _, in := range insts {
			c.regs[s.Name+"/"+in.ID] = registration{in.Service, in.ID, in.Address, in.Datacenter, in.Port, in.RegisteredHeight}
		}
	}
	als, _, err := nd.Client.Alerts(ctx, &api.QueryOptions{Limit: 1000})
	if err != nil {
		t.Fatalf("%s: alerts: %v", nd.Name, err)
	}
	for _, a := range als {
		c.alerts[a.ID] = a
	}
	return c
}

// rollingRestart restarts the four nodes one at a time (node.sh NODE
// restart: SIGKILL, start), each once the one before commits again. Blocks
// keep coming through every restart (the longest gap between block times
// is measured and logged), and every node still has every registration and
// alert committed before, and agrees on the app hashes.
func rollingRestart(t *testing.T, n *Net) {
	ctx := ctxOf(t, n)
	var before []committed
	for _, nd := range n.Nodes {
		before = append(before, readCommitted(t, ctx, nd))
	}
	if len(before[0].regs) != len(instances) || len(before[0].alerts) == 0 {
		t.Fatalf("before the restarts node0 serves %d registrations and %d alerts, want %d and some", len(before[0].regs), len(before[0].alerts), len(instances))
	}
	w := n.WatchBlocks()
	var restarts []string
	var longest time.Duration
	for _, nd := range n.Nodes {
		var others []*Node
		for _, o := range n.Nodes {
			if o != nd {
				others = append(others, o)
			}
		}
		start := time.Now()
		n.Script(t, "node.sh", nd.Name, "restart")
		h := n.MaxHeight(ctx, others...)
		// Blocks kept coming: the others commit on (three of four have a
		// quorum), and the restarted node commits with them again.
		n.WaitFor(t, fmt.Sprintf("the others to commit while %s restarts", nd.Name), func(ctx context.Context) (bool, error) {
			got := n.MaxHeight(ctx, others...)
			return got >= h+2, fmt.Errorf("the others at height %d", got)
		})
		n.WaitUp(t, nd, h+2)
		d := time.Since(start)
		longest = max(longest, d)
		restarts = append(restarts, fmt.Sprintf("%s %s", nd.Name, round(d)))
	}
	gap, at, unseen, seen := w.Stop()
	for i, nd := range n.Nodes {
		after := readCommitted(t, ctx, nd)
		for _, b := range before {
			for k, r := range b.regs {
				if after.regs[k] != r {
					t.Fatalf("%s lost or changed registration %s: before %+v, after %+v", nd.Name, k, r, after.regs[k])
				}
			}
			for id, a := range b.alerts {
				got, ok := after.alerts[id]
				if !ok || got.Kind != a.Kind || got.Height != a.Height || got.From != a.From || got.To != a.To {
					t.Fatalf("%s lost or changed alert %s (%s): after the restarts %+v", nd.Name, id, describe([]api.Alert{a}), got)
				}
			}
		}
		if len(after.regs) != len(before[i].regs) {
			t.Fatalf("%s serves %d registrations after the restarts, %d before", nd.Name, len(after.regs), len(before[i].regs))
		}
		var extra []api.Alert
		for id, a := range after.alerts {
			if _, ok := before[i].alerts[id]; !ok {
				extra = append(extra, a)
			}
		}
		if len(extra) != 0 {
			t.Fatalf("%s committed alerts during the rolling restart: %s", nd.Name, describe(extra))
		}
	}
	n.CheckInvariants(t) // every node, every height since the last check: a common height included
	n.sum.add(t, "7 rolling restart (node.sh restart, each node committing again): %v; longest gap between block times %s (before height %d, %d heights unseen between; %d heights seen), longest restart %s; %d registrations and %d alerts kept on every node",
		restarts, round(gap), at, unseen, seen, round(longest), len(before[0].regs), len(before[0].alerts))
}
