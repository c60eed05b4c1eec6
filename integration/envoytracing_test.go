package integration

import (
	"context"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"medmesh/api/wire"
	"medmesh/controlplane"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/translate"
	"medmesh/internal/simproxy"
)

// TestEnvoyTracingOverXDS: with --envoy-otlp-address, simulated Envoys on
// SotW and delta streams receive (and accept, every resource passing
// ValidateAll) the collector's cluster and connection managers that trace
// under their own service's name, inbound and outbound.
func TestEnvoyTracingOverXDS(t *testing.T) {
	consul := startConsul(t, true)
	hospital(t, consul.Client())
	tracing, err := ir.ParseEnvoyTracing("otel-collector.observability:4317", 5)
	if err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.EnvoyTracing = tracing })
	proxies := map[string]*simproxy.Proxy{
		"emr": startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll}),
		"his": startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "his-1", Cluster: "his", Delta: true, Validate: validateAll}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for service, p := range proxies {
		err := p.Wait(ctx, func(s simproxy.State) bool {
			_, otlp := s.Resources[resource.ClusterType][translate.OTLPCluster]
			_, in := s.Resources[resource.ListenerType][wire.InboundListener]
			_, out := s.Resources[resource.ListenerType][wire.OutboundHTTPListener]
			return fullConfig("emr", "his", "imaging")(s) && otlp && in && out
		})
		if err != nil {
			t.Fatalf("%s: %v", service, err)
		}
		st := p.State()
		if len(st.NACKs) > 0 {
			t.Fatalf("%s: NACKs %v", service, st.NACKs)
		}
		for _, name := range []string{wire.InboundListener, wire.OutboundHTTPListener} {
			l := st.Resources[resource.ListenerType][name].(*listenerv3.Listener)
			h := &hcmv3.HttpConnectionManager{}
			if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatalf("%s %s: %v", service, name, err)
			}
			otel := &tracev3.OpenTelemetryConfig{}
			if err := h.GetTracing().GetProvider().GetTypedConfig().UnmarshalTo(otel); err != nil {
				t.Fatalf("%s %s: no OpenTelemetry tracer: %v", service, name, err)
			}
			if otel.GetServiceName() != service || h.GetTracing().GetRandomSampling().GetValue() != 5 {
				t.Errorf("%s %s: spans named %q, sampling %v", service, name, otel.GetServiceName(), h.GetTracing().GetRandomSampling())
			}
		}
	}
}
