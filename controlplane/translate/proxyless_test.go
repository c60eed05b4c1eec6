package translate_test

import (
	"net"
	"strconv"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/translate"
)

// A gRPC server on 0.0.0.0:port or [::]:port asks for the listener named
// after that address and accepts it only if the listener's own address
// is the same (gRFC A36); each gets the registered listener's filter
// chain (authorization, mTLS) unchanged.
func TestProxylessServerWildcardListeners(t *testing.T) {
	for _, tc := range []struct {
		name string
		ip   string
		port int
	}{{"proxyless-server", "10.1.0.11", 9001}, {"proxyless-mtls", "10.0.0.2", 9090}} {
		res := translateCase(t, tc.name)
		registered := find[*listenerv3.Listener](t, res.Listeners, wire.ProxylessServerListenerName(tc.ip, tc.port))
		for _, addr := range translate.WildcardAddresses {
			name := wire.ProxylessServerListenerName(addr, tc.port)
			l := find[*listenerv3.Listener](t, res.Listeners, name)
			sa := l.GetAddress().GetSocketAddress()
			if got := wire.ProxylessServerListenerName(sa.GetAddress(), int(sa.GetPortValue())); got != name {
				t.Errorf("%s: listener %q has address %s; a gRPC server asking for it would refuse it", tc.name, name,
					net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
			}
			if !proto.Equal(l.GetFilterChains()[0], registered.GetFilterChains()[0]) {
				t.Errorf("%s: listener %q's filter chain differs from the registered address's", tc.name, name)
			}
		}
	}
	if got, want := wire.ProxylessServerListenerName("::", 18551), "medmesh/inbound/[::]:18551"; got != want {
		t.Errorf("IPv6 wildcard listener named %q; grpc-go and grpc-js ask for %q", got, want)
	}
}

// outlierOf returns the outlier detection of cluster name for a proxy
// kind, from the shared translation of m.
func outlierOf(t *testing.T, m *ir.Mesh, kind wire.ProxyKind, name string) *clusterv3.OutlierDetection {
	t.Helper()
	sh := translate.Shared(m)
	set := sh.Envoy
	if kind == wire.ProxyProxyless {
		set = sh.Proxyless
	}
	return find[*clusterv3.Cluster](t, set.Clusters, name).GetOutlierDetection()
}

// gRPC implements failure-percentage and success-rate ejection only; an
// unset enforcing_success_rate means "on" and crashed grpc-js, so every
// field that decides ejection is written.
func TestOutlierDetectionPerDataPlane(t *testing.T) {
	m := &ir.Mesh{Services: []ir.Service{{Name: "emr", Protocol: ir.ProtocolGRPC, Outlier: ir.DefaultDefaults().Outlier}}}
	px := outlierOf(t, m, wire.ProxyProxyless, "emr")
	for field, got := range map[string]proto.Message{
		"enforcing_success_rate":            px.GetEnforcingSuccessRate(),
		"enforcing_failure_percentage":      px.GetEnforcingFailurePercentage(),
		"failure_percentage_threshold":      px.GetFailurePercentageThreshold(),
		"failure_percentage_minimum_hosts":  px.GetFailurePercentageMinimumHosts(),
		"failure_percentage_request_volume": px.GetFailurePercentageRequestVolume(),
		"max_ejection_percent":              px.GetMaxEjectionPercent(),
		"max_ejection_time":                 px.GetMaxEjectionTime(),
		"interval":                          px.GetInterval(),
		"base_ejection_time":                px.GetBaseEjectionTime(),
	} {
		if !got.ProtoReflect().IsValid() {
			t.Errorf("proxyless outlier_detection.%s unset: the data plane's default applies", field)
		}
	}
	if px.GetEnforcingSuccessRate().GetValue() != 0 || px.GetEnforcingFailurePercentage().GetValue() != 100 {
		t.Errorf("proxyless: success rate %d %%, failure percentage %d %%; want 0 and 100",
			px.GetEnforcingSuccessRate().GetValue(), px.GetEnforcingFailurePercentage().GetValue())
	}
	if px.GetFailurePercentageMinimumHosts().GetValue() > 2 {
		t.Errorf("failure_percentage_minimum_hosts %d: two instances must be enough", px.GetFailurePercentageMinimumHosts().GetValue())
	}

	ev := outlierOf(t, m, wire.ProxyEnvoy, "emr")
	if ev.GetEnforcingConsecutiveGatewayFailure().GetValue() != 100 || ev.GetEnforcingConsecutive_5Xx().GetValue() != 100 {
		t.Errorf("Envoy enforces consecutive 5xx at %v %%, gateway failures at %v %%; want 100 and 100",
			ev.GetEnforcingConsecutive_5Xx(), ev.GetEnforcingConsecutiveGatewayFailure())
	}
	if ev.GetEnforcingSuccessRate() == nil || ev.GetEnforcingSuccessRate().GetValue() != 0 {
		t.Errorf("Envoy enforcing_success_rate %v; want an explicit 0", ev.GetEnforcingSuccessRate())
	}

	// A MeshDestination's consecutive5xx: 0 turns the detector off: Envoy
	// reads a count of 0 literally, so it is written as enforcement 0.
	m.Services[0].Outlier.Consecutive5xx = 0
	ev = outlierOf(t, m, wire.ProxyEnvoy, "emr")
	if ev.GetConsecutive_5Xx() != nil || ev.GetEnforcingConsecutive_5Xx().GetValue() != 0 {
		t.Errorf("consecutive5xx 0: consecutive_5xx %v enforced at %v; want unset and 0", ev.GetConsecutive_5Xx(), ev.GetEnforcingConsecutive_5Xx())
	}
}
