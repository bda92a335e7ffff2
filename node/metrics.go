package node

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bftmon/bftmon/abci"
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
		seen: map[string]prometheus.Labels{},
	}
	reg.MustRegister(m.status, m.latency, m.perf, m.late)
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
	height  prometheus.Gauge
	applied prometheus.Counter
	txs     *prometheus.CounterVec
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
	}
	reg.MustRegister(m.height, m.applied, m.txs)
	return m
}

// committed is the commit listener.
func (m *chainMetrics) committed(blk abci.Block) {
	m.height.Set(float64(blk.Height))
	m.applied.Add(float64(blk.Observations))
	for _, tx := range blk.Txs {
		m.txs.WithLabelValues(strconv.FormatUint(uint64(tx.Code), 10)).Inc()
	}
}

// observed records one result of t seen by observer.
func (m *probeMetrics) observed(observer string, t checks.Target, r checks.Result) {
	lv := []string{t.Service, t.Instance, t.Check.Id, observer}
	series := prometheus.Labels{"service": t.Service, "instance": t.Instance, "check": t.Check.Id, "observer": observer}
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

// metricsHandler serves reg in the Prometheus exposition format.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
