package translate_test

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/translate"
	"medmesh/registry"
)

// These tests restate, in Go, the few properties of the golden cases that
// the design depends on. Goldens can be regenerated with -update without
// much thought; these cannot, so a regression has to be argued for twice.

func find[T types.Resource](t *testing.T, rs []types.Resource, name string) T {
	t.Helper()
	for _, r := range rs {
		if resourceName(r) == name {
			v, ok := r.(T)
			if !ok {
				t.Fatalf("resource %q is %T", name, r)
			}
			return v
		}
	}
	var zero T
	t.Fatalf("no resource %q among %v", name, names(rs))
	return zero
}

func names(rs []types.Resource) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, resourceName(r))
	}
	return out
}

func has(rs []types.Resource, name string) bool {
	for _, r := range rs {
		if resourceName(r) == name {
			return true
		}
	}
	return false
}

// outboundAction is the route action of service svc in the Envoy outbound
// route table.
func outboundAction(t *testing.T, res *translate.Resources, svc string) *routev3.RouteAction {
	t.Helper()
	rc := find[*routev3.RouteConfiguration](t, res.Routes, wire.OutboundHTTPRoute)
	for _, vh := range rc.GetVirtualHosts() {
		if vh.GetName() == svc {
			return vh.GetRoutes()[0].GetRoute()
		}
	}
	t.Fatalf("no virtual host %q in %s", svc, wire.OutboundHTTPRoute)
	return nil
}

func inboundAction(t *testing.T, res *translate.Resources) *routev3.RouteAction {
	t.Helper()
	rc := find[*routev3.RouteConfiguration](t, res.Routes, translate.InboundRoute)
	return rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
}

func TestEnvoySidecarEndpointsAndInbound(t *testing.T) {
	res := translateCase(t, "envoy-emr-sidecar")
	cla := find[*endpointv3.ClusterLoadAssignment](t, res.Endpoints, "emr")
	status := map[string]corev3.HealthStatus{}
	for _, loc := range cla.GetEndpoints() {
		var sum uint32
		for _, ep := range loc.GetLbEndpoints() {
			status[ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = ep.GetHealthStatus()
			sum += ep.GetLoadBalancingWeight().GetValue()
		}
		// grpc-go drops localities without a weight.
		if got := loc.GetLoadBalancingWeight().GetValue(); got != sum {
			t.Errorf("locality %v weight %d, want the sum of its endpoints %d", loc.GetLocality(), got, sum)
		}
	}
	want := map[string]corev3.HealthStatus{
		"10.1.0.11": corev3.HealthStatus_HEALTHY,
		"10.1.0.12": corev3.HealthStatus_DEGRADED, // warning
		"10.2.0.13": corev3.HealthStatus_HEALTHY,
		// 10.2.0.14 is critical: never sent.
	}
	if len(status) != len(want) {
		t.Errorf("endpoints %v, want %v", status, want)
	}
	for addr, st := range want {
		if status[addr] != st {
			t.Errorf("endpoint %s: status %v, want %v", addr, status[addr], st)
		}
	}
	if n := len(cla.GetEndpoints()); n != 2 {
		t.Errorf("%d localities, want 2 (north, south)", n)
	}

	in := find[*listenerv3.Listener](t, res.Listeners, wire.InboundListener)
	if sa := in.GetAddress().GetSocketAddress(); sa.GetAddress() != "10.1.0.11" || sa.GetPortValue() != 8080 {
		t.Errorf("inbound listener on %s:%d, want the registered 10.1.0.11:8080", sa.GetAddress(), sa.GetPortValue())
	}
	app := find[*clusterv3.Cluster](t, res.Clusters, translate.LocalAppCluster)
	sa := app.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 8081 {
		t.Errorf("local app at %s:%d, want 127.0.0.1:8081 (medmesh-app-port)", sa.GetAddress(), sa.GetPortValue())
	}

	// HTTP services retry only idempotent methods: a medication order must
	// never be sent twice.
	rp := outboundAction(t, res, "emr").GetRetryPolicy()
	if len(rp.GetRetriableRequestHeaders()) == 0 {
		t.Error("emr retry policy does not restrict retries to idempotent methods")
	}
	if got := outboundAction(t, res, "emr").GetTimeout().AsDuration(); got != 15*time.Second {
		t.Errorf("emr timeout %v, want 15s", got)
	}
}

func TestGRPCService(t *testing.T) {
	res := translateCase(t, "envoy-grpc-pharmacy")
	for _, name := range []string{"pharmacy", "lab-results", translate.LocalAppCluster} {
		c := find[*clusterv3.Cluster](t, res.Clusters, name)
		if _, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
			t.Errorf("cluster %q: no HTTP/2 protocol options", name)
		}
	}
	a := outboundAction(t, res, "pharmacy")
	if got := a.GetRetryPolicy().GetRetryOn(); !strings.Contains(got, "unavailable") || strings.Contains(got, "5xx") {
		t.Errorf("gRPC retry_on %q: want gRPC conditions (unavailable), not 5xx", got)
	}
	if len(a.GetRetryPolicy().GetRetriableRequestHeaders()) != 0 {
		t.Error("gRPC calls are all POST; an idempotent-method filter would disable their retries")
	}
	if got := a.GetMaxStreamDuration().GetGrpcTimeoutHeaderMax().AsDuration(); got != 15*time.Second {
		t.Errorf("grpc_timeout_header_max %v, want the 15s service timeout", got)
	}
	// lab-results speaks HTTP/2 but is not gRPC: HTTP retry semantics.
	if got := outboundAction(t, res, "lab-results").GetRetryPolicy().GetRetryOn(); !strings.Contains(got, "5xx") {
		t.Errorf("http2 retry_on %q: want HTTP conditions", got)
	}
}

