package ir_test

import (
	"testing"
	"time"

	"medmesh/controlplane/ir"
	"medmesh/registry"
)

func policyCatalog(t *testing.T) *registry.Catalog {
	t.Helper()
	cat, err := registry.ParseCatalogFile("c.yaml", []byte(`
services:
- name: emr
  kind: emr
  instances:
  - {id: emr-1, address: 10.0.0.1, port: 80, meta: {version: v1, track: stable}, locality: {region: north}}
  - {id: emr-2, address: 10.0.0.2, port: 80, meta: {version: v2}, locality: {region: south}}
  - {id: emr-3, address: 10.0.0.3, port: 80, meta: {version: v2}, health: critical}
- name: his
  kind: his
  instances:
  - {id: his-1, address: 10.0.1.1, port: 80}
`))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// TestBuildPoliciesSubsetsAndDefaults: subsets hold only routable
// instances whose meta match every pair; a rule without a timeout keeps
// the service's; retry overrides replace only what they name; a route
// in one service can target another service's subset; destination
// policies replace the defaults they name.
func TestBuildPoliciesSubsetsAndDefaults(t *testing.T) {
	cat := policyCatalog(t)
	five := 5 * time.Second
	m := ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local", Policies: &ir.Policies{
		Routes: []ir.RoutePolicy{{Service: "his", Rules: []ir.RoutePolicyRule{{
			Name: "to-emr-v2",
			Destinations: []ir.Destination{
				{Service: "emr", Subset: map[string]string{"version": "v2"}, Weight: 3},
				{Service: "emr", Subset: map[string]string{"version": "v1", "track": "stable"}, Weight: 1},
				{Service: "emr", Subset: map[string]string{"version": "v3"}, Weight: 0},
			},
			Retry: &ir.RetryOverride{Attempts: 4, PerTryTimeout: &five},
		}}}},
		Destinations: []ir.DestinationPolicy{{Service: "emr", ConnectTimeout: &five,
			Failover: []ir.Locality{{Region: "south"}}}},
	}})
	emr, _ := m.Service("emr")
	his, _ := m.Service("his")
	if len(emr.Policy.Subsets) != 2 {
		t.Fatalf("emr subsets %+v: want v2 and v1+stable (the zero-weight v3 makes none)", emr.Policy.Subsets)
	}
	byName := map[string]ir.Subset{}
	for _, s := range emr.Policy.Subsets {
		byName[s.Cluster] = s
	}
	v2 := byName["emr|version=v2"]
	if len(v2.Localities) != 1 || len(v2.Localities[0].Endpoints) != 1 || v2.Localities[0].Endpoints[0].InstanceID != "emr-2" {
		t.Fatalf("v2 subset %+v: want emr-2 only (emr-3 is critical)", v2.Localities)
	}
	if s := byName["emr|track=stable,version=v1"]; len(s.Localities) != 1 || s.Localities[0].Endpoints[0].InstanceID != "emr-1" {
		t.Fatalf("v1+stable subset %+v", s)
	}
	r := his.Policy.Rules[0]
	if len(r.Clusters) != 2 || r.Clusters[0].Cluster != "emr|version=v2" || r.Clusters[0].Weight != 3 {
		t.Fatalf("clusters %+v", r.Clusters)
	}
	if r.Timeout != his.Route.Timeout || r.Retry.Attempts != 4 || r.Retry.PerTryTimeout != five ||
		r.Retry.BackoffBase != his.Route.Retry.BackoffBase || len(r.Retry.RetryOn) != len(his.Route.Retry.RetryOn) {
		t.Fatalf("rule settings %+v: want the service's defaults except the retry attempts and per-try timeout", r)
	}
	if emr.ConnectTimeout != five || len(emr.Policy.Failover) != 1 {
		t.Fatalf("destination policy not applied: %v %+v", emr.ConnectTimeout, emr.Policy.Failover)
	}
	if ir.Priority(emr.Policy.Failover, ir.Locality{Region: "south"}) != 0 ||
		ir.Priority(emr.Policy.Failover, ir.Locality{Region: "north"}) != 1 {
		t.Fatal("failover priorities")
	}
}

// A failover entry matches a locality when every field it gives is the
// locality's: a site alone takes the whole site in any region or zone, a
// region keeps its meaning, and an entry naming neither region nor site
// (which validation refuses) takes nothing rather than everything.
func TestPriorityMatching(t *testing.T) {
	failover := []ir.Locality{
		{Region: "north", Zone: "north-a"},
		{Site: "hub"},
		{Region: "north", Site: "clinic"},
		{Region: "south"},
	}
	for _, c := range []struct {
		loc  ir.Locality
		want uint32
	}{
		{ir.Locality{Region: "north", Zone: "north-a", Site: "hub"}, 0},
		{ir.Locality{Region: "central", Zone: "central-b", Site: "hub"}, 1},
		{ir.Locality{Site: "hub"}, 1},
		{ir.Locality{Region: "north", Zone: "north-b", Site: "clinic"}, 2},
		{ir.Locality{Region: "east", Site: "clinic"}, 4},
		{ir.Locality{Region: "south", Zone: "south-a", Site: "ward"}, 3},
		{ir.Locality{Region: "north"}, 4},
		{ir.Locality{}, 4},
	} {
		if got := ir.Priority(failover, c.loc); got != c.want {
			t.Errorf("Priority(%+v) = %d, want %d", c.loc, got, c.want)
		}
	}
	if got := ir.Priority([]ir.Locality{{}, {Zone: "north-a"}}, ir.Locality{Region: "north", Zone: "north-a"}); got != 2 {
		t.Errorf("entries naming neither region nor site matched (priority %d)", got)
	}
}
