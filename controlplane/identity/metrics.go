package identity

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SVIDs are renewed at half their lifetime, so one that comes within a
// tenth of its lifetime of expiring means renewal has failed for a long
// while (the CA cannot sign, the loop is stuck) and the proxy is about to
// lose its mTLS identity. The gauges below let an alert say so without a
// label per proxy: the SVID with the least of its lifetime left, its
// NotAfter and its lifetime. (SVIDs issued with one TTL, the normal case,
// make it simply the earliest to expire.) They are computed when scraped.
var (
	heldDesc = prometheus.NewDesc("medmesh_svids_held",
		"SVIDs issued by this control plane to proxies still connected.", nil, nil)
	issuedDesc = prometheus.NewDesc("medmesh_svids_issued_total",
		"SVIDs issued (first issue and renewals).", nil, nil)
	expiryDesc = prometheus.NewDesc("medmesh_svid_earliest_expiry_timestamp_seconds",
		"NotAfter (Unix time) of the held SVID with the least of its lifetime left; absent while none is held.", nil, nil)
	lifetimeDesc = prometheus.NewDesc("medmesh_svid_earliest_expiry_lifetime_seconds",
		"Lifetime (issue to NotAfter) of that same SVID, so that its remaining fraction can be computed; absent while none is held.",
		nil, nil)
)

// Collector returns the Prometheus collector of the SVID gauges.
func (m *Manager) Collector() prometheus.Collector { return svidCollector{m} }

type svidCollector struct{ m *Manager }

// Describe implements prometheus.Collector.
func (c svidCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- heldDesc
	ch <- issuedDesc
	ch <- expiryDesc
	ch <- lifetimeDesc
}

// Collect implements prometheus.Collector.
func (c svidCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	c.m.mu.RLock()
	n := 0
	var worst Detail
	worstLeft := 2.0 // fractions left are at most 1
	for _, d := range c.m.statuses {
		if d.NotAfter.IsZero() {
			continue // holds none
		}
		n++
		life := d.NotAfter.Sub(d.IssuedAt)
		if life <= 0 {
			continue
		}
		if left := float64(d.NotAfter.Sub(now)) / float64(life); left < worstLeft {
			worst, worstLeft = d, left
		}
	}
	c.m.mu.RUnlock()
	ch <- prometheus.MustNewConstMetric(heldDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(issuedDesc, prometheus.CounterValue, float64(c.m.issuedTotal.Load()))
	if worstLeft <= 1 {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(worst.NotAfter.UnixNano())/1e9)
		ch <- prometheus.MustNewConstMetric(lifetimeDesc, prometheus.GaugeValue, worst.NotAfter.Sub(worst.IssuedAt).Seconds())
	}
}