func TestLBPolicies(t *testing.T) {
	tests := []struct {
		name string
		want map[string]clusterv3.Cluster_LbPolicy
	}{
		{"envoy-lb-policies", map[string]clusterv3.Cluster_LbPolicy{
			"svc-round-robin":   clusterv3.Cluster_ROUND_ROBIN,
			"svc-least-request": clusterv3.Cluster_LEAST_REQUEST,
			"svc-ring-hash":     clusterv3.Cluster_RING_HASH,
			"svc-maglev":        clusterv3.Cluster_MAGLEV,
			"svc-random":        clusterv3.Cluster_RANDOM,
		}},
		// grpc-go NACKs a cluster whose lb_policy it does not implement.
		{"proxyless-lb-policies", map[string]clusterv3.Cluster_LbPolicy{
			"svc-round-robin":   clusterv3.Cluster_ROUND_ROBIN,
			"svc-least-request": clusterv3.Cluster_LEAST_REQUEST,
			"svc-ring-hash":     clusterv3.Cluster_RING_HASH,
			"svc-maglev":        clusterv3.Cluster_ROUND_ROBIN,
			"svc-random":        clusterv3.Cluster_ROUND_ROBIN,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := translateCase(t, tt.name)
			for svc, want := range tt.want {
				c := find[*clusterv3.Cluster](t, res.Clusters, svc)
				if c.GetLbPolicy() != want {
					t.Errorf("%s: lb_policy %v, want %v", svc, c.GetLbPolicy(), want)
				}
			}
			lr := find[*clusterv3.Cluster](t, res.Clusters, "svc-least-request")
			if got := lr.GetLeastRequestLbConfig().GetChoiceCount().GetValue(); got < 2 {
				t.Errorf("least_request choice_count %d; grpc-go rejects < 2", got)
			}
			rh := find[*clusterv3.Cluster](t, res.Clusters, "svc-ring-hash").GetRingHashLbConfig()
			if rh.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
				t.Errorf("ring hash function %v; grpc-go accepts only XX_HASH", rh.GetHashFunction())
			}
			if rh.GetMaximumRingSize().GetValue() > 8*1024*1024 || rh.GetMinimumRingSize().GetValue() > rh.GetMaximumRingSize().GetValue() {
				t.Errorf("ring sizes %d..%d out of Envoy/grpc-go bounds", rh.GetMinimumRingSize().GetValue(), rh.GetMaximumRingSize().GetValue())
			}
		})
	}
}

func TestTCPServices(t *testing.T) {
	res := translateCase(t, "envoy-tcp")
	if !has(res.Listeners, wire.OutboundTCPListener("hl7-archive")) {
		t.Errorf("hl7-archive (first by name on 2575) has no outbound listener: %v", names(res.Listeners))
	}
	for _, lost := range []string{"hl7-feed", "legacy-gw"} {
		if has(res.Listeners, wire.OutboundTCPListener(lost)) {
			t.Errorf("%s got a listener on a port already taken", lost)
		}
		found := false
		for _, w := range res.Warnings {
			found = found || strings.Contains(w, `"`+lost+`"`)
		}
		if !found {
			t.Errorf("no warning names %s: %q", lost, res.Warnings)
		}
		// Its cluster stays: HTTP proxies and a later fix may still use it.
		find[*clusterv3.Cluster](t, res.Clusters, lost)
	}
	l := find[*listenerv3.Listener](t, res.Listeners, wire.OutboundTCPListener("dicom-dimse"))
	if sa := l.GetAddress().GetSocketAddress(); sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 104 {
		t.Errorf("dicom-dimse outbound on %s:%d, want loopback on the common port 104", sa.GetAddress(), sa.GetPortValue())
	}
	in := find[*listenerv3.Listener](t, res.Listeners, wire.InboundListener)
	if got := in.GetFilterChains()[0].GetFilters()[0].GetName(); got != "envoy.filters.network.tcp_proxy" {
		t.Errorf("TCP inbound filter %q, want tcp_proxy", got)
	}
	if has(res.Routes, translate.InboundRoute) {
		t.Error("a TCP service has no inbound route configuration")
	}
}

