package wire

import (
	"net"
	"strconv"
)

// Resource names that bootstraps, SVID agents and applications refer to.
// "|" cannot appear in a DNS-compatible service name, so medmesh's own
// names never collide with a service's.
const (
	// SVIDSecret and BundleSecret are the SDS secrets holding a proxy's
	// X.509-SVID and the trust bundle.
	SVIDSecret   = "medmesh/svid"
	BundleSecret = "medmesh/bundle"
	// CertProviderInstance is the certificate provider instance that
	// proxyless bootstraps define and translated TLS contexts name.
	CertProviderInstance = "medmesh"

	OutboundHTTPListener = "outbound_http"
	OutboundHTTPRoute    = "outbound_http"
	InboundListener      = "inbound"

	// ProxylessServerListenerPrefix is the prefix of the
	// server_listener_resource_name_template in proxyless bootstraps.
	ProxylessServerListenerPrefix = "medmesh/inbound/"
)

// ProxylessServerListenerName is the listener a proxyless server at
// host:port asks for.
func ProxylessServerListenerName(host string, port int) string {
	return ProxylessServerListenerPrefix + net.JoinHostPort(host, strconv.Itoa(port))
}

// OutboundTCPListener names the local listener for a TCP service.
func OutboundTCPListener(service string) string { return "outbound_tcp|" + service }
