// Package translate turns the IR into Envoy xDS resources. It is a pure
// function of its inputs: no I/O, no clocks, no globals, so golden tests pin
// its output byte for byte. Each Envoy feature lives in its own file.
//
// Translation is split in two so that a mesh of thousands of proxies stays
// cheap: Shared builds what every proxy of a kind receives (upstream
// clusters, endpoints, outbound routes) once per mesh change, and ForProxy
// adds the few resources that belong to one proxy (its inbound side).
package translate

import (
	"errors"
	"fmt"
	"net"
	"sort"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// Resource names of medmesh's own that only the translator uses; the
// names data planes refer to are in api/wire.
const (
	InboundRoute    = "inbound"
	LocalAppCluster = "inbound|local_app"
)

// Resources are the xDS resources for one proxy, or the shared part of
// them, grouped by type and sorted by name.
type Resources struct {
	Listeners []types.Resource
	Routes    []types.Resource
	Clusters  []types.Resource
	Endpoints []types.Resource
	Secrets   []types.Resource
	// Warnings are operator-visible problems that did not stop translation
	// (e.g. two TCP services claiming one local port).
	Warnings []string
}

// ByType returns the resources keyed by xDS type URL.
func (r *Resources) ByType() map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ListenerType: r.Listeners,
		resource.RouteType:    r.Routes,
		resource.ClusterType:  r.Clusters,
		resource.EndpointType: r.Endpoints,
		resource.SecretType:   r.Secrets,
	}
}

// validator is implemented by every generated Envoy message.
type validator interface{ ValidateAll() error }

// Validate runs Envoy's own proto validation (ValidateAll) on every
// resource and returns every failure, each naming the resource.
func (r *Resources) Validate() error {
	var errs []error
	for typ, rs := range r.ByType() {
		for _, res := range rs {
			v, ok := res.(validator)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: %T has no validation", typ, res))
				continue
			}
			if err := v.ValidateAll(); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", shortType(typ), name(res), err))
			}
		}
	}
	return errors.Join(errs...)
}

func (r *Resources) sort() {
	for _, rs := range [][]types.Resource{r.Listeners, r.Routes, r.Clusters, r.Endpoints, r.Secrets} {
		sort.Slice(rs, func(i, j int) bool { return name(rs[i]) < name(rs[j]) })
	}
}

// Merge returns shared plus per-proxy resources as one set.
func Merge(a, b *Resources) *Resources {
	out := &Resources{
		Listeners: append(append([]types.Resource{}, a.Listeners...), b.Listeners...),
		Routes:    append(append([]types.Resource{}, a.Routes...), b.Routes...),
		Clusters:  append(append([]types.Resource{}, a.Clusters...), b.Clusters...),
		Endpoints: append(append([]types.Resource{}, a.Endpoints...), b.Endpoints...),
		Secrets:   append(append([]types.Resource{}, a.Secrets...), b.Secrets...),
		Warnings:  append(append([]string{}, a.Warnings...), b.Warnings...),
	}
	out.sort()
	return out
}

// SharedSet is what Shared returns: the common resources per proxy kind.
type SharedSet struct {
	Envoy     *Resources
	Proxyless *Resources
	// Endpoints are the same for every kind of proxy; the xDS layer serves
	// them from one shared cache so an endpoint change costs one update,
	// not one per proxy.
	Endpoints []types.Resource
}

// Shared translates everything, for a caller that may call every
// service (tests; the control plane assembles per caller with ForCaller).
func Shared(m *ir.Mesh) *SharedSet {
	sets := make([]*ServiceSet, 0, len(m.Services))
	for i := range m.Services {
		sets = append(sets, ForService(m, &m.Services[i]))
	}
	return Assemble(MeshWide(m), sets)
}

// ServiceSet is what one service contributes to the shared resources. It
// depends only on that service (and the mesh's mTLS settings), so the
// control loop can keep it while the service does not change, and every
// caller whose scope holds the service shares these messages.
type ServiceSet struct {
	Endpoints         types.Resource
	EnvoyCluster      types.Resource
	ProxylessCluster  types.Resource
	ProxylessListener types.Resource // nil for TCP services
	ProxylessRoute    types.Resource // nil for TCP services
	// EnvoyVirtualHost is the service's virtual host on an Envoy's
	// outbound route (nil for TCP services).
	EnvoyVirtualHost *routev3.VirtualHost
	// ProxylessDeniedListener and ProxylessDeniedRoute are what a gRPC
	// client outside the service's callers gets instead (scope.go); nil
	// for TCP services.
	ProxylessDeniedListener, ProxylessDeniedRoute types.Resource
	// Subsets are the service's route-policy subsets: per subset an
	// endpoint assignment and a cluster for each kind of proxy.
	SubsetEndpoints, SubsetEnvoyClusters, SubsetProxylessClusters []types.Resource
}

