package xds

import (
	"encoding/json"
	"fmt"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/translate"
)

// Scoped configuration (ir/scope.go): each calling service's proxies get
// a shared set of their own, holding only the services that service may
// call. The scope is per service, never per proxy, so every proxy of a
// service shares one set (and one interned snapshot layer per type). The
// pieces of a set (clusters, virtual hosts, listeners) are translated once
// per service and shared by pointer between every set that holds them;
// only a set's outbound route configuration is its own message.
//
// Costs are kept off the common path: an endpoint change alters neither a
// scope nor what any scope holds (the pieces' content keys stay equal),
// so it reuses every caller set without looking at it. Scopes are worked
// out again only when some service's authorization or routes changed, and
// a caller's set is rebuilt only when its scope or a piece of it did.

// callerSet is what the proxies of one calling service, of one kind, share.
type callerSet struct {
	scope []string
	// key fingerprints everything the set was assembled from; equal keys,
	// equal set.
	key    string
	shared *sharedSet
	// seen is the mesh generation that last asked for the set; sets no
	// round asks for are dropped.
	seen uint64
	// scopeEpoch is the authorization the scope was worked out under, and
	// contentEpoch the content of every piece when the set was checked:
	// both unchanged (an endpoint change), the set is reused as it is.
	scopeEpoch, contentEpoch string
	// routeKey names the set's outbound route in scopes.routes.
	routeKey string
}

// scopes is Publish's memory of caller sets between rounds.
type scopes struct {
	gen uint64 // mesh generation: one per new mesh
	// scopeEpoch changes when any service's authorization, PHI flag,
	// scope narrowing or route targets change; contentEpoch when anything
	// a caller set is assembled from changes.
	scopeEpoch, contentEpoch string
	meshWide                 []Hashed
	meshWideByName           map[string]Hashed
	warnings                 []string
	hashes                   map[types.Resource]string // of every piece, by pointer
	callers                  map[string]*callerSet     // by kind|service
	// routes are the Envoy outbound route configurations by the virtual
	// hosts they hold: callers with equal scopes share one message, hashed
	// (marshalled) once; in a full mesh that is one for every caller.
	routes map[string]Hashed
	// byKey finds a live caller set by its key: callers whose scopes hold
	// the same pieces (every caller of a full mesh) share one set, built
	// once, and one snapshot layer per type.
	byKey map[string]*callerSet
}

// scopeKey fingerprints what a service contributes to scopes: its
// authorization, PHI flag, narrowing, namespace and route targets.
func scopeKey(svc *ir.Service) string {
	var targets []string
	for _, r := range svc.Policy.Rules {
		for _, c := range r.Clusters {
			targets = append(targets, c.Cluster)
		}
		if r.Mirror != nil {
			targets = append(targets, r.Mirror.Cluster)
		}
	}
	b, _ := json.Marshal(struct {
		A  ir.Authz
		P  bool
		E  bool
		N  string
		T  []string
		HP bool
	}{svc.Authz, svc.PHI, svc.ExplicitScope, svc.Namespace, targets, svc.Protocol.IsHTTP()})
	return Fingerprint(b)
}

// contentKey fingerprints what callers are sent of a service: the content
// hashes of its clusters, virtual host and proxyless listener and route
// (in and out of scope). Endpoints are not in it.
func contentKey(set *translate.ServiceSet, hashes map[types.Resource]string) string {
	var b strings.Builder
	add := func(rs ...types.Resource) {
		for _, r := range rs {
			if r != nil {
				b.WriteString(hashes[r])
			}
			b.WriteByte('|')
		}
	}
	add(set.EnvoyCluster, set.ProxylessCluster, set.ProxylessListener, set.ProxylessRoute,
		set.ProxylessDeniedListener, set.ProxylessDeniedRoute)
	add(set.SubsetEnvoyClusters...)
	add(set.SubsetProxylessClusters...)
	if set.EnvoyVirtualHost != nil {
		add(set.EnvoyVirtualHost)
	}
	return Fingerprint([]byte(b.String()))
}

