package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// upstreamCluster is the EDS cluster through which a proxy calls a service.
func upstreamCluster(m *ir.Mesh, s *ir.Service, kind wire.ProxyKind) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 s.Name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       dur(s.ConnectTimeout),
		CircuitBreakers:      circuitBreakers(s.CircuitBreaker),
		OutlierDetection:     outlierDetection(s.Outlier, kind),
		TransportSocket:      upstreamTransportSocket(m, s, kind),
	}
	applyLB(c, s.LB, kind)
	if s.Protocol.IsHTTP2() && kind == wire.ProxyEnvoy {
		c.TypedExtensionProtocolOptions = HTTP2Options()
	}
	if n := s.Policy.MaxRequestsPerConnection; n > 0 && kind == wire.ProxyEnvoy && s.Protocol.IsHTTP() {
		c.TypedExtensionProtocolOptions = httpOptions(s.Protocol.IsHTTP2(), n)
	}
	return c
}

// subsetCluster is a route policy's subset of a service: the service's
// cluster under the subset's name, whose endpoints are the subset's.
func subsetCluster(m *ir.Mesh, s *ir.Service, sub *ir.Subset, kind wire.ProxyKind) *clusterv3.Cluster {
	c := upstreamCluster(m, s, kind)
	c.Name = sub.Cluster
	return c
}

// httpOptions are the upstream HTTP options with a request cap per
// connection (MeshDestination connectionPool.maxRequestsPerConnection).
func httpOptions(http2 bool, maxRequests uint32) map[string]*anypb.Any {
	explicit := &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
		},
	}
	if http2 {
		explicit.ProtocolConfig = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		}
	}
	return map[string]*anypb.Any{
		httpProtocolOptionsKey: mustAny(&upstreamhttpv3.HttpProtocolOptions{
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: u32(maxRequests)},
			UpstreamProtocolOptions:   &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit},
		}),
	}
}

// applyLB sets the load-balancing policy. grpc-go implements round robin,
// least request and ring hash only, so proxyless clients get round robin
// for maglev (the closest consistent choice would need a hash policy the
// caller does not send) and random.
func applyLB(c *clusterv3.Cluster, lb ir.LoadBalancer, kind wire.ProxyKind) {
	policy := lb.Policy
	if kind == wire.ProxyProxyless && (policy == ir.LBMaglev || policy == ir.LBRandom) {
		policy = ir.LBRoundRobin
	}
	switch policy {
	case ir.LBLeastRequest:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
			ChoiceCount: u32(max(lb.ChoiceCount, 2)),
		}}
		if kind == wire.ProxyProxyless {
			c.LoadBalancingPolicy = leastRequestOrRoundRobin(max(lb.ChoiceCount, 2))
		}
	case ir.LBRingHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			// grpc-go accepts only xxHash.
			HashFunction:    clusterv3.Cluster_RingHashLbConfig_XX_HASH,
			MinimumRingSize: wrapperspb.UInt64(lb.MinRingSize),
			MaximumRingSize: wrapperspb.UInt64(lb.MaxRingSize),
		}}
	case ir.LBMaglev:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
	case ir.LBRandom:
		c.LbPolicy = clusterv3.Cluster_RANDOM
	default:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
}

// leastRequestOrRoundRobin is least request for the gRPC implementations
// that have it (grpc-go) and round robin for those that do not (grpc-js
// NACKs lb_policy LEAST_REQUEST): gRPC takes the first policy of the list
// it implements (gRFC A52) and then ignores lb_policy. Neither is wrapped
// in wrr_locality, as grpc-go's own LEAST_REQUEST does not: grpc-js 1.14
// does not recognise wrr_locality in this list.
func leastRequestOrRoundRobin(choiceCount uint32) *clusterv3.LoadBalancingPolicy {
	policy := func(name string, m proto.Message) *clusterv3.LoadBalancingPolicy_Policy {
		return &clusterv3.LoadBalancingPolicy_Policy{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: name, TypedConfig: mustAny(m)}}
	}
	return &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
		policy("envoy.load_balancing_policies.least_request", &leastrequestv3.LeastRequest{ChoiceCount: u32(choiceCount)}),
		policy("envoy.load_balancing_policies.round_robin", &roundrobinv3.RoundRobin{}),
	}}
}

