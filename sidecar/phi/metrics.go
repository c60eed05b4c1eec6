package phi

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"medmesh/sidecar/classify"
)

// Metrics are the sidecar's Prometheus metrics. Labels are priorities,
// data classes and outcomes only: fixed vocabularies, never request data.
type Metrics struct {
	requests    *prometheus.CounterVec
	wait        *prometheus.HistogramVec
	auditErrors prometheus.Counter
	// shed has a series per priority from the start, so that an alert on
	// increase() sees the first critical request shed (a series born at 1
	// shows no increase).
	shed *prometheus.CounterVec
	// The children are looked up once: WithLabelValues hashes every
	// label on each call, a cost paid on every request otherwise.
	waitBy   [classify.NumPriorities]prometheus.Observer
	shedBy   [classify.NumPriorities]prometheus.Counter
	mu       sync.RWMutex
	counters map[requestKey]prometheus.Counter
}

type requestKey struct {
	p              classify.Priority
	class, outcome string
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_sidecar_requests_total",
			Help: "Requests seen by the PHI sidecar, by priority, data class and outcome (ok, error, shed, cancelled).",
		}, []string{"priority", "class", "outcome"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "medmesh_sidecar_queue_wait_seconds",
			Help:    "Time admitted requests waited for a slot, by priority.",
			Buckets: []float64{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10},
		}, []string{"priority"}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_sidecar_audit_errors_total",
			Help: "Audit records that could not be written.",
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_sidecar_shed_requests_total",
			Help: "Requests the priority scheduler refused (shed), by priority.",
		}, []string{"priority"}),
	}
	m.counters = map[requestKey]prometheus.Counter{}
	reg.MustRegister(m.requests, m.wait, m.auditErrors, m.shed)
	for p := range m.waitBy {
		m.waitBy[p] = m.wait.WithLabelValues(classify.Priority(p).String())
		m.shedBy[p] = m.shed.WithLabelValues(classify.Priority(p).String())
	}
	return m
}

func (m *Metrics) count(p classify.Priority, class, outcome string) {
	if m == nil {
		return
	}
	if outcome == "shed" && int(p) < len(m.shedBy) {
		m.shedBy[p].Inc()
	}
	// Classes come from the rules, never from request text, so the keys
	// are a small vocabulary.
	k := requestKey{p, class, outcome}
	m.mu.RLock()
	c, ok := m.counters[k]
	m.mu.RUnlock()
	if !ok {
		c = m.requests.WithLabelValues(p.String(), class, outcome)
		m.mu.Lock()
		m.counters[k] = c
		m.mu.Unlock()
	}
	c.Inc()
}

func (m *Metrics) observeWait(p classify.Priority, d time.Duration) {
	if m != nil && p.Valid() {
		m.waitBy[p].Observe(d.Seconds())
	}
}

func (m *Metrics) auditFailed() {
	if m != nil {
		m.auditErrors.Inc()
	}
}
