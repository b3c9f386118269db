package sink

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a sink replica's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	written  prometheus.Counter
	refused  prometheus.Counter
	failures prometheus.Counter
	duration prometheus.Histogram
	blocked  *prometheus.GaugeVec
}

// NewMetrics registers the sink's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sink_events_written_total", Help: "Events committed to the store.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sink_events_refused_total", Help: "Events the store refused for a reason in their data, set aside as dead letters (replay them once fixed).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sink_write_failures_total", Help: "Failed write transactions (retried).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashpipe_sink_write_seconds", Help: "Duration of a write transaction.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flashpipe_sink_blocked",
			Help: "1 while the store refuses the sink's writes for a reason of its environment (label cause: permission denied, table or schema missing or changed, database unreachable, read-only, disk full); the sink retries until it takes them.",
		}, []string{"cause"}),
	}
	reg.MustRegister(m.written, m.refused, m.failures, m.duration, m.blocked)
	return m
}

func (m *Metrics) write(n int, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.duration.Observe(took.Seconds())
	if err != nil {
		m.failures.Inc()
		return
	}
	m.written.Add(float64(n))
}

func (m *Metrics) block(cause string) {
	if m != nil {
		m.blocked.Reset()
		m.blocked.WithLabelValues(cause).Set(1)
	}
}

func (m *Metrics) unblock() {
	if m != nil {
		m.blocked.Reset()
	}
}

func (m *Metrics) refuse() {
	if m != nil {
		m.refused.Inc()
	}
}
