package cluster

import (
	"context"
	"fmt"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/app/verdict"
)

// CheckInvariants fails the test unless what every run must keep holds:
//
//  1. every running node has the same app hash at every height that all of
//     them have committed;
//  2. every committed alert about a check is justified by the observations
//     of the block that raised it: the verdict rule applied to the alert's
//     views (with the observers' weights and the default quorum) gives the
//     alert's new status.
func (c *Cluster) CheckInvariants(ctx context.Context) {
	c.t.Helper()
	running := c.Running()
	if len(running) == 0 {
		c.t.Fatal("invariants: no node runs")
	}
	low := int64(-1)
	for _, n := range running {
		if h := n.Height(ctx); low < 0 || h < low {
			low = h
		}
	}
	for h := int64(1); h <= low; h++ {
		var first string
		for i, n := range running {
			ah, err := n.Client.AppHash(ctx, h)
			if err != nil {
				c.t.Fatalf("invariants: %s app hash at %d: %v", n.Name, h, err)
			}
			if i == 0 {
				first = ah.AppHash
			} else if ah.AppHash != first {
				c.t.Fatalf("invariants: at height %d %s has app hash %s, %s has %s", h, running[0].Name, first, n.Name, ah.AppHash)
			}
		}
	}
	obs, _, err := running[0].Client.Observers(ctx, nil)
	if err != nil {
		c.t.Fatalf("invariants: observers: %v", err)
	}
	weight := map[string]uint64{}
	for _, o := range obs {
		weight[o.ID] = o.Weight
	}
	alerts, _, err := running[0].Client.Alerts(ctx, &api.QueryOptions{Limit: 1000})
	if err != nil {
		c.t.Fatalf("invariants: alerts: %v", err)
	}
	for _, al := range alerts {
		if err := Justified(al, weight); err != nil {
			c.t.Fatalf("invariants: alert %s (%s %s→%s at height %d) is not justified: %v", al.ID, al.Kind, al.From, al.To, al.Height, err)
		}
	}
	c.t.Logf("invariants hold: %d nodes agree on every app hash up to height %d; %d alerts justified", len(running), low, len(alerts))
}

// Justified recomputes the verdict of an alert's views with the observers'
// weights (observer id → weight, the whole observer set) and the default
// quorum, and says why the alert's new status is not what they decide (nil
// when it is). An observer_suspect alert needs only to name an observer of
// the set. The e2e test of networks/local checks its alerts with it too.
func Justified(al api.Alert, weight map[string]uint64) error {
	if al.Observer != "" {
		if _, ok := weight[al.Observer]; !ok {
			return fmt.Errorf("names observer %s, which is not in the observer set", al.Observer)
		}
		return nil
	}
	var reports []verdict.Report
	for _, v := range al.Views {
		st, err := types.ParseStatus(v.Status)
		if err != nil {
			return fmt.Errorf("view of %s: %w", v.Observer, err)
		}
		w, ok := weight[v.Observer]
		if !ok {
			return fmt.Errorf("view of %s, which is not in the observer set", v.Observer)
		}
		reports = append(reports, verdict.Report{Weight: w, Status: st, Fresh: v.Fresh})
	}
	var all uint64
	for _, w := range weight {
		all += w
	}
	got := verdict.Decide(reports, 0, all).Status
	if got.Name() != al.To {
		return fmt.Errorf("its views decide %s", got.Name())
	}
	return nil
}