func TestImagingTimeouts(t *testing.T) {
	a := outboundAction(t, translateCase(t, "envoy-imaging"), "pacs")
	if got := a.GetTimeout().AsDuration(); got != 300*time.Second {
		t.Errorf("imaging timeout %v, want 300s", got)
	}
	if got := a.GetRetryPolicy().GetPerTryTimeout().AsDuration(); got != 120*time.Second {
		t.Errorf("imaging per-try timeout %v, want 120s", got)
	}
}

func TestWebSocketServices(t *testing.T) {
	res := translateCase(t, "envoy-vitals-webrtc")
	actions := map[string]*routev3.RouteAction{
		"outbound vitals":        outboundAction(t, res, "vitals"),
		"outbound webrtc-signal": outboundAction(t, res, "webrtc-signal"),
		"inbound vitals":         inboundAction(t, res),
	}
	for what, a := range actions {
		if ups := a.GetUpgradeConfigs(); len(ups) != 1 || ups[0].GetUpgradeType() != "websocket" {
			t.Errorf("%s: upgrade configs %v, want websocket", what, ups)
		}
		// A zero timeout disables Envoy's 15s default; an unset one would not.
		if a.GetTimeout() == nil || a.GetTimeout().AsDuration() != 0 {
			t.Errorf("%s: timeout %v, want explicit 0s (none)", what, a.GetTimeout())
		}
		if a.GetIdleTimeout().AsDuration() <= 0 {
			t.Errorf("%s: no idle timeout; a dead monitor would hold its stream forever", what)
		}
	}
}

func TestProxylessServer(t *testing.T) {
	res := translateCase(t, "proxyless-server")
	name := wire.ProxylessServerListenerName("10.1.0.11", 9001)
	if name != "medmesh/inbound/10.1.0.11:9001" {
		t.Fatalf("server listener name %q", name)
	}
	l := find[*listenerv3.Listener](t, res.Listeners, name)
	hcm := &hcmv3.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	route := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0]
	if route.GetNonForwardingAction() == nil {
		t.Errorf("server route action %T; grpc-go serves only non_forwarding_action", route.GetAction())
	}
	// The server is a client too.
	for _, svc := range []string{"emr", "imaging"} {
		if l := find[*listenerv3.Listener](t, res.Listeners, svc); l.GetApiListener() == nil {
			t.Errorf("client listener %q is not an API listener", svc)
		}
	}
	if has(res.Clusters, translate.LocalAppCluster) {
		t.Error("a proxyless server has no local-app cluster")
	}
}