// newMesh notes a newly translated mesh: its mesh-wide listeners and the
// epochs that say whether caller sets may be reused.
func (sc *scopes) newMesh(mesh *ir.Mesh, memo map[string]*serviceMemo, meshWide []Hashed, warnings []string,
	hashes map[types.Resource]string) {
	sc.hashes = hashes
	sc.gen++
	var scopeB, contentB strings.Builder
	fmt.Fprintf(&scopeB, "%t|%s|%s|", mesh.MTLS, mesh.TrustDomain, mesh.Site)
	for i := range mesh.Services {
		m := memo[mesh.Services[i].Name]
		scopeB.WriteString(mesh.Services[i].Name + "=" + m.scopeKey + ";")
		contentB.WriteString(mesh.Services[i].Name + "=" + m.contentKey + ";")
	}
	sc.meshWide = meshWide
	sc.meshWideByName = make(map[string]Hashed, len(meshWide))
	for _, h := range meshWide {
		sc.meshWideByName[h.Name] = h
		contentB.WriteString(h.Name + "=" + h.Hash + ";")
	}
	sc.scopeEpoch = Fingerprint([]byte(scopeB.String()))
	sc.contentEpoch = Fingerprint([]byte(contentB.String()))
	sc.warnings = warnings
	if sc.callers == nil {
		sc.callers = map[string]*callerSet{}
	}
}

// callerShared returns the shared set for the proxies of one service and
// kind, building or rebuilding it only when what it is made of changed.
func (s *Server) callerShared(kind wire.ProxyKind, service string) (*callerSet, error) {
	pub := &s.pub
	sc := &pub.scopes
	k := string(kind) + "|" + service
	cs := sc.callers[k]
	if cs != nil && cs.seen == sc.gen {
		return cs, nil
	}
	if cs != nil && cs.scopeEpoch == sc.scopeEpoch && cs.contentEpoch == sc.contentEpoch {
		// Nothing a caller set is made of changed (an endpoint change):
		// skip even fingerprinting its scope, which is the size of the
		// mesh for every caller of a full mesh.
		cs.seen = sc.gen
		return cs, nil
	}
	var scope []string
	if cs != nil && cs.scopeEpoch == sc.scopeEpoch {
		scope = cs.scope
	} else {
		scope = pub.mesh.Scope(service)
	}
	key := s.callerKey(kind, scope)
	if cs != nil && cs.key == key {
		cs.seen, cs.scope, cs.scopeEpoch, cs.contentEpoch = sc.gen, scope, sc.scopeEpoch, sc.contentEpoch
		return cs, nil
	}
	var shared *sharedSet
	var routeKey string
	if same := sc.byKey[key]; same != nil {
		shared, routeKey = same.shared, same.routeKey
	} else {
		var err error
		if shared, routeKey, err = s.buildCallerSet(kind, service, scope); err != nil {
			return nil, err
		}
	}
	cs = &callerSet{scope: scope, key: key, shared: shared, seen: sc.gen, scopeEpoch: sc.scopeEpoch,
		contentEpoch: sc.contentEpoch, routeKey: routeKey}
	sc.callers[k] = cs
	if sc.byKey == nil {
		sc.byKey = map[string]*callerSet{}
	}
	sc.byKey[key] = cs
	return cs, nil
}

// callerKey fingerprints a caller set's inputs: the scope and the content
// of every piece it takes. A proxyless set takes a piece of every service
// (the out-of-scope listeners), so the mesh's content epoch stands in.
func (s *Server) callerKey(kind wire.ProxyKind, scope []string) string {
	sc := &s.pub.scopes
	var b strings.Builder
	b.WriteString(string(kind) + "|")
	if kind == wire.ProxyProxyless {
		b.WriteString(sc.contentEpoch + "|")
		for _, n := range scope {
			b.WriteString(n + ";")
		}
		return Fingerprint([]byte(b.String()))
	}
	b.WriteString(sc.meshWideByName[wire.OutboundHTTPListener].Hash + "|")
	for _, h := range sc.meshWide {
		if _, ok := h.Resource.(*clusterv3.Cluster); ok {
			b.WriteString(h.Name + "=" + h.Hash + "|") // the collector's
		}
	}
	for _, n := range scope {
		b.WriteString(n + "=" + s.pub.services[n].contentKey)
		if l, ok := sc.meshWideByName[wire.OutboundTCPListener(n)]; ok {
			b.WriteString("/" + l.Hash)
		}
		b.WriteByte(';')
	}
	return Fingerprint([]byte(b.String()))
}

