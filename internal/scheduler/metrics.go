package scheduler

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a scheduler replica's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	leader      prometheus.Gauge
	generations *prometheus.GaugeVec
	queued      *prometheus.GaugeVec
	inReady     *prometheus.GaugeVec
	dispatches  *prometheus.CounterVec
	failed      prometheus.Counter

	mu      sync.Mutex
	tenants map[string]bool // the tenant labels set last
}

// TenantLoad is a tenant's work as the leader sees it.
type TenantLoad struct {
	// Batches is the tenant's generations with items left to dispatch; Waiting those
	// items.
	Batches, Waiting int
	// InProcessors is the tenant's items in the ready stream: waiting for a processor
	// or held by one.
	InProcessors int
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
		inReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flashpipe_scheduler_in_processors_items", Help: "Items dispatched and not yet done (waiting for a processor or held by one), by tenant.",
		}, []string{"tenant"}),
		dispatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashpipe_scheduler_dispatched_total", Help: "Items dispatched to the processors, by tenant.",
		}, []string{"tenant"}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_scheduler_failed_in_place_total", Help: "Items failed in place without an API call (bad term, refused body, never published).",
		}),
	}
	reg.MustRegister(m.leader, m.generations, m.queued, m.inReady, m.dispatches, m.failed)
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
	m.mu.Lock()
	defer m.mu.Unlock()
	m.generations.Reset()
	m.queued.Reset()
	m.inReady.Reset()
	m.tenants = nil
}

// observe sets the per-tenant gauges to snap, dropping the tenants no longer in it.
func (m *Metrics) observe(snap map[string]TenantLoad) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t := range m.tenants {
		if _, ok := snap[t]; !ok {
			m.generations.DeleteLabelValues(t)
			m.queued.DeleteLabelValues(t)
			m.inReady.DeleteLabelValues(t)
		}
	}
	m.tenants = make(map[string]bool, len(snap))
	for t, tl := range snap {
		m.tenants[t] = true
		m.generations.WithLabelValues(t).Set(float64(tl.Batches))
		m.queued.WithLabelValues(t).Set(float64(tl.Waiting))
		m.inReady.WithLabelValues(t).Set(float64(tl.InProcessors))
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
