package xds

import (
	"context"
	"slices"
	"sort"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
	"medmesh/registry"
)

// scopedMesh: emr is PHI, labs and nurse are not; mTLS on, so PHI
// default-deny is in force. emrHealth is emr-1's health.
func scopedMesh(t *testing.T, emrHealth registry.Health, intentions ...registry.Intention) *ir.Mesh {
	t.Helper()
	raw := []registry.RawInstance{
		{ServiceName: "emr", ID: "emr-1", Address: "10.0.0.1", Port: 9000, Health: emrHealth,
			ServiceMeta: map[string]string{registry.MetaKind: "emr"}},
		{ServiceName: "emr", ID: "emr-2", Address: "10.0.0.2", Port: 9000, Health: registry.HealthPassing,
			ServiceMeta: map[string]string{registry.MetaKind: "emr"}},
		{ServiceName: "labs", ID: "labs-1", Address: "10.0.0.3", Port: 9001, Health: registry.HealthPassing},
		{ServiceName: "nurse", ID: "nurse-1", Address: "10.0.0.4", Port: 9002, Health: registry.HealthPassing},
		{ServiceName: "nurse", ID: "nurse-2", Address: "10.0.0.5", Port: 9002, Health: registry.HealthPassing},
	}
	cat, _ := registry.BuildCatalog(raw)
	cat.Intentions = intentions
	return ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local",
		MTLS: true, BundlePEM: []byte("bundle")})
}

func scopedRound(m *ir.Mesh) Round {
	return Round{Mesh: m, Proxies: []RoundProxy{
		roundProxy(m, "nurse-1", wire.ProxyEnvoy), roundProxy(m, "nurse-2", wire.ProxyEnvoy),
		roundProxy(m, "labs-1", wire.ProxyEnvoy),
		{Proxy: ir.Proxy{ID: "nurse-app", Service: "nurse", Kind: wire.ProxyProxyless}},
	}}
}

func publishedNames(t *testing.T, s *Server, id, typ string) []string {
	t.Helper()
	pb, ok := s.PublishedFor(id)
	if !ok {
		t.Fatalf("%s: nothing published", id)
	}
	var out []string
	for name := range pb.snapshot.GetResources(typ) {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// An intention added or removed changes exactly the scope of the services
// it names as callers: their proxies gain or lose the service (cluster,
// virtual host), everyone else's snapshot stays as it was; proxies of one
// service share one set; and an endpoint change leaves every scope alone.
func TestPublishScopedByAuthorization(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	if _, err := s.Publish(ctx, scopedRound(scopedMesh(t, registry.HealthPassing))); err != nil {
		t.Fatal(err)
	}
	// emr is PHI and no intention names nurse: not sent.
	if got, want := publishedNames(t, s, "nurse-1", resource.ClusterType), []string{"inbound|extproc", "inbound|local_app", "labs", "nurse"}; !slices.Equal(got, want) {
		t.Fatalf("nurse-1 clusters %v, want %v", got, want)
	}
	n1, _ := s.PublishedFor("nurse-1")
	n2, _ := s.PublishedFor("nurse-2")
	if n1.snapshot.layers[resource.ClusterType].shared != n2.snapshot.layers[resource.ClusterType].shared {
		t.Error("two proxies of one service do not share their clusters")
	}
	if l := publishedNames(t, s, "nurse-app", resource.ListenerType); !slices.Contains(l, "emr") {
		t.Errorf("the proxyless client has no out-of-scope listener for emr: %v", l)
	}
	labsBefore, _ := s.PublishedFor("labs-1")

	// nurse may now call emr: nurse's proxies gain it, labs's do not.
	allow := registry.Intention{Source: "nurse", Destination: "emr", Allow: true}
	if _, err := s.Publish(ctx, scopedRound(scopedMesh(t, registry.HealthPassing, allow))); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"nurse-1", "nurse-2"} {
		if got := publishedNames(t, s, id, resource.ClusterType); !slices.Contains(got, "emr") {
			t.Errorf("%s: clusters %v after the intention, want emr among them", id, got)
		}
	}
	if _, scope, _ := s.ScopeFor("nurse-1"); !slices.Equal(scope, []string{"emr", "labs", "nurse"}) {
		t.Errorf("nurse-1's scope %v", scope)
	}
	labsAfter, _ := s.PublishedFor("labs-1")
	if !equalVersions(labsBefore.Versions, labsAfter.Versions) {
		t.Errorf("labs-1 was pushed for an intention that does not concern it: %v -> %v", labsBefore.Versions, labsAfter.Versions)
	}
	if got := publishedNames(t, s, "labs-1", resource.ClusterType); slices.Contains(got, "emr") {
		t.Errorf("labs-1 got emr: %v", got)
	}

	// An endpoint change reuses every caller set and pushes no snapshot.
	sets := map[string]*callerSet{}
	for k, cs := range s.pub.scopes.callers {
		sets[k] = cs
	}
	before := counter(t, s)
	if _, err := s.Publish(ctx, scopedRound(scopedMesh(t, registry.HealthCritical, allow))); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, s); got != before {
		t.Errorf("an endpoint change set %v snapshots", got-before)
	}
	for k, cs := range s.pub.scopes.callers {
		if sets[k] != cs {
			t.Errorf("caller set %s rebuilt for an endpoint change", k)
		}
	}

	// The intention removed: emr leaves nurse's proxies again.
	if _, err := s.Publish(ctx, scopedRound(scopedMesh(t, registry.HealthPassing))); err != nil {
		t.Fatal(err)
	}
	if got := publishedNames(t, s, "nurse-2", resource.ClusterType); slices.Contains(got, "emr") {
		t.Errorf("nurse-2 kept emr after the intention was removed: %v", got)
	}
}

// Callers whose scopes hold the same pieces share one set, built once:
// nurse and labs (neither PHI, no intention for emr) may both call labs
// and nurse. A caller whose scope then differs gets its own.
func TestEqualScopesShareOneSet(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	if _, err := s.Publish(ctx, scopedRound(scopedMesh(t, registry.HealthPassing))); err != nil {
		t.Fatal(err)
	}
	nurse, labs := string(wire.ProxyEnvoy)+"|nurse", string(wire.ProxyEnvoy)+"|labs"
	cs := s.pub.scopes.callers
	if cs[nurse] == nil || cs[labs] == nil || cs[nurse].shared != cs[labs].shared {
		t.Fatalf("nurse and labs have equal scopes but not one shared set: %+v / %+v", cs[nurse], cs[labs])
	}
	allow := registry.Intention{Source: "nurse", Destination: "emr", Allow: true}
	if _, err := s.Publish(ctx, scopedRound(scopedMesh(t, registry.HealthPassing, allow))); err != nil {
		t.Fatal(err)
	}
	if cs[nurse].shared == cs[labs].shared {
		t.Fatal("nurse may now call emr but still shares labs' set")
	}
	if got := publishedNames(t, s, "labs-1", resource.ClusterType); slices.Contains(got, "emr") {
		t.Errorf("labs-1 got emr through a shared set: %v", got)
	}
	if got := publishedNames(t, s, "nurse-1", resource.ClusterType); !slices.Contains(got, "emr") {
		t.Errorf("nurse-1 lacks emr: %v", got)
	}
}
