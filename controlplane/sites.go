package controlplane

import (
	"github.com/prometheus/client_golang/prometheus"

	"medmesh/controlplane/ir"
	"medmesh/controlplane/residency"
	"medmesh/registry"
)

// residencyAdapter lets ir.Build ask a residency.Decider about flows: the
// IR speaks its own types, residency its own (so the Rego input document
// is defined in one place).
type residencyAdapter struct{ d *residency.Decider }

func (a residencyAdapter) Decide(flows []ir.Flow) []ir.FlowDecision {
	in := make([]residency.Flow, len(flows))
	for i, f := range flows {
		in[i] = residency.Flow{
			Source: residency.Source{Service: f.Source.Service, Namespace: f.Source.Namespace, Site: f.Source.Site},
			Destination: residency.Destination{Service: f.Destination.Service, Namespace: f.Destination.Namespace,
				Site: f.Destination.Site, PHI: f.PHI, Kind: string(f.Kind)},
		}
	}
	out := make([]ir.FlowDecision, len(flows))
	for i, d := range a.d.Decide(in) {
		out[i] = ir.FlowDecision{Allowed: d.Allowed, Reasons: d.Reasons}
	}
	return out
}

// Peers: a site whose peering is not ACTIVE has its imports served as
// last heard of (stale), and withdrawn after the grace period. These
// gauges, computed from the source's status when scraped, let an alert
// say "site X's peer Y is stale" without reading logs. Labels are the
// peering's name and the peer's site: a handful per site, set by
// operators, never request data.
var (
	peerStaleDesc = prometheus.NewDesc("medmesh_peer_stale",
		"1 while a Consul cluster peering is not ACTIVE (its imported services are served as last heard of), else 0.",
		[]string{"peer", "site"}, nil)
	peerStaleSinceDesc = prometheus.NewDesc("medmesh_peer_stale_since_timestamp_seconds",
		"Unix time a peering stopped being ACTIVE; absent while it is ACTIVE.", []string{"peer", "site"}, nil)
	peerWithdrawnDesc = prometheus.NewDesc("medmesh_peer_imports_withdrawn",
		"1 once a stale peer's imported services are withdrawn (stale for longer than the grace period), else 0.",
		[]string{"peer", "site"}, nil)
	peerInstancesDesc = prometheus.NewDesc("medmesh_peer_imported_instances",
		"Instances imported from a peer that are being served.", []string{"peer", "site"}, nil)
)

// peerCollector reports the registry source's peers.
type peerCollector struct{ src registry.Source }

// Describe implements prometheus.Collector.
func (c peerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerStaleDesc
	ch <- peerStaleSinceDesc
	ch <- peerWithdrawnDesc
	ch <- peerInstancesDesc
}

// Collect implements prometheus.Collector.
func (c peerCollector) Collect(ch chan<- prometheus.Metric) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, p := range c.src.Status().Peers {
		ch <- prometheus.MustNewConstMetric(peerStaleDesc, prometheus.GaugeValue, b(p.Stale()), p.Name, p.Site)
		ch <- prometheus.MustNewConstMetric(peerWithdrawnDesc, prometheus.GaugeValue, b(p.Withdrawn), p.Name, p.Site)
		ch <- prometheus.MustNewConstMetric(peerInstancesDesc, prometheus.GaugeValue, float64(p.Instances), p.Name, p.Site)
		if p.Stale() {
			ch <- prometheus.MustNewConstMetric(peerStaleSinceDesc, prometheus.GaugeValue,
				float64(p.StaleSince.UnixNano())/1e9, p.Name, p.Site)
		}
	}
}