// grpc-go formats the listening address with net.JoinHostPort semantics
// (net.TCPAddr.String) before filling in the template.
func TestProxylessServerListenerNameIPv6(t *testing.T) {
	if got, want := wire.ProxylessServerListenerName("fd00::11", 9001), "medmesh/inbound/[fd00::11]:9001"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestProxylessClient(t *testing.T) {
	res := translateCase(t, "proxyless-client")
	for _, r := range res.Listeners {
		if l := r.(*listenerv3.Listener); l.GetApiListener() == nil {
			t.Errorf("client-only node got a server listener %q", l.GetName())
		}
	}
	if has(res.Listeners, "hl7-feed") || has(res.Routes, "hl7-feed") {
		t.Error("proxyless gRPC cannot call a TCP service; it must get no listener or route for one")
	}
	rc := find[*routev3.RouteConfiguration](t, res.Routes, "emr")
	a := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
	// grpc-go takes deadlines from max_stream_duration and retries only on
	// status codes.
	if got := a.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration(); got != 15*time.Second {
		t.Errorf("max_stream_duration %v, want 15s", got)
	}
	if got := a.GetRetryPolicy().GetRetryOn(); got != "unavailable" {
		t.Errorf("retry_on %q, want only status codes grpc-go understands", got)
	}
	c := find[*clusterv3.Cluster](t, res.Clusters, "emr")
	if c.GetTypedExtensionProtocolOptions() != nil {
		t.Error("proxyless clusters must not carry Envoy upstream HTTP options")
	}
}

func TestOutboundOnlyEnvoy(t *testing.T) {
	res := translateCase(t, "envoy-outbound-only")
	if has(res.Listeners, wire.InboundListener) || has(res.Routes, translate.InboundRoute) ||
		has(res.Clusters, translate.LocalAppCluster) {
		t.Errorf("outbound-only proxy got inbound resources: %v %v %v",
			names(res.Listeners), names(res.Routes), names(res.Clusters))
	}
	for _, want := range []string{wire.OutboundHTTPListener, wire.OutboundTCPListener("hl7-feed")} {
		if !has(res.Listeners, want) {
			t.Errorf("missing listener %q", want)
		}
	}
}

// ForProxy builds an inbound side only for a known service with a resolved
// instance; anything less is an outbound-only client, never a listener on
// a guessed address.
func TestForProxyServiceMismatch(t *testing.T) {
	mesh := loadCase(t, "envoy-emr-sidecar").mesh
	_, inst, _ := mesh.Instance("emr-1")
	for _, p := range []*ir.Proxy{
		{ID: "emr-1", Service: "unknown", Kind: wire.ProxyEnvoy, Instance: inst},
		{ID: "emr-1", Service: "emr", Kind: wire.ProxyEnvoy},
	} {
		if own := translate.ForProxy(mesh, p, nil); len(own.Listeners)+len(own.Routes)+len(own.Clusters) != 0 {
			t.Errorf("proxy %+v got per-proxy resources", p)
		}
	}
}

// Translate must equal Shared plus ForProxy, which is how the control plane
// assembles snapshots; golden tests cover Translate only.
func TestTranslateIsSharedPlusForProxy(t *testing.T) {
	for _, name := range []string{"envoy-emr-sidecar", "proxyless-server", "envoy-tracing"} {
		c := loadCase(t, name)
		mesh, p := c.mesh, c.proxy
		sh := translate.Shared(mesh)
		base := sh.Envoy
		if p.Kind == wire.ProxyProxyless {
			base = sh.Proxyless
		}
		own := translate.ForProxy(mesh, p, c.svid)
		full := translate.Translate(mesh, p, c.svid)
		if got, want := len(full.Listeners), len(base.Listeners)+len(own.Listeners); got != want {
			t.Errorf("%s: %d listeners, want %d", name, got, want)
		}
		if got, want := len(full.Clusters), len(base.Clusters)+len(own.Clusters); got != want {
			t.Errorf("%s: %d clusters, want %d", name, got, want)
		}
		if got, want := len(full.Endpoints), len(sh.Endpoints); got != want || len(base.Endpoints) != 0 {
			t.Errorf("%s: %d endpoints, want the %d shared ones only", name, got, want)
		}
	}
}

func TestValidateReportsFailures(t *testing.T) {
	res := &translate.Resources{
		Clusters: []types.Resource{&clusterv3.Cluster{Name: "", ConnectTimeout: nil}},
		Routes:   []types.Resource{wrapperspb.String("not an envoy resource")},
	}
	err := res.Validate()
	if err == nil {
		t.Fatal("Validate accepted a nameless cluster and a non-Envoy message")
	}
	for _, want := range []string{"cluster", "no validation"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// An empty mesh still gives an Envoy sidecar its outbound HTTP listener and
// an (empty) route table, so applications get a fast 404 instead of
// connection refused while the catalog syncs.
func TestEmptyMesh(t *testing.T) {
	cat, _ := registry.BuildCatalog(nil)
	mesh := ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: trustDomain})
	res := translate.Translate(mesh, &ir.Proxy{ID: "x", Kind: wire.ProxyEnvoy}, nil)
	if err := res.Validate(); err != nil {
		t.Fatal(err)
	}
	if !has(res.Listeners, wire.OutboundHTTPListener) || !has(res.Routes, wire.OutboundHTTPRoute) {
		t.Errorf("empty mesh: listeners %v routes %v", names(res.Listeners), names(res.Routes))
	}
	pl := translate.Translate(mesh, &ir.Proxy{ID: "x", Kind: wire.ProxyProxyless}, nil)
	if n := len(pl.Listeners) + len(pl.Routes) + len(pl.Clusters) + len(pl.Endpoints); n != 0 {
		t.Errorf("empty mesh gave a proxyless client %d resources", n)
	}
}