// buildCallerSet assembles, validates and hashes a caller's set. Every
// piece but the Envoy outbound route was validated and hashed with its
// service; the route is shared by callers with equal scopes (routeKey
// names it in scopes.routes).
func (s *Server) buildCallerSet(kind wire.ProxyKind, service string, scope []string) (*sharedSet, string, error) {
	pub := &s.pub
	hashes := pub.scopes.hashes
	lookup := func(name string) *translate.ServiceSet {
		if m := pub.services[name]; m != nil {
			return m.set
		}
		return nil
	}
	meshWide := &translate.Resources{}
	for _, h := range pub.scopes.meshWide {
		if _, ok := h.Resource.(*clusterv3.Cluster); ok {
			meshWide.Clusters = append(meshWide.Clusters, h.Resource)
		} else {
			meshWide.Listeners = append(meshWide.Listeners, h.Resource)
		}
	}
	res := translate.ForCaller(pub.mesh, service, kind, meshWide, lookup, scope)
	routeKey := ""
	if kind == wire.ProxyEnvoy && len(res.Routes) == 1 {
		// The outbound route: its virtual hosts were validated with their
		// services, and the catch-all is the same for every caller. It is
		// hashed like every resource, by its encoding (the version
		// go-control-plane's delta server puts on the wire, so a delta
		// proxy reconnecting to a restarted control plane with the route
		// it holds is sent nothing), once per distinct set of virtual
		// hosts: callers with equal scopes share the message.
		var b strings.Builder
		for _, n := range scope {
			if m := pub.services[n]; m != nil && m.set.EnvoyVirtualHost != nil {
				b.WriteString(n + "=" + m.hashes[m.set.EnvoyVirtualHost] + ";")
			}
		}
		routeKey = Fingerprint([]byte(b.String()))
		if pub.scopes.routes == nil {
			pub.scopes.routes = map[string]Hashed{}
		}
		h, ok := pub.scopes.routes[routeKey]
		if !ok {
			if err := res.Routes[0].(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				return nil, "", fmt.Errorf("outbound routes of %q: %w", service, err)
			}
			hash, err := HashResource(res.Routes[0])
			if err != nil {
				return nil, "", err
			}
			h = Hashed{Name: wire.OutboundHTTPRoute, Resource: res.Routes[0], Hash: hash}
			pub.scopes.routes[routeKey] = h
		}
		res.Routes[0] = h.Resource
		hashes[h.Resource] = h.Hash
		defer delete(hashes, h.Resource) // kept in scopes.routes, not the pieces' map
	}
	items, err := hashResources(res, hashes)
	if err != nil {
		return nil, "", err
	}
	return newShared(items), routeKey, nil
}

// dropUnusedCallers forgets the sets no proxy of this mesh asked for.
func (sc *scopes) dropUnusedCallers() {
	inUse := make(map[string]bool, len(sc.routes))
	clear(sc.byKey)
	for k, cs := range sc.callers {
		if cs.seen != sc.gen {
			delete(sc.callers, k)
			continue
		}
		inUse[cs.routeKey] = true
		if sc.byKey != nil {
			sc.byKey[cs.key] = cs
		}
	}
	for k := range sc.routes {
		if !inUse[k] {
			delete(sc.routes, k)
		}
	}
}

// ScopeFor returns the service a proxy was last published as and the
// services it was sent (that service's scope, sorted); ok is false for a
// proxy that is sent none (an SVID agent) or was not published yet.
func (s *Server) ScopeFor(id string) (service string, scope []string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pb, found := s.published[id]
	if !found || pb.as.scope == nil {
		return "", nil, false
	}
	return pb.as.service, pb.as.scope, true
}

// hashVirtualHost hashes a virtual host (a message, though not a
// resource of its own).
func hashVirtualHost(set *translate.ServiceSet) (string, error) {
	if set.EnvoyVirtualHost == nil {
		return "", nil
	}
	return HashResource(set.EnvoyVirtualHost)
}
