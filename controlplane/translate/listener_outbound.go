package translate

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// outboundHTTPListener is where applications beside an Envoy sidecar send
// HTTP and gRPC calls for mesh services, on loopback only. Every Envoy
// shares it, except with request tracing on: its spans are named after
// the sidecar's service, so each proxy then gets its own (ForProxy).
func outboundHTTPListener(m *ir.Mesh, tracing *hcmv3.HttpConnectionManager_Tracing) *listenerv3.Listener {
	hcm := httpConnectionManager(hcmOptions{statPrefix: wire.OutboundHTTPListener, rdsName: wire.OutboundHTTPRoute, stripPort: true, accessLog: true,
		normalizePaths: true, tracing: tracing})
	if anyFault(m) {
		hcm = withFaultFilter(hcm)
	}
	return &listenerv3.Listener{
		Name:    wire.OutboundHTTPListener,
		Address: socketAddress("127.0.0.1", wire.OutboundHTTPPort),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{hcmFilter(hcm)},
		}},
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
	}
}

// outboundTCPListeners give every TCP service a loopback listener on its
// port. Two services on one port cannot both have one: the first by name
// keeps it and the clash is reported, rather than sending Envoy two
// listeners on one address, which it would reject as a whole.
func outboundTCPListeners(m *ir.Mesh) ([]types.Resource, []string) {
	var out []types.Resource
	var warns []string
	taken := map[int]string{}
	for i := range m.Services {
		s := &m.Services[i]
		if s.Protocol.IsHTTP() {
			continue
		}
		if other, ok := taken[s.Port]; ok || s.Port == wire.OutboundHTTPPort {
			if !ok {
				other = wire.OutboundHTTPListener
			}
			warns = append(warns, fmt.Sprintf("service %q: outbound TCP port %d is already used by %q; no local listener", s.Name, s.Port, other))
			continue
		}
		taken[s.Port] = s.Name
		out = append(out, &listenerv3.Listener{
			Name:    wire.OutboundTCPListener(s.Name),
			Address: socketAddress("127.0.0.1", s.Port),
			FilterChains: []*listenerv3.FilterChain{{
				Filters: []*listenerv3.Filter{tcpProxyFilter("outbound_tcp|"+s.Name, s.Name, s.Route.IdleTimeout)},
			}},
			TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		})
	}
	return out, warns
}

func tcpProxyFilter(statPrefix, cluster string, idle time.Duration) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name: wellknown.TCPProxy,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{
			StatPrefix:       statPrefix,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
			IdleTimeout:      dur(idle),
		})},
	}
}
