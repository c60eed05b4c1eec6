package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"medmesh/controlplane/ir"
)

// Transport sockets come from this file only, so that mTLS (SPIFFE SVIDs
// over SDS) changes one place: every upstream cluster asks
// upstreamTransportSocket and every inbound filter chain asks
// downstreamTransportSocket.

// upstreamTransportSocket secures a proxy's connections to a service.
// Until the CA lands it returns nil (plaintext).
func upstreamTransportSocket(_ *ir.Mesh, _ *ir.Service, _ ir.ProxyKind) *corev3.TransportSocket {
	return nil
}

// downstreamTransportSocket secures the connections a service accepts.
func downstreamTransportSocket(_ *ir.Mesh, _ *ir.Service) *corev3.TransportSocket {
	return nil
}
