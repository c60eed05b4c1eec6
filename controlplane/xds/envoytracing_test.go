package xds

import (
	"context"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"medmesh/api/wire"
	"medmesh/controlplane/translate"
)

// With Envoy request tracing on, Publish gives every Envoy the
// collector's cluster from the shared set and an outbound listener of its
// own, whose spans are named after its service; proxyless clients get
// neither.
func TestPublishEnvoyTracing(t *testing.T) {
	s := newTestServer(t)
	mesh := testMesh(t, "emr", "his")
	mesh.EnvoyTracing.CollectorHost, mesh.EnvoyTracing.CollectorPort = "otel-collector", 4317
	round := Round{Mesh: mesh, Proxies: []RoundProxy{
		roundProxy(mesh, "emr-1", wire.ProxyEnvoy), roundProxy(mesh, "his-1", wire.ProxyEnvoy),
		roundProxy(mesh, "client", wire.ProxyProxyless),
	}}
	if rep, err := s.Publish(context.Background(), round); err != nil || len(rep.Failed) != 0 {
		t.Fatalf("err=%v failed=%v", err, rep.Failed)
	}
	for id, service := range map[string]string{"emr-1": "emr", "his-1": "his"} {
		pb, _ := s.PublishedFor(id)
		if _, ok := pb.snapshot.GetResources(resource.ClusterType)[translate.OTLPCluster]; !ok {
			t.Errorf("%s: no %s cluster", id, translate.OTLPCluster)
		}
		l, ok := pb.snapshot.layers[resource.ListenerType].own[wire.OutboundHTTPListener]
		if !ok {
			t.Fatalf("%s: the outbound listener is not the proxy's own", id)
		}
		h := &hcmv3.HttpConnectionManager{}
		if err := l.Resource.(*listenerv3.Listener).GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		otel := &tracev3.OpenTelemetryConfig{}
		if err := h.GetTracing().GetProvider().GetTypedConfig().UnmarshalTo(otel); err != nil {
			t.Fatal(err)
		}
		if otel.GetServiceName() != service {
			t.Errorf("%s: outbound spans named %q, want %q", id, otel.GetServiceName(), service)
		}
	}
	pb, _ := s.PublishedFor("client")
	if _, ok := pb.snapshot.GetResources(resource.ClusterType)[translate.OTLPCluster]; ok {
		t.Error("a proxyless client got the collector's cluster")
	}
}
