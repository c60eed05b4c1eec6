package xds

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NACK counters say that proxies rejected something; they cannot say
// whether a rejection still stands (a proxy NACKs a bad push, and a fix
// minutes later is ACKed). These gauges can: a proxy's NACK of a type
// stands from its first NACK until it next ACKs that type, and the alert
// "a NACK standing over 5 minutes" reads the oldest one's timestamp. They
// are computed from the tracker when scraped, by type only: which proxies
// are rejecting is in /debug/proxies and `medmesh status`, not in labels.
var (
	nackingDesc = prometheus.NewDesc("medmesh_xds_proxies_nacking",
		"Connected proxies whose latest answer for a type is a NACK (a rejection still standing), by type.",
		[]string{"type"}, nil)
	oldestNACKDesc = prometheus.NewDesc("medmesh_xds_standing_nack_oldest_timestamp_seconds",
		"Unix time of the first NACK of the oldest rejection still standing, by type; absent while none stands.",
		[]string{"type"}, nil)
)

// standingNACKs is the collector of those gauges.
type standingNACKs struct{ t *Tracker }

// Describe implements prometheus.Collector.
func (c standingNACKs) Describe(ch chan<- *prometheus.Desc) {
	ch <- nackingDesc
	ch <- oldestNACKDesc
}

// Collect implements prometheus.Collector.
func (c standingNACKs) Collect(ch chan<- prometheus.Metric) {
	count, oldest := c.t.standing()
	for _, typ := range xdsTypes {
		if _, ok := count[typ]; !ok {
			count[typ] = 0
		}
	}
	for typ, n := range count {
		ch <- prometheus.MustNewConstMetric(nackingDesc, prometheus.GaugeValue, float64(n), typ)
	}
	for typ, at := range oldest {
		ch <- prometheus.MustNewConstMetric(oldestNACKDesc, prometheus.GaugeValue,
			float64(at.UnixNano())/1e9, typ)
	}
}

// standing counts, by short type name, the proxies with a NACK standing
// and the time of the oldest.
func (t *Tracker) standing() (count map[string]int, oldest map[string]time.Time) {
	count, oldest = map[string]int{}, map[string]time.Time{}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.proxies {
		for typ, since := range p.nackedSince {
			count[typ]++
			if o, ok := oldest[typ]; !ok || since.Before(o) {
				oldest[typ] = since
			}
		}
	}
	return count, oldest
}
