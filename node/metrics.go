package node

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/cometbft/cometbft/blocksync"
	cmtcfg "github.com/cometbft/cometbft/config"
	cs "github.com/cometbft/cometbft/consensus"
	mempl "github.com/cometbft/cometbft/mempool"
	cmtnode "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/statesync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/checks"
)

// checkLabels identify one check as seen by one observer.
var checkLabels = []string{"service", "instance", "check", "observer"}

// probeMetrics exports what this node's observer saw: each check's latest
// probe status, latency and Nagios performance data.
type probeMetrics struct {
	status  *prometheus.GaugeVec
	latency *prometheus.GaugeVec
	perf    *prometheus.GaugeVec
	late    prometheus.Histogram
	dur     *prometheus.HistogramVec

	mu   sync.Mutex
	seen map[string]prometheus.Labels // exported checks by Target.Key, with their series' labels less the observer
}

func newProbeMetrics(reg prometheus.Registerer) *probeMetrics {
	m := &probeMetrics{
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bftmon_probe_status",
			Help: "This observer's latest result of a check as a Nagios code: 0 passing, 1 warning, 2 critical, 3 unknown.",
		}, checkLabels),
		latency: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bftmon_probe_latency_seconds",
			Help: "Latency of this observer's latest probe of a check.",
		}, checkLabels),
		perf: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bftmon_check_perfdata",
			Help: "Nagios performance data of this observer's latest result of a check, in the unit the plugin gave (uom).",
		}, append(checkLabels[:len(checkLabels):len(checkLabels)], "label", "uom")),
		late: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bftmon_probe_lateness_seconds",
			Help:    "How late probes start after their scheduled time: a scheduler keeping up stays in the lowest buckets.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5},
		}),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bftmon_probe_duration_seconds",
			Help:    "How long this observer's probes take, by check kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"kind"}),
		seen: map[string]prometheus.Labels{},
	}
	reg.MustRegister(m.status, m.latency, m.perf, m.late, m.dur)
	return m
}

// schedulerStats exports a scheduler's counters.
func schedulerStats(reg prometheus.Registerer, stats func() checks.Stats) {
	counter := func(name, help string, v func(checks.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(stats())) })
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bftmon_observer_checks", Help: "Checks this observer runs or takes results for."},
			func() float64 { return float64(stats().Targets) }),
		counter("bftmon_probes_total", "Probes finished.", func(s checks.Stats) uint64 { return s.Probes }),
		counter("bftmon_probes_skipped_total", "Probe runs skipped because the previous run of the check was still going.", func(s checks.Stats) uint64 { return s.Skipped }),
		counter("bftmon_observation_batches_total", "Observation batches the mempool accepted.", func(s checks.Stats) uint64 { return s.Batches }),
		counter("bftmon_observations_submitted_total", "Observations in accepted batches.", func(s checks.Stats) uint64 { return s.Observations }),
		counter("bftmon_submit_errors_total", "Observation batches refused or not delivered.", func(s checks.Stats) uint64 { return s.SubmitErrors }),
		counter("bftmon_observations_retried_total", "Observations put back for the next flush after a full mempool.", func(s checks.Stats) uint64 { return s.Retried }),
	)
}

// chainMetrics follow committed blocks.
type chainMetrics struct {
	height      prometheus.Gauge
	applied     prometheus.Counter
	txs         *prometheus.CounterVec
	transitions *prometheus.CounterVec
	alerts      *prometheus.CounterVec
	interval    prometheus.Histogram

	last time.Time // time of the previous committed block; only the commit goroutine uses it
}

func newChainMetrics(reg prometheus.Registerer) *chainMetrics {
	m := &chainMetrics{
		height: prometheus.NewGauge(prometheus.GaugeOpts{Name: "bftmon_block_height", Help: "Height of the latest committed block."}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bftmon_observations_committed_total", Help: "Observations applied by committed blocks (from every observer).",
		}),
		txs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bftmon_txs_total", Help: "Committed transactions by result code (0 ok; see docs for the others).",
		}, []string{"code"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bftmon_verdict_transitions_total", Help: "Agreed verdicts that changed, by the status they left and the one they took.",
		}, []string{"from", "to"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bftmon_alerts_total", Help: "Alerts committed, by kind (state_change, disputed, stale, observer_suspect).",
		}, []string{"kind"}),
		interval: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bftmon_block_interval_seconds",
			Help:    "Time between consecutive committed blocks, by their agreed block times.",
			Buckets: []float64{.05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 30},
		}),
	}
	reg.MustRegister(m.height, m.applied, m.txs, m.transitions, m.alerts, m.interval)
	return m
}

