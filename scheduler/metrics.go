package scheduler

import "github.com/prometheus/client_golang/prometheus"

// Metrics are a scheduler replica's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	leader      prometheus.Gauge
	generations *prometheus.GaugeVec
	queued      *prometheus.GaugeVec
	dispatches  *prometheus.CounterVec
	failed      prometheus.Counter
}

// NewMetrics registers the scheduler's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashpipe_scheduler_leader", Help: "1 while this replica leads the scheduling.",
		}),
		generations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flashpipe_scheduler_batches", Help: "Batch generations with items left to dispatch, by tenant.",
		}, []string{"tenant"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flashpipe_scheduler_waiting_items", Help: "Items not yet dispatched to the processors, by tenant.",
		}, []string{"tenant"}),
		dispatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashpipe_scheduler_dispatched_total", Help: "Items dispatched to the processors, by tenant.",
		}, []string{"tenant"}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_scheduler_failed_in_place_total", Help: "Items failed in place without an API call (bad term, refused body, never published).",
		}),
	}
	reg.MustRegister(m.leader, m.generations, m.queued, m.dispatches, m.failed)
	return m
}

func (m *Metrics) lead(on bool) {
	if m == nil {
		return
	}
	if on {
		m.leader.Set(1)
		return
	}
	m.leader.Set(0)
	m.generations.Reset()
	m.queued.Reset()
}

// queue adds gens generations and items waiting items of a tenant.
func (m *Metrics) queue(tenant string, gens, items int) {
	if m != nil {
		m.generations.WithLabelValues(tenant).Add(float64(gens))
		m.queued.WithLabelValues(tenant).Add(float64(items))
	}
}

func (m *Metrics) dispatched(tenant string) {
	if m != nil {
		m.dispatches.WithLabelValues(tenant).Inc()
	}
}

func (m *Metrics) failedInPlace() {
	if m != nil {
		m.failed.Inc()
	}
}
