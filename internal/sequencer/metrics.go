package sequencer

import "github.com/prometheus/client_golang/prometheus"

// Metrics are a sequencer replica's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	batches  prometheus.Gauge
	appended prometheus.Counter
	lookups  prometheus.Counter
	resyncs  prometheus.Counter
}

// NewMetrics registers the sequencer's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		batches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashpipe_sequencer_batches", Help: "Batches this replica is sequencing.",
		}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sequencer_events_appended_total", Help: "Events appended to ordered logs.",
		}),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sequencer_lookups_total", Help: "Results read back from the results stream (beyond the window).",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_sequencer_resyncs_total", Help: "Appends refused (stale cursor) and cursors read again.",
		}),
	}
	reg.MustRegister(m.batches, m.appended, m.lookups, m.resyncs)
	return m
}

func (m *Metrics) batch(delta float64) {
	if m != nil {
		m.batches.Add(delta)
	}
}

func (m *Metrics) append(n int) {
	if m != nil {
		m.appended.Add(float64(n))
	}
}

func (m *Metrics) lookup() {
	if m != nil {
		m.lookups.Inc()
	}
}

func (m *Metrics) resync() {
	if m != nil {
		m.resyncs.Inc()
	}
}
