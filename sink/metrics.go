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
}

// NewMetrics registers the sink's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sink_events_written_total", Help: "Events committed to the store.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sink_events_refused_total", Help: "Events the store refused for good (set aside; replay them once fixed).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sink_write_failures_total", Help: "Failed write transactions (retried).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flashpipe_sink_write_seconds", Help: "Duration of a write transaction.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	reg.MustRegister(m.written, m.refused, m.failures, m.duration)
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

func (m *Metrics) refuse() {
	if m != nil {
		m.refused.Inc()
	}
}
