package translate

import (
	"net"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"medmesh/controlplane/ir"
)

// Request tracing of Envoy sidecars (ir.EnvoyTracing, from the control
// plane's --envoy-otlp-address and --envoy-trace-sampling): every HTTP
// connection manager gets Envoy's OpenTelemetry tracer, exporting OTLP
// over gRPC through OTLPCluster, and joins the caller's trace from its
// W3C traceparent (the OpenTelemetry tracer's propagation). Proxyless gRPC
// gets nothing: gRPC's xDS has no tracing configuration; those services
// trace with otelgrpc in the application.
const (
	// OTLPCluster reaches the collector. The "|" keeps it apart from every
	// registered service (clusters of services are named after them, and
	// Consul service names are DNS labels).
	OTLPCluster = "medmesh|otlp"
	// OpenTelemetryTracer is Envoy's name for its OpenTelemetry tracer.
	OpenTelemetryTracer = "envoy.tracers.opentelemetry"
)

// Span tags every Envoy span carries: the site, service and clinical kind
// of the sidecar, constants of its configuration. No tag is read from a
// request (headers, path, metadata), so none can carry patient data.
const (
	TagSite    = "medmesh.site"
	TagService = "medmesh.service"
	TagKind    = "medmesh.kind"
)

// otlpCluster is the HTTP/2 cluster to the OTLP/gRPC collector, sent to
// every Envoy sidecar while tracing is on: STATIC for an IP address,
// STRICT_DNS for a name (a Kubernetes Service resolves to its cluster IP,
// a headless one to every collector pod).
func otlpCluster(t ir.EnvoyTracing) *clusterv3.Cluster {
	typ := clusterv3.Cluster_STRICT_DNS
	if net.ParseIP(t.CollectorHost) != nil {
		typ = clusterv3.Cluster_STATIC
	}
	return &clusterv3.Cluster{
		Name:                 OTLPCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       dur(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: OTLPCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(t.CollectorHost, t.CollectorPort),
				}},
			}}}},
		},
		TypedExtensionProtocolOptions: HTTP2Options(),
	}
}

// hcmTracing is the tracing of one sidecar's connection managers, or nil
// when tracing is off. service names the sidecar (its node.cluster) as
// the OTel resource's service.name; kind is its clinical kind, if known.
//
// spawn_upstream_span is false: a sidecar and its application are one hop
// of the trace (Envoy's advice for sidecars), so the inbound span is the
// SERVER span the application's own spans hang under and the outbound
// span the CLIENT span of the application's call, the kind following the
// listener's traffic direction.
//
// max_path_tag_length is 0: Envoy's http.url tag then holds the scheme
// and host only. Paths carry patient identifiers (FHIR's
// /Patient/<id>, DICOMweb study UIDs), and query strings more.
func hcmTracing(m *ir.Mesh, service string, kind ir.Kind) *hcmv3.HttpConnectionManager_Tracing {
	t := m.EnvoyTracing
	if !t.Enabled() {
		return nil
	}
	var tags []*tracingv3.CustomTag
	for _, kv := range [][2]string{{TagSite, m.Site}, {TagService, service}, {TagKind, string(kind)}} {
		if kv[1] == "" {
			continue // Envoy refuses an empty literal
		}
		tags = append(tags, &tracingv3.CustomTag{Tag: kv[0], Type: &tracingv3.CustomTag_Literal_{
			Literal: &tracingv3.CustomTag_Literal{Value: kv[1]},
		}})
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		// Requests arriving without a sampling decision (no traceparent)
		// start a trace at this rate; a caller's decision is followed.
		RandomSampling: &typev3.Percent{Value: t.SamplingPercent},
		// Written out (100 is Envoy's default) so that a reader of the
		// config need not know that overall sampling multiplies in.
		OverallSampling:   &typev3.Percent{Value: 100},
		MaxPathTagLength:  u32(0),
		CustomTags:        tags,
		SpawnUpstreamSpan: wrapBool(false),
		Provider: &tracev3.Tracing_Http{
			Name: OpenTelemetryTracer,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{
				GrpcService: &corev3.GrpcService{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: OTLPCluster}},
					Timeout:         dur(time.Second),
				},
				ServiceName: service,
			})},
		},
	}
}

// proxyTracing is hcmTracing for a proxy's outbound side: named after the
// proxy's service (node.cluster), with the service's kind when it is
// registered (an outbound-only client's may not be).
func proxyTracing(m *ir.Mesh, service string) *hcmv3.HttpConnectionManager_Tracing {
	if !m.EnvoyTracing.Enabled() {
		return nil
	}
	var kind ir.Kind
	if svc, ok := m.Service(service); ok {
		kind = svc.Kind
	}
	return hcmTracing(m, service, kind)
}
