package integration

import (
	"context"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"

	"medmesh/internal/simproxy"
)

// TestRestartIsNotAPushStorm: a control plane restarted on the same
// Consul catalog serves the same versions. A delta proxy that reconnects
// naming what it holds (initial_resource_versions) is sent no resource
// at all, of any type, until something really changes; a SotW proxy
// naming its versions is answered with the very same version strings,
// and no endpoint assignment.
func TestRestartIsNotAPushStorm(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	hospital(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()

	cp := startControlPlane(t, consulSource(consul))
	delta := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Delta: true, Validate: validateAll})
	sotw := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "his-1", Cluster: "his", Validate: validateAll})
	for _, p := range []*simproxy.Proxy{delta, sotw} {
		if err := p.Wait(ctx, fullConfig("emr", "his", "imaging")); err != nil {
			t.Fatal(err)
		}
	}
	types := []string{resource.ClusterType, resource.ListenerType, resource.RouteType, resource.EndpointType}
	// SotW versions arrive with the responses; wait until each is set.
	if err := sotw.Wait(ctx, func(simproxy.State) bool {
		for _, typ := range types {
			if sotw.Version(typ) == "" {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{}
	for _, typ := range types {
		versions[typ] = sotw.Version(typ)
	}
	heldDelta, heldSotW := delta.Held(), sotw.Held()
	cp.stop(t)

	// The new control plane: the proxies reconnect at once, before it has
	// read Consul, as a fleet does.
	cp2 := startControlPlane(t, consulSource(consul))
	delta2 := startSimProxy(t, cp2.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Delta: true,
		Validate: validateAll, Resume: heldDelta})
	sotw2 := startSimProxy(t, cp2.xdsAddr(), simproxy.Options{NodeID: "his-1", Cluster: "his",
		Validate: validateAll, Resume: heldSotW})

	// SotW: the endpoint cache answers the resumed subscription with the
	// version alone. (go-control-plane's snapshot cache answers listeners,
	// clusters and routes only if the proxy asked after the first round,
	// and then re-sends them at the same version: SotW has no way to say
	// which resources a new stream holds.)
	if err := sotw2.Wait(ctx, func(simproxy.State) bool { return sotw2.Received()[resource.EndpointType].Responses > 0 }); err != nil {
		t.Fatalf("resumed SotW proxy's endpoints not answered: %v", err)
	}
	if n := sotw2.Received()[resource.EndpointType].Resources; n != 0 {
		t.Errorf("SotW proxy was sent %d endpoint assignments it held", n)
	}

	// A real change afterwards is the marker: once it arrives, anything
	// the first rounds re-sent has arrived before it.
	setHealth(t, c, "imaging-2", api.HealthPassing)
	for _, p := range []*simproxy.Proxy{delta2, sotw2} {
		if err := p.Wait(ctx, func(s simproxy.State) bool { return endpointCount(s, "imaging") == 2 }); err != nil {
			t.Fatal(err)
		}
	}
	for typ, r := range delta2.Received() {
		want := 0
		if typ == resource.EndpointType {
			want = 1 // imaging's new assignment
		}
		if r.Resources != want {
			t.Errorf("delta proxy was sent %d %s resources after the restart, want %d", r.Resources, typ, want)
		}
	}
	if n := sotw2.Received()[resource.EndpointType].Resources; n != 1 {
		t.Errorf("SotW proxy was sent %d endpoint assignments, want imaging's alone", n)
	}
	for _, typ := range types {
		if typ == resource.EndpointType {
			continue // changed on purpose
		}
		if got := sotw2.Version(typ); got != versions[typ] {
			t.Errorf("SotW %s version after the restart %q, before %q", typ, got, versions[typ])
		}
	}
	t.Logf("after the restart the SotW proxy was sent %v", sotw2.Received())
	for _, p := range []*simproxy.Proxy{delta2, sotw2} {
		if st := p.State(); len(st.NACKs) > 0 {
			t.Errorf("NACKs: %v", st.NACKs)
		}
		if err := p.Wait(ctx, fullConfig("emr", "his", "imaging")); err != nil {
			t.Error(err)
		}
	}
}
