package controlplane

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	catalogChanges   prometheus.Counter
	panics           prometheus.Counter
	reconcileSeconds prometheus.Histogram
	stageSeconds     *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		catalogChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_catalog_changes_total", Help: "Catalogs accepted from the registry.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_reconcile_panics_total", Help: "Recovered panics while translating; the last good config was kept.",
		}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "medmesh_reconcile_seconds", Help: "Time to translate and publish one change to all proxies.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		stageSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "medmesh_change_stage_seconds",
			Help:    "Time a registry change spends in each stage before its proxies are sent it: registry (read and built into a catalog), queue (waiting for a round), build (the IR), publish (identify proxies, translate, hand to every proxy's stream).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"stage"}),
	}
	reg.MustRegister(m.catalogChanges, m.panics, m.reconcileSeconds, m.stageSeconds)
	return m
}