// ForService translates one service's share of the shared resources.
func ForService(m *ir.Mesh, svc *ir.Service) *ServiceSet {
	set := &ServiceSet{
		EnvoyCluster:     upstreamCluster(m, svc, wire.ProxyEnvoy),
		ProxylessCluster: upstreamCluster(m, svc, wire.ProxyProxyless),
	}
	set.Endpoints, set.SubsetEndpoints = Endpoints(svc)
	if svc.Protocol.IsHTTP() {
		set.ProxylessListener = proxylessClientListener(svc)
		set.ProxylessRoute = proxylessRouteConfig(svc)
		set.EnvoyVirtualHost = serviceVirtualHost(svc)
		set.ProxylessDeniedListener, set.ProxylessDeniedRoute = proxylessDenied(svc)
	}
	for i := range svc.Policy.Subsets {
		sub := &svc.Policy.Subsets[i]
		set.SubsetEnvoyClusters = append(set.SubsetEnvoyClusters, subsetCluster(m, svc, sub, wire.ProxyEnvoy))
		set.SubsetProxylessClusters = append(set.SubsetProxylessClusters, subsetCluster(m, svc, sub, wire.ProxyProxyless))
	}
	return set
}

// Endpoints translates a service's endpoint assignments: its own and its
// subsets'. They are the only part of a ServiceSet that its instances
// (svc.Localities, the subsets' Localities) decide, so a change of
// instances alone needs only these again.
func Endpoints(svc *ir.Service) (endpoints types.Resource, subsets []types.Resource) {
	for i := range svc.Policy.Subsets {
		sub := &svc.Policy.Subsets[i]
		subsets = append(subsets, assignment(sub.Cluster, sub.Localities, svc.Policy.Failover))
	}
	return loadAssignment(svc), subsets
}

// Resources returns the set's resources, for validation and hashing (the
// virtual host is not a resource of its own: see Validate).
func (s *ServiceSet) Resources() *Resources {
	r := &Resources{Endpoints: []types.Resource{s.Endpoints}, Clusters: []types.Resource{s.EnvoyCluster, s.ProxylessCluster}}
	if s.ProxylessListener != nil {
		r.Listeners = []types.Resource{s.ProxylessListener}
		r.Routes = []types.Resource{s.ProxylessRoute}
	}
	r.Endpoints = append(r.Endpoints, s.SubsetEndpoints...)
	r.Clusters = append(append(r.Clusters, s.SubsetEnvoyClusters...), s.SubsetProxylessClusters...)
	return r
}

// DeniedResources are the proxyless out-of-scope listener and route.
func (s *ServiceSet) DeniedResources() *Resources {
	if s.ProxylessDeniedListener == nil {
		return &Resources{}
	}
	return &Resources{Listeners: []types.Resource{s.ProxylessDeniedListener}, Routes: []types.Resource{s.ProxylessDeniedRoute}}
}

