package xds

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the xDS server's Prometheus metrics. Labels are resource
// types only: proxy IDs would explode cardinality, and service names stay
// out of labels that might be exported beyond the site.
type Metrics struct {
	connected     prometheus.Gauge
	pushes        *prometheus.CounterVec
	acks          *prometheus.CounterVec
	nacks         *prometheus.CounterVec
	snapshots     prometheus.Counter
	snapshotFails prometheus.Counter
	endpointSets  prometheus.Counter
	// pushLatency and convergence are what dashboards and alerts read
	// (deploy/monitoring): how long a proxy takes to answer a response,
	// and how long a change takes to be held by a proxy.
	pushLatency *prometheus.HistogramVec
	convergence prometheus.Histogram
}

// xdsTypes are the short type names (shortTypeName) whose series exist
// from the start, so that increase() sees a type's first NACK.
var xdsTypes = []string{"LDS", "RDS", "CDS", "EDS", "SDS"}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "medmesh_xds_connected_proxies", Help: "Proxies with an open xDS stream.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_xds_responses_total", Help: "xDS responses sent, by type.",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_xds_acks_total", Help: "xDS responses ACKed by proxies, by type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_xds_nacks_total", Help: "xDS responses NACKed by proxies, by type.",
		}, []string{"type"}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_xds_snapshots_published_total", Help: "Per-proxy snapshots published.",
		}),
		snapshotFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_xds_snapshot_failures_total", Help: "Snapshots refused (inconsistent or invalid); the last good one is kept.",
		}),
		endpointSets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_xds_endpoint_updates_total", Help: "ClusterLoadAssignments updated in the shared endpoint cache.",
		}),
		pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "medmesh_xds_push_latency_seconds",
			Help: "Time from sending an xDS response to the proxy's ACK or NACK of it, by type.",
			// Proxies on loopback answer in well under a millisecond; an
			// edge site behind a slow uplink takes seconds.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
		}, []string{"type"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "medmesh_xds_convergence_seconds",
			Help:    "Time from a change reaching the control loop to a proxy ACKing every type the change touched, per proxy push.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	for _, typ := range xdsTypes {
		m.pushes.WithLabelValues(typ)
		m.acks.WithLabelValues(typ)
		m.nacks.WithLabelValues(typ)
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.pushes, m.acks, m.nacks, m.snapshots, m.snapshotFails, m.endpointSets,
			m.pushLatency, m.convergence)
	}
	return m
}
