package node

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
		seen: map[string]prometheus.Labels{},
	}
	reg.MustRegister(m.status, m.latency, m.perf)
	return m
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
