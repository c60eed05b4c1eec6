package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// Route policies (MeshRoute) become routes placed before a service's
// default route. Everything used here is understood by grpc-go too
// (path and header matching, weighted clusters, retries, max stream
// duration, fault injection), except mirroring, which proxyless clients
// do not get.

// policyRoute is one route policy rule.
func policyRoute(s *ir.Service, rule *ir.RouteRule, kind wire.ProxyKind) *routev3.Route {
	action := routeAction(s, kind, rule.Timeout, rule.Retry)
	if len(rule.Clusters) == 1 {
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: rule.Clusters[0].Cluster}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, c := range rule.Clusters {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c.Cluster, Weight: u32(c.Weight)})
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if rule.Mirror != nil && kind == wire.ProxyEnvoy {
		action.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{
			Cluster:         rule.Mirror.Cluster,
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: percent(rule.Mirror.Percent)},
		}}
	}
	r := &routev3.Route{
		Name:   s.Name + "|" + rule.Name,
		Match:  routeMatch(rule.Match),
		Action: &routev3.Route_Route{Route: action},
	}
	if rule.Fault != nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: mustAny(httpFault(rule.Fault))}
	}
	return r
}

func routeMatch(m ir.RouteMatch) *routev3.RouteMatch {
	out := &routev3.RouteMatch{}
	switch {
	case m.PathExact != "":
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: m.PathExact}
	case m.PathRegex != "":
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.PathRegex}}
	case m.PathPrefix != "":
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: m.PathPrefix}
	default:
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	}
	for _, h := range m.Headers {
		hm := &routev3.HeaderMatcher{Name: h.Name}
		switch {
		case h.Present:
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		case h.Regex != "":
			hm.HeaderMatchSpecifier = stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
				SafeRegex: &matcherv3.RegexMatcher{Regex: h.Regex}}})
		case h.Prefix != "":
			hm.HeaderMatchSpecifier = stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.Prefix}})
		default:
			hm.HeaderMatchSpecifier = stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Exact}})
		}
		out.Headers = append(out.Headers, hm)
	}
	if m.Method != "" {
		out.Headers = append(out.Headers, &routev3.HeaderMatcher{Name: ":method",
			HeaderMatchSpecifier: stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.Method}})})
	}
	return out
}

func stringMatch(m *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
	return &routev3.HeaderMatcher_StringMatch{StringMatch: m}
}

func percent(p uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: p, Denominator: typev3.FractionalPercent_HUNDRED}
}