// committed is the commit listener.
func (m *chainMetrics) committed(blk abci.Block) {
	m.height.Set(float64(blk.Height))
	m.applied.Add(float64(blk.Observations))
	for _, tx := range blk.Txs {
		m.txs.WithLabelValues(strconv.FormatUint(uint64(tx.Code), 10)).Inc()
	}
	for _, v := range blk.Changes.Verdicts {
		m.transitions.WithLabelValues(v.From.Name(), v.To.Name()).Inc()
	}
	for _, a := range blk.Alerts {
		m.alerts.WithLabelValues(a.Kind).Inc()
	}
	if !m.last.IsZero() && blk.Time.After(m.last) {
		m.interval.Observe(blk.Time.Sub(m.last).Seconds())
	}
	m.last = blk.Time
}

// observed records one result of t seen by observer.
func (m *probeMetrics) observed(observer string, t checks.Target, r checks.Result) {
	lv := []string{t.Service, t.Instance, t.Check.Id, observer}
	series := prometheus.Labels{"service": t.Service, "instance": t.Instance, "check": t.Check.Id, "observer": observer}
	m.dur.WithLabelValues(t.Check.Kind).Observe(r.Latency.Seconds())
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status.WithLabelValues(lv...).Set(float64(r.Status.ExitCode()))
	m.latency.WithLabelValues(lv...).Set(r.Latency.Seconds())
	// A result replaces the check's performance data: a label the plugin no
	// longer prints disappears.
	m.perf.DeletePartialMatch(series)
	for _, p := range r.Perf {
		if p.Known {
			m.perf.WithLabelValues(append(lv, p.Label, p.UOM)...).Set(p.Value)
		}
	}
	m.seen[t.Key()] = series
}

