package node_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bftmon/bftmon/app/types"
)

// scrape fetches and parses a node's /metrics.
func scrape(ctx context.Context, httpAddr string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// sample is the value of the series of family name whose labels include
// want, and whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetrics scrapes a real node's /metrics while a real TCP service it
// checks goes from passing to critical: the agreed status gauge follows
// (one series per status, 1 on the current one), the verdict transition
// is counted, and CometBFT's own metrics are on the same endpoint. A
// second node in the same process serves its own metrics (CometBFT's
// register globally; they must not collide).
func TestMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	defer tn.node.Stop()

	target := tcpTarget(t)
	inst := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Port: 80, Datacenter: "dc1",
		Checks: []types.Check{{Id: "tcp", Kind: "tcp", Tcp: &types.TCPParams{Address: target.Addr().String()},
			IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
	if _, err := tn.client.Register(ctx, tn.operator.Private, inst); err != nil {
		t.Fatal(err)
	}
	check := map[string]string{"service": "web", "instance": "web-1", "check": "tcp"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range check {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	// statusIs waits until exactly status is 1 among the check's series of
	// family name.
	statusIs := func(name, status string) map[string]*dto.MetricFamily {
		t.Helper()
		var fams map[string]*dto.MetricFamily
		waitFor(t, name+" "+status, 60*time.Second, func() (bool, error) {
			var err error
			if fams, err = scrape(ctx, tn.httpAddr); err != nil {
				return false, err
			}
			for _, st := range []string{"passing", "warning", "critical", "unknown", "stale", "disputed", "pending"} {
				v, ok := sample(fams, name, with("status", st))
				if !ok {
					return false, fmt.Errorf("no %s series for status %s", name, st)
				}
				if (v == 1) != (st == status) {
					return false, fmt.Errorf("%s{status=%q} = %v", name, st, v)
				}
			}
			return true, nil
		})
		return fams
	}

	fams := statusIs("bftmon_check_status", "passing")
	statusIs("bftmon_check_verdict", "passing")
	for _, tc := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"bftmon_verdict_transitions_total", map[string]string{"to": "passing"}, 1},
		{"bftmon_check_hard_state_age_seconds", check, 0},
		{"bftmon_block_height", nil, 1},
		{"bftmon_tx_commit_seconds", nil, 1},      // the registration
		{"bftmon_block_interval_seconds", nil, 1}, // blocks after the first
		{"bftmon_probe_duration_seconds", map[string]string{"kind": "tcp"}, 1},
		{"bftmon_observer_suspect", map[string]string{"datacenter": "dc1"}, 0},
		{"bftmon_http_blocking_queries", nil, 0},
		{"cometbft_consensus_height", nil, 2},
		{"cometbft_mempool_size", nil, 0},
	} {
		v, ok := sample(fams, tc.name, tc.labels)
		if !ok || v < tc.min {
			t.Errorf("%s%v = %v (present %v), want >= %v", tc.name, tc.labels, v, ok, tc.min)
		}
	}
	if v, _ := sample(fams, "bftmon_observer_suspect", nil); v != 0 {
		t.Errorf("the only observer is suspect: %v", v)
	}

	// A second node in this process: its own CometBFT metrics, no panic.
	other := startNode(ctx, t)
	defer other.node.Stop()
	waitFor(t, "the second node's cometbft metrics", 30*time.Second, func() (bool, error) {
		f, err := scrape(ctx, other.httpAddr)
		if err != nil {
			return false, err
		}
		v, ok := sample(f, "cometbft_consensus_height", nil)
		return ok && v >= 2, fmt.Errorf("cometbft_consensus_height %v present %v", v, ok)
	})

	// The service stops answering: the agreed status turns critical.
	target.Close()
	fams = statusIs("bftmon_check_status", "critical")
	if v, _ := sample(fams, "bftmon_verdict_transitions_total", map[string]string{"from": "passing", "to": "critical"}); v < 1 {
		t.Errorf("no passing → critical verdict transition counted")
	}
	if v, _ := sample(fams, "bftmon_alerts_total", map[string]string{"kind": "state_change"}); v < 1 {
		var names []string
		for n := range fams {
			if strings.HasPrefix(n, "bftmon_alert") {
				names = append(names, n)
			}
		}
		t.Errorf("no state_change alert counted (families %v)", names)
	}
}
