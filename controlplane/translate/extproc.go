package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// The PHI extension (`medmesh sidecar`) beside every Envoy sidecar; what
// it and the filter must agree on (attributes, metadata namespace, the
// scheduler's limits) is in api/wire.
const (
	// ExtProcCluster reaches the local extension.
	ExtProcCluster = "inbound|extproc"
	// ExtProcFilterName is the filter's name in the HTTP filter chain.
	ExtProcFilterName = "envoy.filters.http.ext_proc"
)

// extProcHTTPFilter tags, queues and audits every inbound request of an
// HTTP service. The extension sees request and response headers only
// (never bodies): the response headers are when it frees the request's
// slot.
//
// Failure mode: PHI services fail closed (failure_mode_allow false), so
// no PHI request reaches the service untagged and unaudited; Envoy
// answers 503 instead. Other services fail open: their requests carry
// no PHI, tags and priority are a service-level nicety there, and a
// stopped extension must not take a non-clinical service down with it.
func extProcHTTPFilter(s *ir.Service) *hcmv3.HttpFilter {
	f := &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ExtProcCluster},
		}},
		FailureModeAllow: !s.PHI,
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		// The caller's identity caps its priority and goes in the audit
		// trail; the peer address goes there too.
		RequestAttributes: []string{wire.ExtProcAttrPeerURI, wire.ExtProcAttrSource},
		MessageTimeout:    dur(wire.ExtProcMessageTimeout),
		StatPrefix:        "medmesh",
		MetadataOptions: &extprocv3.MetadataOptions{
			ForwardingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{wire.MetadataNamespace}},
			ReceivingNamespaces:  &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{wire.MetadataNamespace}},
		},
	}
	if s.PHI {
		// Failing closed answers 503 (retryable elsewhere), not 500.
		f.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
	}
	return &hcmv3.HttpFilter{Name: ExtProcFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(f)}}
}

// extProcCluster is the static HTTP/2 cluster to the local extension;
// its circuit breaker admits every stream the extension's scheduler can
// hold (wire.ExtProcMaxStreams says why).
func extProcCluster() *clusterv3.Cluster {
	limit := uint32(wire.ExtProcMaxStreams)
	return &clusterv3.Cluster{
		Name:                 ExtProcCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       dur(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: ExtProcCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress("127.0.0.1", wire.ExtProcPort),
				}},
			}}}},
		},
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:           corev3.RoutingPriority_DEFAULT,
			MaxConnections:     u32(limit),
			MaxPendingRequests: u32(limit),
			MaxRequests:        u32(limit),
			MaxRetries:         u32(0), // an ext_proc stream is never retried
		}}},
		TypedExtensionProtocolOptions: HTTP2Options(),
	}
}
