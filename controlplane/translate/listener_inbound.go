package translate

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"medmesh/controlplane/ir"
	"medmesh/registry"
)

// inboundListener accepts the mesh's calls to this instance on its
// registered address and port and hands them to the local application.
func inboundListener(m *ir.Mesh, s *ir.Service, in *registry.Instance) *listenerv3.Listener {
	var filters []*listenerv3.Filter
	if s.Protocol.IsHTTP() {
		filters = append(filters, hcmFilter(httpConnectionManager(hcmOptions{
			statPrefix: InboundListener, rdsName: InboundRoute, rbac: rbacHTTPFilter(m, s),
		})))
	} else {
		if f := rbacNetworkFilter(m, s); f != nil {
			filters = append(filters, f)
		}
		filters = append(filters, tcpProxyFilter(InboundListener, LocalAppCluster, s.Route.IdleTimeout))
	}
	return &listenerv3.Listener{
		Name:    InboundListener,
		Address: socketAddress(in.Address, in.Port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters:         filters,
			TransportSocket: downstreamTransportSocket(m, s, ir.ProxyEnvoy),
		}},
		TrafficDirection: corev3Inbound,
	}
}
