package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"medmesh/controlplane/ir"
	"medmesh/sidecar/sched"
)

// The PHI extension (`medmesh sidecar`) beside every Envoy sidecar.
const (
	// ExtProcCluster reaches the local extension.
	ExtProcCluster = "inbound|extproc"
	// ExtProcPort is `medmesh sidecar --extproc-listen`'s default port.
	ExtProcPort = 15090
	// ExtProcFilterName is the filter's name in the HTTP filter chain.
	ExtProcFilterName = "envoy.filters.http.ext_proc"
	// extProcNamespace is where the extension puts its tags as dynamic
	// metadata (phi.MetadataNamespace); access logs read them as
	// %DYNAMIC_METADATA(medmesh:priority)%.
	extProcNamespace = "medmesh"
)

// extProcSched is the scheduler configuration `medmesh sidecar` runs
// with; the filter's timeouts and the cluster's limits are derived from
// it, so the two cannot drift apart.
var extProcSched = sched.Config{}

// ExtProcMessageTimeout bounds how long Envoy waits for the extension's
// answer to one message. It must exceed the longest queue wait: a
// request admitted (or shed with a 503) at the last moment must not be
// turned into an ext_proc timeout instead. The margin covers the
// classification itself and a loaded machine.
func ExtProcMessageTimeout() time.Duration {
	return sched.LongestWait(extProcSched) + 2*time.Second
}

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
		RequestAttributes: []string{"connection.uri_san_peer_certificate", "source.address"},
		MessageTimeout:    dur(ExtProcMessageTimeout()),
		StatPrefix:        "medmesh",
		MetadataOptions: &extprocv3.MetadataOptions{
			ForwardingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{extProcNamespace}},
			ReceivingNamespaces:  &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{extProcNamespace}},
		},
	}
	if s.PHI {
		// Failing closed answers 503 (retryable elsewhere), not 500.
		f.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
	}
	return &hcmv3.HttpFilter{Name: ExtProcFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(f)}}
}

// extProcCluster is the static HTTP/2 cluster to the local extension.
// Envoy opens one gRPC stream per request and holds it while the request
// is queued, so the circuit breaker must admit every request the
// scheduler can hold (admitted plus queued), with room to spare: Envoy's
// default of 1,024 would turn a full queue into ext_proc failures, i.e.
// 503s for PHI services, before the scheduler could choose who waits.
func extProcCluster() *clusterv3.Cluster {
	limit := uint32(2 * sched.MaxOutstanding(extProcSched))
	return &clusterv3.Cluster{
		Name:                 ExtProcCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       dur(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: ExtProcCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress("127.0.0.1", ExtProcPort),
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