func circuitBreakers(cb ir.CircuitBreaker) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     u32(cb.MaxConnections),
		MaxPendingRequests: u32(cb.MaxPendingRequests),
		MaxRequests:        u32(cb.MaxRequests),
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: cb.RetryBudgetPercent},
			MinRetryConcurrency: u32(cb.MinRetryConcurrency),
		},
	}}}
}

// outlierDetection writes each data plane the detector it implements,
// with every field that decides ejection set: an unset field in xDS means
// "enabled with defaults" for success-rate ejection (enforcing_success_rate
// defaults to 100), and "disabled" for gateway failures and failure
// percentage (their enforcing_* default to 0), neither of which is what a
// reader of the cluster would guess.
func outlierDetection(o ir.Outlier, kind wire.ProxyKind) *clusterv3.OutlierDetection {
	od := &clusterv3.OutlierDetection{
		Interval:         dur(o.Interval),
		BaseEjectionTime: dur(o.BaseEjectionTime),
		// Both Envoy and gRPC take max(base, max_ejection_time); say so.
		MaxEjectionTime:    dur(max(o.MaxEjectionTime, o.BaseEjectionTime)),
		MaxEjectionPercent: u32(o.MaxEjectionPercent),
		// Success rate compares instances with each other (mean minus
		// 1.9 standard deviations, over 5+ instances with 100 calls
		// each): meaningless for a clinic's two or three instances. Off
		// for every data plane. Left unset it is on, and grpc-js then
		// throws from a timer at the first interval and kills the process.
		EnforcingSuccessRate: u32(0),
	}
	if kind == wire.ProxyProxyless {
		// gRPC (gRFC A50) implements success-rate and failure-percentage
		// ejection only and ignores the consecutive counts, so they are
		// left out rather than promised.
		od.EnforcingFailurePercentage = u32(100)
		od.FailurePercentageThreshold = u32(o.FailurePercentageThreshold)
		od.FailurePercentageMinimumHosts = u32(o.FailurePercentageMinimumHosts)
		od.FailurePercentageRequestVolume = u32(o.FailurePercentageRequestVolume)
		return od
	}
	// A count of 0 (a MeshDestination's way to turn a detector off) is
	// written as enforcement 0: a count of 0 in Envoy is not "off".
	od.EnforcingConsecutive_5Xx = u32(enforce(o.Consecutive5xx))
	od.EnforcingConsecutiveGatewayFailure = u32(enforce(o.ConsecutiveGatewayFailure))
	if o.Consecutive5xx > 0 {
		od.Consecutive_5Xx = u32(o.Consecutive5xx)
	}
	if o.ConsecutiveGatewayFailure > 0 {
		// Envoy counts gateway failures but enforces none unless told to
		// (its default is 0 %): without the enforcement above the
		// documented "3 gateway failures" ejected nothing.
		od.ConsecutiveGatewayFailure = u32(o.ConsecutiveGatewayFailure)
	}
	od.EnforcingFailurePercentage = u32(0)
	return od
}

// enforce is the enforcement percentage of a consecutive-failure detector.
func enforce(count uint32) uint32 {
	if count == 0 {
		return 0
	}
	return 100
}

// localAppCluster reaches the application beside an Envoy sidecar.
func localAppCluster(s *ir.Service, in *ir.Instance) *clusterv3.Cluster {
	port := in.Port
	if in.AppPort != 0 {
		port = in.AppPort
	}
	c := &clusterv3.Cluster{
		Name:                 LocalAppCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       dur(s.ConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: LocalAppCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress("127.0.0.1", port),
				}},
			}}}},
		},
	}
	if s.Protocol.IsHTTP2() {
		c.TypedExtensionProtocolOptions = HTTP2Options()
	}
	return c
}

// HTTP2Options makes Envoy speak HTTP/2 to an upstream (gRPC, http2, and
// the control plane itself in a bootstrap).
func HTTP2Options() map[string]*anypb.Any {
	return map[string]*anypb.Any{
		httpProtocolOptionsKey: mustAny(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			},
		}),
	}
}
