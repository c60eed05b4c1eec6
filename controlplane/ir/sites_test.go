package ir_test

import (
	"slices"
	"strings"
	"testing"

	"medmesh/controlplane/ir"
	"medmesh/registry"
)

// phiStaysLocal is the default residency rule written in Go: PHI never
// leaves its site; other services may be called anywhere. It counts the
// flows it was asked about.
type phiStaysLocal struct{ asked int }

func (p *phiStaysLocal) Decide(flows []ir.Flow) []ir.FlowDecision {
	out := make([]ir.FlowDecision, len(flows))
	for i, f := range flows {
		p.asked++
		out[i].Allowed = !f.PHI || f.Source.Site == f.Destination.Site
		if !out[i].Allowed {
			out[i].Reasons = []string{f.Destination.Service + " is PHI"}
		}
	}
	return out
}

// onlyFrom allows one caller to reach a non-PHI service elsewhere.
type onlyFrom struct{ caller string }

func (o onlyFrom) Decide(flows []ir.Flow) []ir.FlowDecision {
	out := make([]ir.FlowDecision, len(flows))
	for i, f := range flows {
		out[i].Allowed = f.Source.Service == o.caller
	}
	return out
}

func sitesCatalog(t *testing.T) *registry.Catalog {
	t.Helper()
	pass := registry.HealthPassing
	cat, _ := registry.BuildCatalog([]registry.RawInstance{
		// site-a's own
		{ServiceName: "emr", ID: "emr-1", Address: "10.0.0.1", Port: 9100, Health: pass, ServiceMeta: map[string]string{"medmesh-kind": "emr"}},
		{ServiceName: "nurse-station", ID: "ns-1", Address: "10.0.0.2", Port: 9300, Health: pass},
		{ServiceName: "imaging", ID: "imaging-1", Address: "10.0.0.3", Port: 9200, Health: registry.HealthCritical,
			ServiceMeta: map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false"}},
		// the hub's, imported through peering
		{ServiceName: "emr", ID: "emr-1", Address: "10.9.0.1", Port: 9100, Health: pass, Peer: "hub", PeerSite: "hub",
			ServiceMeta: map[string]string{"medmesh-kind": "emr"}},
		{ServiceName: "imaging", ID: "imaging-hub-1", Address: "10.9.0.3", Port: 9200, Health: pass, Peer: "hub", PeerSite: "hub",
			ServiceMeta: map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false"}},
		{ServiceName: "records", ID: "records-1", Address: "10.9.0.4", Port: 9400, Health: pass, Peer: "hub", PeerSite: "hub",
			ServiceMeta: map[string]string{"medmesh-kind": "his"}},
	})
	return cat
}

// With the default rule, a non-PHI service's instances at the hub are
// routed after the local ones, a PHI service's never are, and a PHI
// service only the hub has is not served here, with a condition naming it.
func TestResidencyRoutesWhatMayLeave(t *testing.T) {
	res := &phiStaysLocal{}
	m := ir.Build(ir.Inputs{Catalog: sitesCatalog(t), Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local",
		Site: "site-a", Residency: res})
	imaging, ok := m.Service("imaging")
	if !ok || len(imaging.Localities) != 1 || !imaging.Localities[0].Remote || imaging.Localities[0].Locality.Site != "hub" {
		t.Fatalf("imaging localities %+v: want the hub's instance only (the local one is critical), remote", imaging.Localities)
	}
	emr, _ := m.Service("emr")
	for _, l := range emr.Localities {
		if l.Remote {
			t.Fatalf("a PHI service was sent the hub's endpoints: %+v", emr.Localities)
		}
	}
	if len(emr.Instances) != 1 || emr.Instances[0].Address != "10.0.0.1" {
		t.Fatalf("emr instances %+v: proxies here front local instances only", emr.Instances)
	}
	if _, ok := m.Service("records"); ok {
		t.Fatal("a PHI service only the hub has is served at site-a")
	}
	if len(m.ResidencyConditions) != 1 || m.ResidencyConditions[0].Service != "records" ||
		!strings.Contains(m.ResidencyConditions[0].Message, "rather than leave") {
		t.Fatalf("conditions %+v", m.ResidencyConditions)
	}
	var emrHub *ir.SiteDecision
	for i := range m.Residency {
		if m.Residency[i].Service == "emr" && m.Residency[i].Site == "hub" {
			emrHub = &m.Residency[i]
		}
	}
	if emrHub == nil || emrHub.Routed || len(emrHub.Denied) != 3 || emrHub.Denied[0].Reasons[0] != "emr is PHI" {
		t.Fatalf("emr at the hub: %+v", emrHub)
	}
	if _, inst, ok := m.Instance("emr-1"); !ok || inst.Address != "10.0.0.1" {
		t.Fatalf("node emr-1 resolves to %+v: an imported instance with the same ID must not", inst)
	}

	// Without a site or a policy no other site's instance is routed.
	m = ir.Build(ir.Inputs{Catalog: sitesCatalog(t), Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local"})
	if s, ok := m.Service("imaging"); !ok || len(s.Localities) != 0 {
		t.Fatalf("imaging without residency: %+v", s)
	}
}

// Endpoints are shared by every caller of a service, so a site is routed
// only when every local caller may reach it.
func TestResidencyRoutesOnlyWhatEveryCallerMay(t *testing.T) {
	m := ir.Build(ir.Inputs{Catalog: sitesCatalog(t), Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local",
		Site: "site-a", Residency: onlyFrom{caller: "nurse-station"}})
	if s, ok := m.Service("imaging"); !ok || len(s.Localities) != 0 {
		t.Fatalf("imaging localities %+v: the hub may not be routed while emr's flow is refused", s.Localities)
	}
}

// allowFlow allows exactly one cross-site flow and denies the rest.
type allowFlow struct{ source, sourceSite, dest string }

func (a allowFlow) Decide(flows []ir.Flow) []ir.FlowDecision {
	out := make([]ir.FlowDecision, len(flows))
	for i, f := range flows {
		out[i].Allowed = f.Source.Site == f.Destination.Site ||
			(f.Source.Service == a.source && f.Source.Site == a.sourceSite && f.Destination.Service == a.dest)
	}
	return out
}

// At the callee, a caller an intention allows is admitted from this site,
// and from another site only where residency allows that flow; a denied
// caller is denied from every site.
func TestCalleeAdmitsOtherSitesByPolicy(t *testing.T) {
	pass := registry.HealthPassing
	cat, _ := registry.BuildCatalog([]registry.RawInstance{
		{ServiceName: "records", ID: "records-1", Address: "10.0.0.1", Port: 9400, Health: pass, ServiceMeta: map[string]string{"medmesh-kind": "his"}},
	})
	cat.PeerSites = []string{"site-a", "site-b"}
	cat.Intentions = []registry.Intention{
		{Source: "nurse-station", Destination: "records", Allow: true},
		{Source: "billing", Destination: "records", Allow: false},
	}
	m := ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local", Site: "hub",
		Residency: allowFlow{source: "nurse-station", sourceSite: "site-a", dest: "records"}})
	rec, _ := m.Service("records")
	id := func(svc, site string) string { return "spiffe://medmesh.local/ns/default/svc/" + svc + "/site/" + site }
	want := []string{id("nurse-station", "hub"), id("nurse-station", "site-a")}
	if !slices.Equal(rec.Authz.Allowed, want) {
		t.Fatalf("allowed %v, want %v", rec.Authz.Allowed, want)
	}
	wantDenied := []string{id("billing", "hub"), id("billing", "site-a"), id("billing", "site-b")}
	if !slices.Equal(rec.Authz.Denied, wantDenied) {
		t.Fatalf("denied %v, want %v", rec.Authz.Denied, wantDenied)
	}
}

// "Any caller" at a site means any caller of this site, and of each peered
// site residency lets call the service: a non-PHI service admits every
// peered site under the default rule, a wildcard intention on a PHI
// service admits this site only.
func TestAnyCallerMeansAllowedSites(t *testing.T) {
	pass := registry.HealthPassing
	cat, _ := registry.BuildCatalog([]registry.RawInstance{
		{ServiceName: "records", ID: "records-1", Address: "10.0.0.1", Port: 9400, Health: pass, ServiceMeta: map[string]string{"medmesh-kind": "his"}},
		{ServiceName: "scheduling", ID: "scheduling-1", Address: "10.0.0.2", Port: 9500, Health: pass},
	})
	cat.PeerSites = []string{"site-a"}
	cat.Intentions = []registry.Intention{{Source: "*", Destination: "records", Allow: true}}
	m := ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local", Site: "hub",
		Residency: &phiStaysLocal{}})
	any := func(site string) string { return "spiffe://medmesh.local/*/site/" + site }
	rec, _ := m.Service("records")
	if !rec.Authz.OthersAllowed || !slices.Equal(rec.Authz.Others, []string{any("hub")}) {
		t.Fatalf("records (PHI, wildcard intention): others %v (allowed %t), want this site only", rec.Authz.Others, rec.Authz.OthersAllowed)
	}
	sch, _ := m.Service("scheduling")
	if !slices.Equal(sch.Authz.Others, []string{any("hub"), any("site-a")}) {
		t.Fatalf("scheduling (non-PHI): others %v, want this site and site-a", sch.Authz.Others)
	}
}
