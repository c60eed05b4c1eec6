package registry_test

import (
	"reflect"
	"slices"
	"testing"

	"medmesh/registry"
)

func raw(svc, id, addr string, port int, meta map[string]string) registry.RawInstance {
	return registry.RawInstance{
		ServiceName: svc, ID: id, Node: "node-" + id, Address: addr, Port: port,
		Health: registry.HealthPassing, Weight: 1, ServiceMeta: meta,
	}
}

func serviceNames(c *registry.Catalog) []string {
	var out []string
	for _, s := range c.Services {
		out = append(out, s.Name)
	}
	return out
}

func instanceIDs(s *registry.Service) []string {
	var out []string
	for _, in := range s.Instances {
		out = append(out, in.ID)
	}
	return out
}

func TestBuildCatalogOrdering(t *testing.T) {
	in := []registry.RawInstance{
		raw("his", "his-2", "10.0.0.4", 8090, nil),
		raw("emr", "emr-3", "10.0.0.3", 8080, nil),
		raw("his", "his-1", "10.0.0.5", 8090, nil),
		raw("emr", "emr-1", "10.0.0.1", 8080, nil),
		raw("emr", "emr-2", "10.0.0.2", 8080, nil),
	}
	before := slices.Clone(in)
	cat, warns := registry.BuildCatalog(in)
	if len(warns) != 0 {
		t.Errorf("warnings %v", warns)
	}
	if got := serviceNames(cat); !slices.Equal(got, []string{"emr", "his"}) {
		t.Errorf("services %v, want sorted by name", got)
	}
	if got := instanceIDs(&cat.Services[0]); !slices.Equal(got, []string{"emr-1", "emr-2", "emr-3"}) {
		t.Errorf("emr instances %v, want sorted by ID", got)
	}
	if !reflect.DeepEqual(in, before) {
		t.Error("BuildCatalog reordered its input; sources may reuse it")
	}
	// Service() relies on the sort (binary search).
	if s, ok := cat.Service("his"); !ok || s.Name != "his" {
		t.Errorf("Service(his) = %v, %t", s, ok)
	}
	if _, ok := cat.Service("pharmacy"); ok {
		t.Error("Service found a service that does not exist")
	}
	if s, inst, ok := cat.Instance("his-1"); !ok || s.Name != "his" || inst.Address != "10.0.0.5" {
		t.Errorf("Instance(his-1) = %v %v %t", s, inst, ok)
	}
	if n := cat.InstanceCount(); n != 5 {
		t.Errorf("InstanceCount = %d, want 5", n)
	}

	reversed := slices.Clone(in)
	slices.Reverse(reversed)
	again, _ := registry.BuildCatalog(reversed)
	if !reflect.DeepEqual(cat, again) {
		t.Error("input order changed the catalog")
	}
}

// Service-level settings come from the lowest instance ID; an instance that
// disagrees (mid rolling upgrade) is still served, and the operator is told.
func TestBuildCatalogDisagreeingMeta(t *testing.T) {
	cat, warns := registry.BuildCatalog([]registry.RawInstance{
		raw("emr", "emr-2", "10.0.0.2", 9001, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}),
		raw("emr", "emr-1", "10.0.0.1", 8080, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "http"}),
		raw("emr", "emr-3", "10.0.0.3", 8080, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "http"}),
	})
	emr := cat.Services[0]
	if emr.Protocol != registry.ProtocolHTTP || emr.Kind != registry.KindEMR || !emr.PHI {
		t.Errorf("service settings %+v, want emr-1's (emr, http, phi)", emr)
	}
	if len(emr.Instances) != 3 {
		t.Errorf("instances %v: the disagreeing one must still be served", instanceIDs(&emr))
	}
	if len(warns) != 1 {
		t.Fatalf("warnings %v, want one for emr-2", warns)
	}
	w := warns[0]
	if w.Service != "emr" || w.Instance != "emr-2" || w.Value != "emr/grpc/phi=true/round_robin" || w.Used != "emr/http/phi=true/round_robin" {
		t.Errorf("warning %+v", w)
	}
}

