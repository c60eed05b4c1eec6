package translate

import (
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// idempotentMethods may be retried after the upstream saw the request.
const idempotentMethods = "GET|HEAD|OPTIONS|PUT|DELETE|TRACE"

// serviceRoutes are a service's routes: its route policy's rules in
// order, then the default route for everything they do not match.
func serviceRoutes(s *ir.Service, kind wire.ProxyKind) []*routev3.Route {
	out := make([]*routev3.Route, 0, len(s.Policy.Rules)+1)
	for i := range s.Policy.Rules {
		out = append(out, policyRoute(s, &s.Policy.Rules[i], kind))
	}
	return append(out, upstreamRoute(s, kind))
}

// upstreamRoute forwards every request of a service to its cluster with the
// service's timeout and retry policy.
func upstreamRoute(s *ir.Service, kind wire.ProxyKind) *routev3.Route {
	return &routev3.Route{
		Name:   s.Name,
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: routeAction(s, kind, s.Route.Timeout, s.Route.Retry)},
	}
}

// routeAction sends to the service's cluster with a timeout and retries.
func routeAction(s *ir.Service, kind wire.ProxyKind, timeout time.Duration, retry ir.Retry) *routev3.RouteAction {
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: s.Name},
		RetryPolicy:      retryPolicy(retry, kind),
	}
	switch {
	case kind == wire.ProxyProxyless:
		// grpc-go reads deadlines from max_stream_duration, not timeout.
		if timeout > 0 {
			action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: dur(timeout)}
		}
	default:
		action.Timeout = dur(timeout)
		action.IdleTimeout = dur(s.Route.IdleTimeout)
		if s.Protocol == ir.ProtocolGRPC {
			// Honour a caller's shorter grpc-timeout, capped by ours.
			action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: dur(timeout)}
		}
		if s.Route.WebSocket {
			action.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}}
		}
	}
	action.HashPolicy = hashPolicy(s, kind)
	return action
}

// AffinityHeader lets a caller keep related requests on one instance of a
// ring_hash or maglev service (e.g. one imaging study's series on the
// instance that has it cached). Its value is only hashed, never logged.
const AffinityHeader = "x-medmesh-affinity"

// hashPolicy gives consistent-hash services something to hash: the
// affinity header when present, else the caller (its address for Envoy,
// its channel for grpc-go), so one caller sticks to one instance rather
// than being spread at random.
func hashPolicy(s *ir.Service, kind wire.ProxyKind) []*routev3.RouteAction_HashPolicy {
	if s.LB.Policy != ir.LBRingHash && s.LB.Policy != ir.LBMaglev {
		return nil
	}
	if kind == wire.ProxyProxyless && s.LB.Policy == ir.LBMaglev {
		return nil // proxyless falls back to round robin for maglev
	}
	header := &routev3.RouteAction_HashPolicy{
		PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: AffinityHeader}},
		Terminal:        true,
	}
	caller := &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
		ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
	}}
	if kind == wire.ProxyProxyless {
		caller = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
			FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"},
		}}
	}
	return []*routev3.RouteAction_HashPolicy{header, caller}
}

func retryPolicy(r ir.Retry, kind wire.ProxyKind) *routev3.RetryPolicy {
	if r.Attempts == 0 {
		return nil
	}
	rp := &routev3.RetryPolicy{
		RetryOn:    strings.Join(r.RetryOn, ","),
		NumRetries: u32(r.Attempts),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: dur(r.BackoffBase),
			MaxInterval:  dur(r.BackoffMax),
		},
	}
	if kind == wire.ProxyProxyless {
		// grpc-go understands only status-code conditions and no per-try
		// timeout; the rest would be ignored, so leave it out. UNAVAILABLE
		// (the call never started) stands in when a policy names only
		// HTTP conditions.
		rp.RetryOn = grpcRetryOn(r.RetryOn)
		return rp
	}
	rp.PerTryTimeout = dur(r.PerTryTimeout)
	rp.RetriableStatusCodes = r.RetriableStatusCodes
	// Retry on another instance than the one that just failed.
	rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
		Name:       "envoy.retry_host_predicates.previous_hosts",
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
	}}
	rp.HostSelectionRetryMaxAttempts = 3
	if r.IdempotentOnly {
		rp.RetriableRequestHeaders = []*routev3.HeaderMatcher{{
			Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: idempotentMethods}},
			}},
		}}
	}
	return rp
}

// inboundRouteConfig sends everything that reaches the inbound listener to
// the local application. Later policies (authorization, PHI tagging) attach
// per route here, which is why it is a route and not a tcp_proxy.
func inboundRouteConfig(s *ir.Service) *routev3.RouteConfiguration {
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: LocalAppCluster},
		// The caller's sidecar owns the deadline; the inbound side only
		// bounds idle streams so a dead caller frees the application.
		Timeout:     dur(0),
		IdleTimeout: dur(s.Route.IdleTimeout),
	}
	if s.Route.WebSocket {
		action.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}}
	}
	return &routev3.RouteConfiguration{
		Name: InboundRoute,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "inbound|" + s.Name,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:   "inbound|" + s.Name,
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: action},
			}},
		}},
	}
}

// grpcStatusConditions are the retry_on values grpc-go understands.
var grpcStatusConditions = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

func grpcRetryOn(on []string) string {
	var out []string
	for _, c := range on {
		if slices.Contains(grpcStatusConditions, c) {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return "unavailable"
	}
	return strings.Join(out, ",")
}
