package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// Scoped configuration (ir/scope.go): a caller is sent only the services
// it may call. Everything here is assembled from per-service pieces that
// are translated once (ServiceSet) and shared by pointer between every
// caller whose scope holds them; only the outbound route configuration,
// whose virtual hosts are the scope's, is a message of the caller's own.

// OutOfScopeVirtualHost is the name of the catch-all virtual host that
// answers a call for a service outside the caller's scope.
const OutOfScopeVirtualHost = "medmesh|out_of_scope"

// OutOfScopeStatus is the HTTP status of that answer: the call is refused
// locally, at once, instead of waiting on a cluster that does not exist.
const OutOfScopeStatus = 403

// OutOfScopeCluster is the cluster a proxyless client's out-of-scope
// routes name. gRPC resolves every cluster a route names before it uses
// the route (gRFC A74), so naming the service's own cluster, which is
// not sent, would hold the client's calls for the 15 s resource timer;
// this one exists, with no endpoints, and the fault ends every call first.
const OutOfScopeCluster = "medmesh|out_of_scope"

// OutOfScopeEndpoints is OutOfScopeCluster's (empty) assignment, served
// from the shared endpoint cache like any other.
func OutOfScopeEndpoints() *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: OutOfScopeCluster}
}

func outOfScopeCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 OutOfScopeCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       dur(time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

// permissionDenied is gRPC's PERMISSION_DENIED, what a proxyless client's
// call to a service outside its scope fails with.
const permissionDenied = 7

// outOfScopeBody says why a call was refused by the caller's own sidecar.
// It does not name the caller, so that callers with equal scopes share one
// route configuration (in a full mesh, every caller).
const outOfScopeBody = "medmesh: this sidecar's service may not call this host: it is not a mesh service, or no intention " +
	"or MeshAccess lets the service call it (PHI services deny callers by default), so this sidecar was not sent its " +
	"configuration; `medmesh status --scope SERVICE` shows what a service may call and why\n"

// outOfScopeVirtualHost matches every host no other virtual host takes.
func outOfScopeVirtualHost() *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    OutOfScopeVirtualHost,
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Name:  OutOfScopeVirtualHost,
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
				Status: OutOfScopeStatus,
				Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: outOfScopeBody}},
			}},
		}},
	}
}

// serviceVirtualHost is a service's virtual host on the outbound route.
func serviceVirtualHost(s *ir.Service) *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    s.Name,
		Domains: []string{s.Name, s.Name + ".service.consul"},
		Routes:  serviceRoutes(s, wire.ProxyEnvoy),
	}
}

// OutboundRouteConfig is an Envoy sidecar's outbound route table: the
// virtual hosts of the services in its scope (shared messages), then the
// catch-all that refuses everything else with a local reply.
func OutboundRouteConfig(vhosts []*routev3.VirtualHost) *routev3.RouteConfiguration {
	all := make([]*routev3.VirtualHost, 0, len(vhosts)+1)
	all = append(all, vhosts...)
	return &routev3.RouteConfiguration{Name: wire.OutboundHTTPRoute, VirtualHosts: append(all, outOfScopeVirtualHost())}
}

// proxylessDenied are the listener and route a gRPC client is sent for an
// HTTP-family service outside its scope: every call fails at once, in the
// client, with PERMISSION_DENIED (gRPC's fault filter, which grpc-go and
// grpc-js implement), where without them it would wait for a listener
// that never comes. The server's RBAC would refuse the call the same way.
func proxylessDenied(s *ir.Service) (*listenerv3.Listener, *routev3.RouteConfiguration) {
	hcm := withFaultFilter(httpConnectionManager(hcmOptions{statPrefix: s.Name, rdsName: s.Name}))
	l := &listenerv3.Listener{Name: s.Name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)}}
	code := uint32(permissionDenied)
	rc := &routev3.RouteConfiguration{
		Name: s.Name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    s.Name,
			Domains: []string{s.Name},
			Routes: []*routev3.Route{{
				Name:  s.Name + "|" + OutOfScopeVirtualHost,
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				// A route action is required; the fault ends every call
				// before a host of the (empty) cluster would be picked.
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: OutOfScopeCluster},
				}},
				TypedPerFilterConfig: map[string]*anypb.Any{
					faultFilterName: mustAny(httpFault(&ir.Fault{AbortPercent: 100, GRPCStatus: &code})),
				},
			}},
		}},
	}
	return l, rc
}

// ForCaller assembles what a calling service's proxies of one kind share:
// from meshWide (MeshWide's listeners and clusters) and each service's set (set looks
// one up by name), the resources of the services in scope (ir.Mesh.Scope).
// Endpoints are left out: proxies subscribe to the assignments their
// clusters name. A proxyless client also gets, for each HTTP service out
// of its scope, a listener that fails its calls with PERMISSION_DENIED.
func ForCaller(m *ir.Mesh, caller string, kind wire.ProxyKind, meshWide *Resources, set func(string) *ServiceSet, scope []string) *Resources {
	r := &Resources{}
	if kind == wire.ProxyProxyless {
		denied := false
		in := make(map[string]bool, len(scope))
		for _, name := range scope {
			in[name] = true
		}
		for i := range m.Services {
			s := set(m.Services[i].Name)
			if s == nil {
				continue
			}
			if in[m.Services[i].Name] {
				r.Clusters = append(append(r.Clusters, s.ProxylessCluster), s.SubsetProxylessClusters...)
				if s.ProxylessListener != nil {
					r.Listeners = append(r.Listeners, s.ProxylessListener)
					r.Routes = append(r.Routes, s.ProxylessRoute)
				}
			} else if s.ProxylessDeniedListener != nil {
				r.Listeners = append(r.Listeners, s.ProxylessDeniedListener)
				r.Routes = append(r.Routes, s.ProxylessDeniedRoute)
				denied = true
			}
		}
		if denied {
			r.Clusters = append(r.Clusters, outOfScopeCluster())
			r.Endpoints = append(r.Endpoints, OutOfScopeEndpoints())
		}
		r.sort()
		return r
	}
	listeners := map[string]bool{wire.OutboundHTTPListener: true}
	vhosts := make([]*routev3.VirtualHost, 0, len(scope))
	for _, name := range scope {
		s := set(name)
		if s == nil {
			continue
		}
		listeners[wire.OutboundTCPListener(name)] = true
		r.Clusters = append(append(r.Clusters, s.EnvoyCluster), s.SubsetEnvoyClusters...)
		if s.EnvoyVirtualHost != nil {
			vhosts = append(vhosts, s.EnvoyVirtualHost)
		}
	}
	for _, l := range meshWide.Listeners {
		if listeners[name(l)] {
			r.Listeners = append(r.Listeners, l)
		}
	}
	r.Clusters = append(r.Clusters, meshWide.Clusters...) // the collector's, with tracing
	r.Routes = []types.Resource{OutboundRouteConfig(vhosts)}
	r.sort()
	return r
}