func TestBuildCatalogPropagatesMetaWarnings(t *testing.T) {
	cat, warns := registry.BuildCatalog([]registry.RawInstance{
		raw("emr", "emr-1", "10.0.0.1", 8080, map[string]string{"medmesh-lb": "fastest"}),
	})
	if len(cat.Services) != 1 || len(cat.Services[0].Instances) != 1 {
		t.Fatal("an instance with bad meta was dropped; a typo must not take a clinical service offline")
	}
	if len(warns) != 1 || warns[0].Service != "emr" || warns[0].Instance != "emr-1" || warns[0].Key != "medmesh-lb" {
		t.Errorf("warnings %+v", warns)
	}
}

func TestBuildCatalogInstances(t *testing.T) {
	weighted := func(id string, w int, h registry.Health) registry.RawInstance {
		r := raw("emr", id, "10.0.0.1", 8080, map[string]string{"medmesh-app-port": "8081"})
		r.Weight, r.Health = w, h
		r.NodeMeta = map[string]string{"medmesh-region": "north", "medmesh-zone": "north-a"}
		return r
	}
	cat, _ := registry.BuildCatalog([]registry.RawInstance{
		weighted("a", 5, registry.HealthPassing),
		weighted("b", 0, registry.HealthWarning),
		weighted("c", -3, registry.HealthCritical),
	})
	got := cat.Services[0].Instances
	want := []registry.Instance{
		{ID: "a", Node: "node-a", Address: "10.0.0.1", Port: 8080, Health: registry.HealthPassing, Weight: 5,
			Locality: registry.Locality{Region: "north", Zone: "north-a"}, AppPort: 8081},
		// Unset and negative weights mean "equal share", not "no traffic".
		{ID: "b", Node: "node-b", Address: "10.0.0.1", Port: 8080, Health: registry.HealthWarning, Weight: 1,
			Locality: registry.Locality{Region: "north", Zone: "north-a"}, AppPort: 8081},
		// Critical instances stay in the catalog (status pages show them);
		// ir leaves them out of endpoints.
		{ID: "c", Node: "node-c", Address: "10.0.0.1", Port: 8080, Health: registry.HealthCritical, Weight: 1,
			Locality: registry.Locality{Region: "north", Zone: "north-a"}, AppPort: 8081},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("instances\n got %+v\nwant %+v", got, want)
	}
}

func TestBuildCatalogEmpty(t *testing.T) {
	cat, warns := registry.BuildCatalog(nil)
	if cat == nil || len(cat.Services) != 0 || len(warns) != 0 {
		t.Errorf("BuildCatalog(nil) = %+v, %v", cat, warns)
	}
	if cat.InstanceCount() != 0 {
		t.Error("empty catalog has instances")
	}
}

// Consul service IDs are unique per agent, not per datacenter: two nodes
// may both register "emr" (the ID defaults to the service name). The
// catalog must still come out the same whatever order Consul lists them
// in, or its hash, and every proxy's config version, would flap.
func TestBuildCatalogDuplicateIDsAcrossNodes(t *testing.T) {
	a := raw("emr", "emr", "10.0.0.1", 8080, nil)
	a.Node = "node-a"
	b := raw("emr", "emr", "10.0.0.2", 8080, nil)
	b.Node = "node-b"
	c1, _ := registry.BuildCatalog([]registry.RawInstance{a, b})
	c2, _ := registry.BuildCatalog([]registry.RawInstance{b, a})
	if !reflect.DeepEqual(c1, c2) || c1.Hash() != c2.Hash() {
		t.Errorf("instance order depends on input order:\n%+v\n%+v", c1.Services[0].Instances, c2.Services[0].Instances)
	}
	if n := len(c1.Services[0].Instances); n != 2 {
		t.Errorf("%d instances, want both", n)
	}
}
