package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// Proxyless gRPC (grpc-go's xds package) asks for a Listener named after
// the dial target's host ("xds:///emr" asks for "emr"), whose API listener
// names a RouteConfiguration; servers ask for the listener named by their
// bootstrap's server_listener_resource_name_template.

// proxylessClientListener is the API listener a gRPC client resolves.
func proxylessClientListener(s *ir.Service) *listenerv3.Listener {
	hcm := httpConnectionManager(hcmOptions{statPrefix: s.Name, rdsName: s.Name})
	if s.Policy.HasFault {
		hcm = withFaultFilter(hcm)
	}
	return &listenerv3.Listener{
		Name:        s.Name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// proxylessRouteConfig routes a gRPC client's calls for a service.
func proxylessRouteConfig(s *ir.Service) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: s.Name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    s.Name,
			Domains: []string{s.Name},
			Routes:  serviceRoutes(s, wire.ProxyProxyless),
		}},
	}
}

// WildcardAddresses are the addresses a server listening on every
// interface binds and asks its listener for (0.0.0.0:port, [::]:port):
// the default of most servers and of grpc-go's own xDS examples.
var WildcardAddresses = []string{"0.0.0.0", "::"}

// proxylessServerListeners are an instance's inbound listeners, one per
// address its server may listen on: the registered address and the two
// wildcards. A gRPC server asks for the listener named after the address
// it listens on and accepts it only if the listener's address is that
// same address (gRFC A36), so each name gets its own address; all of
// them carry the same filter chain (RBAC, mTLS). The data plane asks for
// one, and only the one it asks for is sent.
func proxylessServerListeners(m *ir.Mesh, s *ir.Service, in *ir.Instance) []*listenerv3.Listener {
	out := []*listenerv3.Listener{proxylessServerListener(m, s, in.Address, in.Port)}
	for _, addr := range WildcardAddresses {
		if addr != in.Address {
			out = append(out, proxylessServerListener(m, s, addr, in.Port))
		}
	}
	return out
}

// proxylessServerListener lets an xds.NewGRPCServer serve on address:port:
// grpc-go only accepts calls whose route has a non-forwarding action.
func proxylessServerListener(m *ir.Mesh, s *ir.Service, address string, port int) *listenerv3.Listener {
	inline := &routev3.RouteConfiguration{
		Name: "inbound|" + s.Name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "inbound|" + s.Name,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:   "inbound|" + s.Name,
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
			}},
		}},
	}
	return &listenerv3.Listener{
		Name:    wire.ProxylessServerListenerName(address, port),
		Address: socketAddress(address, port),
		FilterChains: []*listenerv3.FilterChain{{
			Name:            "inbound|" + s.Name,
			Filters:         []*listenerv3.Filter{hcmFilter(httpConnectionManager(hcmOptions{statPrefix: "inbound", inline: inline, rbac: rbacHTTPFilter(m, s)}))},
			TransportSocket: downstreamTransportSocket(m, s, wire.ProxyProxyless),
		}},
		TrafficDirection: corev3.TrafficDirection_INBOUND,
	}
}