// Validate runs ValidateAll on every resource of the set and its virtual
// host.
func (s *ServiceSet) Validate() error {
	errs := []error{s.Resources().Validate(), s.DeniedResources().Validate()}
	if s.EnvoyVirtualHost != nil {
		if err := s.EnvoyVirtualHost.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("virtual host %q: %w", s.EnvoyVirtualHost.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// MeshWide translates the Envoy resources built from every service at
// once: the outbound listeners (which TCP service gets which local port
// is decided mesh-wide, so a port never changes hands with a scope), and
// the collector's cluster when request tracing is on.
func MeshWide(m *ir.Mesh) *Resources {
	r := &Resources{Warnings: append([]string(nil), m.Warnings...)}
	if m.EnvoyTracing.Enabled() {
		// The outbound HTTP listener is each proxy's own (ForProxy).
		r.Clusters = append(r.Clusters, otlpCluster(m.EnvoyTracing))
	} else {
		r.Listeners = append(r.Listeners, outboundHTTPListener(m, nil))
	}
	tcp, warns := outboundTCPListeners(m)
	r.Listeners = append(r.Listeners, tcp...)
	r.Warnings = append(r.Warnings, warns...)
	return r
}

// Assemble combines mesh-wide resources and per-service sets, every
// service in scope.
func Assemble(meshWide *Resources, sets []*ServiceSet) *SharedSet {
	s := &SharedSet{Envoy: &Resources{
		Listeners: append([]types.Resource(nil), meshWide.Listeners...),
		Clusters:  append([]types.Resource(nil), meshWide.Clusters...),
		Warnings:  meshWide.Warnings,
	}, Proxyless: &Resources{}}
	var vhosts []*routev3.VirtualHost
	for _, set := range sets {
		s.Endpoints = append(s.Endpoints, set.Endpoints)
		s.Envoy.Clusters = append(s.Envoy.Clusters, set.EnvoyCluster)
		s.Proxyless.Clusters = append(s.Proxyless.Clusters, set.ProxylessCluster)
		if set.ProxylessListener != nil {
			s.Proxyless.Listeners = append(s.Proxyless.Listeners, set.ProxylessListener)
			s.Proxyless.Routes = append(s.Proxyless.Routes, set.ProxylessRoute)
			vhosts = append(vhosts, set.EnvoyVirtualHost)
		}
		s.Endpoints = append(s.Endpoints, set.SubsetEndpoints...)
		s.Envoy.Clusters = append(s.Envoy.Clusters, set.SubsetEnvoyClusters...)
		s.Proxyless.Clusters = append(s.Proxyless.Clusters, set.SubsetProxylessClusters...)
	}
	s.Envoy.Routes = []types.Resource{OutboundRouteConfig(vhosts)}
	s.Envoy.sort()
	s.Proxyless.sort()
	sort.Slice(s.Endpoints, func(i, j int) bool { return name(s.Endpoints[i]) < name(s.Endpoints[j]) })
	return s
}

// ForProxy translates the resources that belong to one proxy alone. svid
// is the identity issued to the proxy, if any (an Envoy gets it as an SDS
// secret; without one its mTLS listeners and clusters stay unusable).
func ForProxy(m *ir.Mesh, p *ir.Proxy, svid *ir.Identity) *Resources {
	r := &Resources{}
	for _, sec := range secrets(m, p, svid) {
		r.Secrets = append(r.Secrets, sec)
	}
	if p.Kind == wire.ProxySVIDAgent {
		return r // an SVID agent gets its secrets and nothing else
	}
	if p.Kind == wire.ProxyEnvoy && m.EnvoyTracing.Enabled() {
		// Every Envoy calls out, registered or not.
		r.Listeners = append(r.Listeners, outboundHTTPListener(m, proxyTracing(m, p.Service)))
	}
	svc, ok := m.Service(p.Service)
	if !ok || p.Instance == nil {
		// An outbound-only client (or an instance not registered yet):
		// it may call services but serves nothing.
		r.sort()
		return r
	}
	if net.ParseIP(p.Instance.Address) == nil {
		r.Warnings = append(r.Warnings, fmt.Sprintf("proxy %q: instance address %q is not an IP address; no inbound listener",
			p.ID, p.Instance.Address))
		r.sort()
		return r
	}
	switch p.Kind {
	case wire.ProxyProxyless:
		if svc.Protocol.IsHTTP() {
			for _, l := range proxylessServerListeners(m, svc, p.Instance) {
				r.Listeners = append(r.Listeners, l)
			}
		}
	default:
		r.Listeners = append(r.Listeners, inboundListener(m, svc, p.Instance))
		r.Clusters = append(r.Clusters, localAppCluster(svc, p.Instance))
		if svc.Protocol.IsHTTP() {
			r.Routes = append(r.Routes, inboundRouteConfig(svc))
			r.Clusters = append(r.Clusters, extProcCluster())
		}
	}
	r.sort()
	return r
}

// Translate is the whole translation for one proxy: what its service's
// scope holds plus its own resources, the endpoints its clusters name
// included. Golden tests use it.
func Translate(m *ir.Mesh, p *ir.Proxy, svid *ir.Identity) *Resources {
	sets := make(map[string]*ServiceSet, len(m.Services))
	for i := range m.Services {
		sets[m.Services[i].Name] = ForService(m, &m.Services[i])
	}
	lookup := func(name string) *ServiceSet { return sets[name] }
	scope := m.Scope(p.Service)
	var base *Resources
	switch p.Kind {
	case wire.ProxyProxyless, wire.ProxyEnvoy:
		meshWide := MeshWide(m)
		base = ForCaller(m, p.Service, p.Kind, meshWide, lookup, scope)
		base.Warnings = meshWide.Warnings
	default:
		base = &Resources{}
	}
	out := Merge(base, ForProxy(m, p, svid))
	if p.Kind == wire.ProxyProxyless || p.Kind == wire.ProxyEnvoy {
		for _, n := range scope {
			out.Endpoints = append(append(out.Endpoints, sets[n].Endpoints), sets[n].SubsetEndpoints...)
		}
	}
	out.sort()
	return out
}

// name is a resource's name (a ClusterLoadAssignment's cluster name).
func name(r types.Resource) string { return cache.GetResourceName(r) }

func shortType(t resource.Type) string {
	switch t {
	case resource.ListenerType:
		return "listener"
	case resource.RouteType:
		return "route"
	case resource.ClusterType:
		return "cluster"
	case resource.EndpointType:
		return "endpoints"
	case resource.SecretType:
		return "secret"
	}
	return t
}
