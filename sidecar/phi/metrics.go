package phi

import (
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
	for p := classify.Priority(0); int(p) < classify.NumPriorities; p++ {
		m.shed.WithLabelValues(p.String())
	}
	reg.MustRegister(m.requests, m.wait, m.auditErrors, m.shed)
	return m
}

func (m *Metrics) count(p classify.Priority, class, outcome string) {
	if m != nil {
		m.requests.WithLabelValues(p.String(), class, outcome).Inc()
		if outcome == "shed" {
			m.shed.WithLabelValues(p.String()).Inc()
		}
	}
}

func (m *Metrics) observeWait(p classify.Priority, d time.Duration) {
	if m != nil {
		m.wait.WithLabelValues(p.String()).Observe(d.Seconds())
	}
}

func (m *Metrics) auditFailed() {
	if m != nil {
		m.auditErrors.Inc()
	}
}
