package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// inboundListener accepts the mesh's calls to this instance on its
// registered address and port and hands them to the local application.
func inboundListener(m *ir.Mesh, s *ir.Service, in *ir.Instance) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:    wire.InboundListener,
		Address: socketAddress(in.Address, in.Port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters:         inboundFilters(m, s, true),
			TransportSocket: downstreamTransportSocket(m, s, wire.ProxyEnvoy),
		}},
		TrafficDirection: corev3.TrafficDirection_INBOUND,
	}
	if m.MTLS && s.Permissive {
		// Migration aid for non-PHI services: the TLS inspector sends TLS
		// to the mTLS chain (identities, authorization) and plaintext to a
		// chain without either, since a plaintext caller has no identity.
		l.ListenerFilters = []*listenerv3.ListenerFilter{{
			Name:       wellknown.TlsInspector,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		}}
		l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             "plaintext",
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"},
			Filters:          inboundFilters(m, s, false),
		})
	}
	return l
}

// inboundFilters hand a connection to the local application, with
// authorization when the caller's identity is known (authz).
func inboundFilters(m *ir.Mesh, s *ir.Service, authz bool) []*listenerv3.Filter {
	if s.Protocol.IsHTTP() {
		o := hcmOptions{statPrefix: wire.InboundListener, rdsName: InboundRoute, extProc: extProcHTTPFilter(s), accessLog: true,
			normalizePaths: true, tracing: hcmTracing(m, s.Name, s.Kind)}
		if authz {
			o.rbac = rbacHTTPFilter(m, s)
		}
		return []*listenerv3.Filter{hcmFilter(httpConnectionManager(o))}
	}
	var filters []*listenerv3.Filter
	if authz {
		if f := rbacNetworkFilter(m, s); f != nil {
			filters = append(filters, f)
		}
	}
	return append(filters, tcpProxyFilter(wire.InboundListener, LocalAppCluster, s.Route.IdleTimeout))
}
