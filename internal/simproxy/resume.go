package simproxy

import (
	"maps"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// firstSotW is what a SotW stream sends first: wildcard clusters and
// listeners, and after a resume also the routes, endpoints and secrets it
// subscribes to, each naming the version held, as Envoy does when it
// re-establishes its ADS stream.
func (p *Proxy) firstSotW() []*discoveryv3.DiscoveryRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []*discoveryv3.DiscoveryRequest{
		{TypeUrl: resource.ClusterType, VersionInfo: p.ver[resource.ClusterType]},
		{TypeUrl: resource.ListenerType, VersionInfo: p.ver[resource.ListenerType]},
	}
	for _, t := range followedTypes {
		if names := p.sorted[t]; p.subs[t] != nil {
			out = append(out, &discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: p.ver[t], ResourceNames: names})
		}
	}
	return out
}

// firstDelta is firstSotW for delta: each request carries the versions of
// the resources held (initial_resource_versions).
func (p *Proxy) firstDelta() []*discoveryv3.DeltaDiscoveryRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []*discoveryv3.DeltaDiscoveryRequest{
		{TypeUrl: resource.ClusterType, InitialResourceVersions: maps.Clone(p.rver[resource.ClusterType])},
		{TypeUrl: resource.ListenerType, InitialResourceVersions: maps.Clone(p.rver[resource.ListenerType])},
	}
	for _, t := range followedTypes {
		if names := p.sorted[t]; len(names) > 0 {
			out = append(out, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: names,
				InitialResourceVersions: maps.Clone(p.rver[t])})
		}
	}
	return out
}

// followedTypes are the types subscribed by name, in Envoy's order.
var followedTypes = []string{resource.EndpointType, resource.RouteType, resource.SecretType}

// applyVersions records a delta response's resource versions.
func (p *Proxy) applyVersions(resp *discoveryv3.DeltaDiscoveryResponse) {
	t := resp.GetTypeUrl()
	vs := p.rver[t]
	if vs == nil {
		vs = map[string]string{}
		p.rver[t] = vs
	}
	for _, r := range resp.GetResources() {
		vs[r.GetName()] = r.GetVersion()
	}
	for _, n := range resp.GetRemovedResources() {
		delete(vs, n)
	}
	// Resources no longer subscribed were dropped (follow); so are their versions.
	for n := range vs {
		if _, ok := p.res[t][n]; !ok {
			delete(vs, n)
		}
	}
}

func (p *Proxy) count(typeURL string, resources, bytes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.recv[typeURL]
	if r == nil {
		r = &Received{}
		p.recv[typeURL] = r
	}
	r.Responses++
	r.Resources += resources
	r.Bytes += int64(bytes)
}

// Received returns what the stream was sent so far, by type URL.
func (p *Proxy) Received() map[string]Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Received, len(p.recv))
	for t, r := range p.recv {
		out[t] = *r
	}
	return out
}

// Held returns what the proxy holds, to resume it on a new stream
// (Options.Resume). Resources are shared, not copied: they are never
// modified.
func (p *Proxy) Held() *Held {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := &Held{res: cloneNested(p.res), ver: maps.Clone(p.ver), rver: cloneNested(p.rver),
		subs: map[string]map[string]bool{}, delta: p.opts.Delta}
	for t, names := range p.subs {
		h.subs[t] = maps.Clone(names)
	}
	return h
}

// Version is the SotW version last accepted for a type.
func (p *Proxy) Version(typeURL string) string { return p.version(typeURL) }

func cloneNested[V any](m map[string]map[string]V) map[string]map[string]V {
	out := make(map[string]map[string]V, len(m))
	for k, v := range m {
		out[k] = maps.Clone(v)
	}
	return out
}

func variant(delta bool) string {
	if delta {
		return "delta"
	}
	return "SotW"
}
