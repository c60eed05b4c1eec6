package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"medmesh/internal/simproxy"
)

// validateAll is the hook every simulated proxy runs: Envoy's own
// generated validation of every resource it receives.
func validateAll(_ string, m proto.Message) error {
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		return fmt.Errorf("%T has no ValidateAll", m)
	}
	return v.ValidateAll()
}

// hospital registers EMR (HTTP, 3 instances in two zones, one warning),
// HIS (gRPC, 2) and imaging (HTTP, 2, one critical).
func hospital(t *testing.T, c *api.Client) {
	emr := map[string]string{"medmesh-kind": "emr", "medmesh-lb": "least_request"}
	register(t, c, "emr", "emr-1", 9101, withZone(emr, "a"), api.HealthPassing)
	register(t, c, "emr", "emr-2", 9102, withZone(emr, "b"), api.HealthPassing)
	register(t, c, "emr", "emr-3", 9103, withZone(emr, "b"), api.HealthWarning)
	his := map[string]string{"medmesh-kind": "his", "medmesh-protocol": "grpc", "medmesh-lb": "ring_hash"}
	register(t, c, "his", "his-1", 9201, his, api.HealthPassing)
	register(t, c, "his", "his-2", 9202, his, api.HealthPassing)
	img := map[string]string{"medmesh-kind": "imaging", "medmesh-lb": "maglev"}
	register(t, c, "imaging", "imaging-1", 9301, img, api.HealthPassing)
	register(t, c, "imaging", "imaging-2", 9302, img, api.HealthCritical)
}

func withZone(m map[string]string, zone string) map[string]string {
	out := map[string]string{"medmesh-zone": zone, "medmesh-region": "north"}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// fullConfig holds when the proxy has every cluster and its endpoints.
func fullConfig(services ...string) func(simproxy.State) bool {
	return func(s simproxy.State) bool {
		for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
			for _, svc := range services {
				if _, ok := s.Resources[typ][svc]; !ok {
					return false
				}
			}
		}
		return len(s.Resources[resource.ListenerType]) > 0 && len(s.Resources[resource.RouteType]) > 0
	}
}

func endpointCount(s simproxy.State, svc string) int {
	cla, ok := s.Resources[resource.EndpointType][svc].(*endpointv3.ClusterLoadAssignment)
	if !ok {
		return -1
	}
	n := 0
	for _, l := range cla.GetEndpoints() {
		n += len(l.GetLbEndpoints())
	}
	return n
}

// TestEnvoySotWAndDeltaReceiveSameValidConfig: every resource a proxy
// receives passes ValidateAll, and a delta and a state-of-the-world client
// for the same instance hold exactly the same resources.
func TestEnvoySotWAndDeltaReceiveSameValidConfig(t *testing.T) {
	consul := startConsul(t, true)
	hospital(t, consul.Client())
	cp := startControlPlane(t, consulSource(consul))

	sotw := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll})
	delta := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1-delta", Cluster: "emr", Delta: true, Validate: validateAll})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, p := range []*simproxy.Proxy{sotw, delta} {
		if err := p.Wait(ctx, fullConfig("emr", "his", "imaging")); err != nil {
			t.Fatal(err)
		}
	}
	a, b := sotw.State(), delta.State()
	if len(a.NACKs)+len(b.NACKs) > 0 {
		t.Fatalf("NACKs: sotw %v delta %v", a.NACKs, b.NACKs)
	}
	// The delta client's node id is not an instance, so it has no inbound
	// side; compare the shared (outbound) resources, which must be equal.
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.RouteType, resource.ListenerType} {
		for name, ra := range a.Resources[typ] {
			if strings.HasPrefix(name, "inbound") {
				continue
			}
			rb, ok := b.Resources[typ][name]
			if !ok {
				t.Errorf("%s %q: sent over SotW, missing over delta", typ, name)
				continue
			}
			if !proto.Equal(ra, rb) {
				t.Errorf("%s %q differs between SotW and delta", typ, name)
			}
		}
		for name := range b.Resources[typ] {
			if _, ok := a.Resources[typ][name]; !ok {
				t.Errorf("%s %q: sent over delta, missing over SotW", typ, name)
			}
		}
	}
	// The instance's own proxy has its inbound side.
	if _, ok := a.Resources[resource.ListenerType]["inbound"]; !ok {
		t.Errorf("emr-1 has no inbound listener: %v", a.Names(resource.ListenerType))
	}
	// Critical instances are never sent; warning ones are, as DEGRADED.
	if n := endpointCount(a, "imaging"); n != 1 {
		t.Errorf("imaging endpoints = %d, want 1 (imaging-2 is critical)", n)
	}
	if n := endpointCount(a, "emr"); n != 3 {
		t.Errorf("emr endpoints = %d, want 3", n)
	}
	lb := a.Resources[resource.ClusterType]["his"].(*clusterv3.Cluster).GetLbPolicy()
	if lb != clusterv3.Cluster_RING_HASH {
		t.Errorf("his lb = %v, want RING_HASH from medmesh-lb meta", lb)
	}

	// A change reaches both, and still validates.
	setHealth(t, consul.Client(), "imaging-2", api.HealthPassing)
	for _, p := range []*simproxy.Proxy{sotw, delta} {
		if err := p.Wait(ctx, func(s simproxy.State) bool { return endpointCount(s, "imaging") == 2 }); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnknownMetaServedWithDefault: `medmesh-lb=fastest` serves the
// instance with round robin and logs one warning naming service, instance
// and key.
func TestUnknownMetaServedWithDefault(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	register(t, c, "labs", "labs-1", 9401, map[string]string{"medmesh-lb": "fastest"}, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul))
	p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "client", Validate: validateAll})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := p.Wait(ctx, fullConfig("labs")); err != nil {
		t.Fatal(err)
	}
	if n := endpointCount(p.State(), "labs"); n != 1 {
		t.Fatalf("labs endpoints = %d, want 1", n)
	}
	if lb := p.State().Resources[resource.ClusterType]["labs"].(*clusterv3.Cluster).GetLbPolicy(); lb != clusterv3.Cluster_ROUND_ROBIN {
		t.Fatalf("lb = %v, want ROUND_ROBIN", lb)
	}
	// Another change must not repeat the warning.
	register(t, c, "labs", "labs-2", 9402, map[string]string{"medmesh-lb": "fastest"}, api.HealthPassing)
	if err := p.Wait(ctx, func(s simproxy.State) bool { return endpointCount(s, "labs") == 2 }); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	for _, line := range strings.Split(cp.logs.String(), "\n") {
		if strings.Contains(line, "ignoring service meta value") {
			warnings = append(warnings, line)
		}
	}
	sort.Strings(warnings)
	if len(warnings) != 2 {
		t.Fatalf("want one warning per instance, got %d:\n%s", len(warnings), strings.Join(warnings, "\n"))
	}
	for i, id := range []string{"labs-1", "labs-2"} {
		for _, want := range []string{"service=labs", "instance=" + id, "key=medmesh-lb", "value=fastest", "using=round_robin"} {
			if !strings.Contains(warnings[i], want) {
				t.Errorf("warning %q lacks %q", warnings[i], want)
			}
		}
	}
}

