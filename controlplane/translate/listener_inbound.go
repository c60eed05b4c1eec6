package translate

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"medmesh/controlplane/ir"
	"medmesh/registry"
)

// inboundListener accepts the mesh's calls to this instance on its
// registered address and port and hands them to the local application.
func inboundListener(m *ir.Mesh, s *ir.Service, in *registry.Instance) *listenerv3.Listener {
	var filter *listenerv3.Filter
	if s.Protocol.IsHTTP() {
		filter = hcmFilter(httpConnectionManager(hcmOptions{statPrefix: InboundListener, rdsName: InboundRoute}))
	} else {
		filter = tcpProxyFilter(InboundListener, LocalAppCluster, s.Route.IdleTimeout)
	}
	return &listenerv3.Listener{
		Name:    InboundListener,
		Address: socketAddress(in.Address, in.Port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters:         []*listenerv3.Filter{filter},
			TransportSocket: downstreamTransportSocket(m, s, ir.ProxyEnvoy),
		}},
		TrafficDirection: corev3Inbound,
	}
}
