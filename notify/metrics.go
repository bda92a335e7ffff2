package notify

import "github.com/prometheus/client_golang/prometheus"

// metrics are the per-receiver delivery metrics.
type metrics struct {
	delivered, retried, settled, acked *prometheus.CounterVec
	failed                             *prometheus.CounterVec
	latency, attempt                   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, pending func() map[string]int) *metrics {
	rl := []string{"receiver"}
	m := &metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bftmon_notify_delivered_total",
			Help: "Deliveries this node made (Alertmanager re-sends included)."}, rl),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bftmon_notify_retried_total",
			Help: "Failed delivery attempts that were scheduled again."}, rl),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bftmon_notify_settled_by_others_total",
			Help: "Alerts this node did not deliver because the other nodes' committed receipts settled them first (mode one: more than a third of the observer weight, or the receiver's acknowledgement)."}, rl),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bftmon_notify_acknowledged_total",
			Help: "First deliveries the receiver acknowledged with a Bftmon-Ack signature that verifies under its registered key."}, rl),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bftmon_notify_failed_total",
			Help: "Alerts given up: expired undelivered, receiver gone (410), or undeliverable."}, []string{"receiver", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bftmon_notify_delivery_latency_seconds",
			Help:    "From an alert's block time to this node's first successful delivery of it.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300}}, rl),
		attempt: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bftmon_notify_request_seconds",
			Help:    "Duration of successful delivery requests.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10}}, rl),
	}
	reg.MustRegister(m.delivered, m.retried, m.settled, m.acked, m.failed, m.latency, m.attempt, pendingCollector{pending})
	return m
}

// pendingCollector exports the outbox's undelivered entries per receiver.
type pendingCollector struct{ pending func() map[string]int }

var pendingDesc = prometheus.NewDesc("bftmon_notify_pending", "Alerts in this node's outbox not yet delivered, per receiver.", []string{"receiver"}, nil)

// Describe implements prometheus.Collector.
func (pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- pendingDesc }

// Collect implements prometheus.Collector.
func (c pendingCollector) Collect(ch chan<- prometheus.Metric) {
	for r, v := range c.pending() {
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(v), r)
	}
}