// TestNoPushWithoutChange: a registry event that changes nothing a proxy
// sees (same registration written again) sends no xDS response; a
// disconnected proxy's snapshot is dropped.
func TestNoPushWithoutChange(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	register(t, c, "emr", "emr-1", 9101, nil, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul))
	rec := &countingRecorder{}
	p, disconnect := startSimProxyCancel(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll},
		grpc.WithStreamInterceptor(rec.interceptor()))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := p.Wait(ctx, fullConfig("emr")); err != nil {
		t.Fatal(err)
	}
	// A real change, to know when the control plane has caught up.
	register(t, c, "emr", "emr-2", 9102, nil, api.HealthPassing)
	if err := p.Wait(ctx, func(s simproxy.State) bool { return endpointCount(s, "emr") == 2 }); err != nil {
		t.Fatal(err)
	}
	before := rec.count()
	// The same registration again, and a check output change: Consul's
	// index moves, the mesh does not.
	register(t, c, "emr", "emr-2", 9102, nil, api.HealthPassing)
	if err := c.Agent().UpdateTTL(checkID("emr-1"), "still fine", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	// Then a real change; if the no-op events had caused pushes they
	// would arrive before this one on the ordered stream.
	register(t, c, "labs", "labs-1", 9401, nil, api.HealthPassing)
	if err := p.Wait(ctx, fullConfig("emr", "labs")); err != nil {
		t.Fatal(err)
	}
	// Adding a service changes CDS, EDS (one new assignment), LDS? no: the
	// outbound listener is unchanged; RDS gains a virtual host.
	got := rec.typesSince(before)
	for _, typ := range got {
		if typ == resource.ListenerType {
			t.Errorf("listeners were pushed although they did not change: %v", got)
		}
	}
	if n := countOf(got, resource.EndpointType); n != 1 {
		t.Errorf("endpoint responses after the no-op events and one new service = %d, want 1 (%v)", n, got)
	}

	// Disconnect: the snapshot goes with the proxy.
	code, _ := getStatus(t, cp, "/debug/config?node=emr-1")
	if code != 200 {
		t.Fatalf("/debug/config for a connected proxy = %d", code)
	}
	disconnect()
	eventually(t, "snapshot dropped after disconnect", func() error {
		if code, _ := getStatus(t, cp, "/debug/config?node=emr-1"); code != 404 {
			return fmt.Errorf("/debug/config = %d", code)
		}
		return nil
	})
}

func countOf(types []string, t string) int {
	n := 0
	for _, x := range types {
		if x == t {
			n++
		}
	}
	return n
}
