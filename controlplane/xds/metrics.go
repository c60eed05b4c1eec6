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
}

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
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.pushes, m.acks, m.nacks, m.snapshots, m.snapshotFails, m.endpointSets)
	}
	return m
}
