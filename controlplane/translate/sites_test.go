package translate_test

import (
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/translate"
	"medmesh/registry"
)

type allowAll struct{}

func (allowAll) Decide(flows []ir.Flow) []ir.FlowDecision {
	out := make([]ir.FlowDecision, len(flows))
	for i := range out {
		out[i].Allowed = true
	}
	return out
}

// Another site's endpoints (routed where residency allows) rank after this
// site's, so they take traffic only when the local ones cannot; priorities
// stay contiguous for grpc-go.
func TestOtherSitesRankAfterLocal(t *testing.T) {
	pass := registry.HealthPassing
	meta := map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false"}
	cat, _ := registry.BuildCatalog([]registry.RawInstance{
		{ServiceName: "imaging", ID: "imaging-1", Address: "10.0.0.3", Port: 9200, Health: pass, ServiceMeta: meta},
		{ServiceName: "imaging", ID: "imaging-hub-1", Address: "10.9.0.3", Port: 9200, Health: pass, Peer: "hub", PeerSite: "hub", ServiceMeta: meta},
		{ServiceName: "imaging", ID: "imaging-b-1", Address: "10.8.0.3", Port: 9200, Health: pass, Peer: "site-b", PeerSite: "site-b", ServiceMeta: meta},
	})
	mesh := ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: trustDomain, Site: "site-a", Residency: allowAll{}})
	res := translate.Translate(mesh, &ir.Proxy{ID: "x", Kind: wire.ProxyProxyless}, nil)
	if err := res.Validate(); err != nil {
		t.Fatal(err)
	}
	var cla *endpointv3.ClusterLoadAssignment
	for _, r := range res.Endpoints {
		if c := r.(*endpointv3.ClusterLoadAssignment); c.GetClusterName() == "imaging" {
			cla = c
		}
	}
	if cla == nil || len(cla.GetEndpoints()) != 3 {
		t.Fatalf("imaging assignment %v", cla)
	}
	prio := map[string]uint32{}
	for _, lle := range cla.GetEndpoints() {
		prio[lle.GetLocality().GetSubZone()] = lle.GetPriority()
	}
	if prio[""] != 0 || prio["hub"] != 1 || prio["site-b"] != 1 {
		t.Fatalf("priorities by site %v: want local 0, other sites 1", prio)
	}
}

// The operator orders other sites with a MeshDestination's locality
// failover (like a Consul sameness group): this site first always, then
// the listed sites in order, then any other.
func TestOperatorOrdersOtherSites(t *testing.T) {
	meta := map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false"}
	prio := imagingPriorities(t, []registry.RawInstance{
		{ServiceName: "imaging", ID: "imaging-1", Address: "10.0.0.3", Port: 9200, ServiceMeta: meta},
		{ServiceName: "imaging", ID: "imaging-hub-1", Address: "10.9.0.3", Port: 9200, Peer: "hub", PeerSite: "hub", ServiceMeta: meta},
		{ServiceName: "imaging", ID: "imaging-b-1", Address: "10.8.0.3", Port: 9200, Peer: "site-b", PeerSite: "site-b", ServiceMeta: meta},
		{ServiceName: "imaging", ID: "imaging-c-1", Address: "10.7.0.3", Port: 9200, Peer: "site-c", PeerSite: "site-c", ServiceMeta: meta},
	}, []ir.Locality{{Site: "site-b"}, {Site: "hub"}})
	want := map[string]uint32{"": 0, "site-b": 1, "hub": 2, "site-c": 3}
	for site, p := range want {
		if prio[site] != p {
			t.Fatalf("priorities by site %v, want %v", prio, want)
		}
	}
}

// A site-only entry ({site: hub}, as an edge site's operator writes it)
// takes all of that site's instances whatever region and zone they
// declare: the operator knows other sites by name, not by their regions.
func TestSiteOnlyEntriesMatchAnyRegion(t *testing.T) {
	withLoc := func(region, zone string) map[string]string {
		return map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false",
			"medmesh-region": region, "medmesh-zone": zone}
	}
	prio := imagingPriorities(t, []registry.RawInstance{
		{ServiceName: "imaging", ID: "imaging-1", Address: "10.0.0.3", Port: 9200, ServiceMeta: withLoc("east", "east-a")},
		{ServiceName: "imaging", ID: "imaging-hub-1", Address: "10.9.0.3", Port: 9200, Peer: "hub", PeerSite: "hub", ServiceMeta: withLoc("central", "central-a")},
		{ServiceName: "imaging", ID: "imaging-hub-2", Address: "10.9.0.4", Port: 9200, Peer: "hub", PeerSite: "hub", ServiceMeta: withLoc("central", "central-b")},
		{ServiceName: "imaging", ID: "imaging-north-1", Address: "10.8.0.3", Port: 9200, Peer: "north", PeerSite: "north", ServiceMeta: withLoc("north", "")},
		// In region north too: {site: north} names a site, not a region.
		{ServiceName: "imaging", ID: "imaging-south-1", Address: "10.7.0.3", Port: 9200, Peer: "south", PeerSite: "south", ServiceMeta: withLoc("north", "")},
	}, []ir.Locality{{Site: "hub"}, {Site: "north"}})
	want := map[string]uint32{"": 0, "hub": 1, "north": 2, "south": 3}
	for site, p := range want {
		if prio[site] != p {
			t.Fatalf("priorities by site %v, want %v", prio, want)
		}
	}
}

// imagingPriorities builds site-a's mesh from the instances (every other
// site routed) with the failover order for imaging, and returns the
// priority of imaging's endpoints by site; it fails the test when two
// localities of one site get different priorities.
func imagingPriorities(t *testing.T, raw []registry.RawInstance, failover []ir.Locality) map[string]uint32 {
	t.Helper()
	for i := range raw {
		raw[i].Health = registry.HealthPassing
	}
	cat, _ := registry.BuildCatalog(raw)
	pol := &ir.Policies{Destinations: []ir.DestinationPolicy{{Service: "imaging", Failover: failover}}}
	mesh := ir.Build(ir.Inputs{Catalog: cat, Policies: pol, Defaults: ir.DefaultDefaults(), TrustDomain: trustDomain,
		Site: "site-a", Residency: allowAll{}})
	res := translate.Translate(mesh, &ir.Proxy{ID: "x", Kind: wire.ProxyProxyless}, nil)
	if err := res.Validate(); err != nil {
		t.Fatal(err)
	}
	prio := map[string]uint32{}
	for _, r := range res.Endpoints {
		if c := r.(*endpointv3.ClusterLoadAssignment); c.GetClusterName() == "imaging" {
			for _, lle := range c.GetEndpoints() {
				site := lle.GetLocality().GetSubZone()
				if p, ok := prio[site]; ok && p != lle.GetPriority() {
					t.Fatalf("site %q has localities at priorities %d and %d", site, p, lle.GetPriority())
				}
				prio[site] = lle.GetPriority()
			}
		}
	}
	return prio
}