// retain drops the series of checks no longer among targets.
func (m *probeMetrics) retain(targets []checks.Target) {
	keep := make(map[string]bool, len(targets))
	for _, t := range targets {
		keep[t.Key()] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, series := range m.seen {
		if keep[k] {
			continue
		}
		for _, v := range []*prometheus.GaugeVec{m.status, m.latency, m.perf} {
			v.DeletePartialMatch(series)
		}
		delete(m.seen, k)
	}
}

// newRegistry is the node's metrics registry, with the Go runtime's and the
// process's collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metricsHandler serves the gatherers in the Prometheus exposition format;
// errors are counted in reg.
func metricsHandler(reg *prometheus.Registry, gs ...prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(append(prometheus.Gatherers{reg}, gs...), promhttp.HandlerOpts{Registry: reg})
}

// cometRegistering serialises the building of CometBFT's metrics, which
// register themselves on prometheus.DefaultRegisterer.
var cometRegistering sync.Mutex

// cometMetrics is a CometBFT metrics provider whose metrics (namespace
// cometbft, label chain_id) live in their own registry, returned to be
// served on the node's /metrics. CometBFT builds its Prometheus metrics
// with go-kit, which registers each on the global default registerer: two
// nodes in one process (the tests run several) would collide there, and the
// default registry is not ours to serve. So while CometBFT's constructors
// run, the default registerer is this node's registry.
func cometMetrics(ic *cmtcfg.InstrumentationConfig) (cmtnode.MetricsProvider, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	on := *ic
	on.Prometheus = true // only our provider reads it: CometBFT's own listener stays off
	if on.Namespace == "" {
		on.Namespace = "cometbft"
	}
	inner := cmtnode.DefaultMetricsProvider(&on)
	return func(chainID string) (*cs.Metrics, *p2p.Metrics, *mempl.Metrics, *sm.Metrics, *proxy.Metrics, *blocksync.Metrics, *statesync.Metrics) {
		cometRegistering.Lock()
		defer cometRegistering.Unlock()
		saved := prometheus.DefaultRegisterer
		prometheus.DefaultRegisterer = reg
		defer func() { prometheus.DefaultRegisterer = saved }()
		return inner(chainID)
	}, reg
}

// statuses are the values of the status label of the agreed-state gauges:
// the app's statuses, with "pending" for a check without one yet.
var statuses = []types.Status{types.STATUS_PASSING, types.STATUS_WARNING, types.STATUS_CRITICAL, types.STATUS_UNKNOWN,
	types.STATUS_STALE, types.STATUS_DISPUTED, types.STATUS_NONE}

// stateCollector exports the agreed state, read from the last committed
// version at each scrape: it cannot go stale and costs nothing between
// scrapes.
type stateCollector struct {
	read func() (*app.Query, error)

	verdict, hard, age, suspect, agreed, disagreed *prometheus.Desc
}

func newStateCollector(read func() (*app.Query, error)) *stateCollector {
	check := []string{"service", "instance", "check"}
	observer := []string{"observer", "name", "datacenter"}
	return &stateCollector{
		read: read,
		verdict: prometheus.NewDesc("bftmon_check_verdict",
			"The agreed verdict of each check: 1 for its current status, 0 for the others (pending: no verdict yet).",
			append(check, "status"), nil),
		hard: prometheus.NewDesc("bftmon_check_status",
			"The agreed (hard, confirmed) status of each check: 1 for its current status, 0 for the others (pending: none confirmed yet).",
			append(check, "status"), nil),
		age: prometheus.NewDesc("bftmon_check_hard_state_age_seconds",
			"Block time of the last committed block minus that of the block in which each check's hard status was confirmed.",
			check, nil),
		suspect: prometheus.NewDesc("bftmon_observer_suspect",
			"1 if the observer is suspect (disagrees with agreed verdicts more than the standing threshold over the window), else 0.",
			observer, nil),
		agreed: prometheus.NewDesc("bftmon_observer_reports_agreed",
			"The observer's reports over the standing window that agreed with the agreed verdict.", observer, nil),
		disagreed: prometheus.NewDesc("bftmon_observer_reports_disagreed",
			"The observer's reports over the standing window that disagreed with the agreed verdict.", observer, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.verdict, c.hard, c.age, c.suspect, c.agreed, c.disagreed} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	q, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.hard, fmt.Errorf("read the committed state: %w", err))
		return
	}
	now := q.Info().BlockTime
	services, err := q.Services()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.hard, fmt.Errorf("list services: %w", err))
		return
	}
	for _, s := range services {
		insts, err := q.Find(s.Name, app.Filter{})
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.hard, fmt.Errorf("read service %s: %w", s.Name, err))
			return
		}
		for i := range insts {
			for _, cv := range insts[i].Checks {
				lv := []string{s.Name, insts[i].Instance.Id, cv.Check.Id}
				for _, st := range statuses {
					ch <- prometheus.MustNewConstMetric(c.verdict, prometheus.GaugeValue, oneIf(cv.State.Verdict == st), append(lv, st.Name())...)
					ch <- prometheus.MustNewConstMetric(c.hard, prometheus.GaugeValue, oneIf(cv.State.Hard == st), append(lv, st.Name())...)
				}
				if cv.State.HardTimeMs > 0 {
					ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, float64(now-cv.State.HardTimeMs)/1000, lv...)
				}
			}
		}
	}
	standings, err := q.Standings()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.suspect, fmt.Errorf("read standings: %w", err))
		return
	}
	for _, st := range standings {
		lv := []string{st.Observer.Id, st.Observer.Name, st.Observer.Datacenter}
		ch <- prometheus.MustNewConstMetric(c.suspect, prometheus.GaugeValue, oneIf(st.Suspect), lv...)
		ch <- prometheus.MustNewConstMetric(c.agreed, prometheus.GaugeValue, float64(st.Agreed), lv...)
		ch <- prometheus.MustNewConstMetric(c.disagreed, prometheus.GaugeValue, float64(st.Disagreed), lv...)
	}
}

func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
