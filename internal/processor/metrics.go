package processor

import "github.com/prometheus/client_golang/prometheus"

// Metrics are a processor replica's Prometheus metrics. A nil *Metrics records
// nothing, so every method is safe to call on it.
type Metrics struct {
	items    *prometheus.CounterVec
	calls    *prometheus.CounterVec
	cache    *prometheus.CounterVec
	inflight prometheus.Gauge
	breaker  prometheus.Gauge
	released prometheus.Counter
	paused   prometheus.Gauge
}

// NewMetrics registers the processor's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashpipe_processor_items_total", Help: "Items finished, by final status (ok, failed).",
		}, []string{"status"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashpipe_api_calls_total", Help: "API calls by stage and outcome (ok, transient, permanent).",
		}, []string{"stage", "outcome"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashpipe_cache_lookups_total", Help: "Answer cache look-ups by stage and result (hit, miss).",
		}, []string{"stage", "result"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashpipe_processor_in_flight", Help: "Items this replica is working on.",
		}),
		breaker: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashpipe_circuit_breaker_state", Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashpipe_processor_released_total", Help: "Items released (delayed nak) while the circuit breaker was open.",
		}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashpipe_processor_paused", Help: "1 while an account error (bad key, no credits) pauses the replica.",
		}),
	}
	reg.MustRegister(m.items, m.calls, m.cache, m.inflight, m.breaker, m.released, m.paused)
	return m
}

func (m *Metrics) item(status string) {
	if m != nil {
		m.items.WithLabelValues(status).Inc()
	}
}

func (m *Metrics) call(stage, outcome string) {
	if m != nil {
		m.calls.WithLabelValues(stage, outcome).Inc()
	}
}

func (m *Metrics) lookup(stage string, hit bool) {
	if m != nil {
		r := "miss"
		if hit {
			r = "hit"
		}
		m.cache.WithLabelValues(stage, r).Inc()
	}
}

func (m *Metrics) inFlight(delta float64) {
	if m != nil {
		m.inflight.Add(delta)
	}
}

func (m *Metrics) breakerState(s int) {
	if m != nil {
		m.breaker.Set(float64(s))
	}
}

func (m *Metrics) release() {
	if m != nil {
		m.released.Inc()
	}
}

func (m *Metrics) setPaused(p bool) {
	if m != nil {
		v := 0.0
		if p {
			v = 1
		}
		m.paused.Set(v)
	}
}
