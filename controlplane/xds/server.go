// Package xds serves medmesh's configuration to proxies over ADS, both
// state-of-the-world and delta, with go-control-plane's server and
// snapshot caches. Endpoints, which change most, live in one cache shared
// by every proxy (endpoints.go); everything else is a per-proxy snapshot,
// versioned by content hash. The Tracker (tracker.go) records who is
// connected and what each proxy ACKed or NACKed.
//
// Publish (publish.go) is the one way in: given a round (the mesh and
// every connected proxy with its identity) it translates what changed,
// validates and hashes it, and touches the caches make-before-break.
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// ErrInconsistent means a snapshot referenced resources it does not hold.
var ErrInconsistent = errors.New("inconsistent snapshot")

// Server is the ADS server with its caches.
type Server struct {
	log       *slog.Logger
	envoy     cache.SnapshotCache // ADS semantics: Envoy asks for everything it was given
	proxyless cache.SnapshotCache // grpc-go asks for single resources by name
	endpoints *endpointCache
	xds       server.Server
	tracker   *Tracker
	metrics   *Metrics

	mu        sync.Mutex
	epHashes  map[string]string // endpoint resource name -> content hash
	published map[string]*Published
	interned  map[string]*internedSet // type/version -> set shared by proxies

	pub publisher // Publish's memory between rounds (publish.go)
}

// Published is what was last published for one proxy.
type Published struct {
	Versions map[string]string // type URL -> version
	snapshot *layeredSnapshot
	kind     wire.ProxyKind
	// inputs fingerprint what the proxy's own resources were translated
	// from (publish.go); equal inputs mean equal output, so it is skipped.
	inputs string
	// as is who the proxy was resolved to be when it was published.
	as publishedAs
}

// publishedAs is who a proxy was resolved to be, copied out of the mesh
// so that a quiet proxy does not keep an old mesh alive.
type publishedAs struct {
	service  string
	instance *ir.Instance // nil: not a registered instance
	http     bool         // the service's instances get inbound listeners
	// scope is what the proxy's service may call, as it was sent
	// (shared by every proxy of the service; never modified).
	scope []string
}

// New creates the caches and the go-control-plane server.
func New(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) *Server {
	m := NewMetrics(reg)
	s := &Server{
		log:       log,
		envoy:     cache.NewSnapshotCache(true, cache.IDHash{}, logAdapter{log}),
		proxyless: cache.NewSnapshotCache(false, cache.IDHash{}, logAdapter{log}),
		// Endpoint versions are content-derived (endpointversion.go): a
		// restarted control plane sends the same ones.
		endpoints: newEndpointCache(),
		tracker:   NewTracker(m),
		metrics:   m,
		epHashes:  map[string]string{},
		published: map[string]*Published{},
		interned:  map[string]*internedSet{},
	}
	mux := &cache.MuxCache{
		Classify: func(r *cache.Request) string {
			return classify(r.GetTypeUrl(), ProxyKindOf(r.GetNode()))
		},
		ClassifyDelta: func(r *cache.DeltaRequest) string {
			return classify(r.GetTypeUrl(), ProxyKindOf(r.GetNode()))
		},
		Caches: map[string]cache.Cache{"eds": s.endpoints, "envoy": s.envoy, "proxyless": s.proxyless},
	}
	s.xds = server.NewServer(ctx, mux, s.tracker)
	if reg != nil {
		reg.MustRegister(standingNACKs{s.tracker})
	}
	return s
}

func classify(typeURL string, kind wire.ProxyKind) string {
	if typeURL == resource.EndpointType {
		return "eds"
	}
	if kind == wire.ProxyProxyless {
		return "proxyless"
	}
	return "envoy"
}

// Register adds the ADS services (and the per-type services, for clients
// that do not aggregate) to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	secretservice.RegisterSecretDiscoveryServiceServer(g, s.xds)
}

// Tracker returns the connection and ACK/NACK tracker.
func (s *Server) Tracker() *Tracker { return s.tracker }

// publishEndpoints replaces the shared endpoint set. Only assignments whose
// content changed are updated, so proxies hear only of real changes.
// Publish calls it before publishSnapshot, so that added clusters find
// their endpoints (make before break), and pruneEndpoints after.
func (s *Server) publishEndpoints(eps []Hashed) (updated int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var toUpdate []Hashed
	for _, e := range eps {
		if s.epHashes[e.Name] == e.Hash {
			continue
		}
		toUpdate = append(toUpdate, e)
	}
	if len(toUpdate) == 0 {
		// The first round opens the endpoint cache even with no endpoints.
		return 0, s.endpoints.update(nil, nil)
	}
	s.traceEndpoints(toUpdate) // push tracing of the change (edstrace.go)
	if err := s.endpoints.update(toUpdate, nil); err != nil {
		return 0, fmt.Errorf("updating endpoints: %w", err)
	}
	for _, e := range eps {
		s.epHashes[e.Name] = e.Hash
	}
	s.metrics.endpointSets.Add(float64(len(toUpdate)))
	return len(toUpdate), nil
}

// pruneEndpoints removes endpoint assignments not in keep.
func (s *Server) pruneEndpoints(keep []Hashed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := make(map[string]bool, len(keep))
	for _, e := range keep {
		want[e.Name] = true
	}
	var del []string
	for name := range s.epHashes {
		if !want[name] {
			del = append(del, name)
		}
	}
	if len(del) == 0 {
		return nil
	}
	for _, n := range del {
		delete(s.epHashes, n)
	}
	return s.endpoints.update(nil, del)
}

// ProxyResources are hashed resources by type URL, endpoints excluded
// (they are shared).
type ProxyResources map[resource.Type][]Hashed

// sharedSet is a set of resources that many proxies hold (everything an
// Envoy, or a proxyless client, gets from the mesh as a whole). Its
// versions and references are computed once, not once per proxy.
type sharedSet struct {
	items    ProxyResources
	versions map[string]string                 // type URL -> version
	refs     map[resource.Type]map[string]bool // routes and endpoints named
	routes   map[string]bool                   // route names held
}

// newShared versions a shared set and notes what it references.
func newShared(items ProxyResources) *sharedSet {
	sh := &sharedSet{items: items, versions: map[string]string{}, routes: map[string]bool{}}
	for _, typ := range snapshotTypes {
		sh.versions[typ] = setVersion(items[typ])
	}
	sh.refs = references(items)
	for _, it := range items[resource.RouteType] {
		sh.routes[it.Name] = true
	}
	return sh
}

// publishSnapshot builds a snapshot for one proxy from a shared set (nil
// for none) and its own resources, and sets it, unless every type's
// version equals what the proxy already has. The snapshot is checked first: every
// referenced route and endpoint assignment must exist, and every route
// must be referenced. A snapshot that fails is not published; the proxy
// keeps its last good one.
func (s *Server) publishSnapshot(ctx context.Context, id string, kind wire.ProxyKind, shared *sharedSet, own ProxyResources) (changed bool, err error) {
	if shared == nil {
		shared = newShared(nil)
	}
	if err := s.consistent(shared, own); err != nil {
		s.metrics.snapshotFails.Inc()
		return false, fmt.Errorf("proxy %q: %w", id, err)
	}
	versions := map[string]string{}
	snap := &layeredSnapshot{layers: map[string]layer{}}
	s.mu.Lock()
	for _, typ := range snapshotTypes {
		// A content hash of both layers' content hashes: equal content,
		// equal version, across proxies and restarts.
		l := layer{version: Fingerprint([]byte(shared.versions[typ] + "/" + setVersion(own[typ])))}
		if len(shared.items[typ]) > 0 {
			l.shared = s.intern(typ, shared.versions[typ], shared.items[typ])
		}
		l.own = make(map[string]types.ResourceWithTTL, len(own[typ]))
		l.ownVM = make(map[string]string, len(own[typ]))
		for _, it := range own[typ] {
			l.own[it.Name] = types.ResourceWithTTL{Resource: it.Resource}
			l.ownVM[it.Name] = it.Hash
		}
		versions[typ] = l.version
		snap.layers[typ] = l
	}
	prev := s.published[id]
	s.mu.Unlock()
	if prev != nil && equalVersions(prev.Versions, versions) {
		return false, nil
	}
	c := s.envoy
	if kind == wire.ProxyProxyless {
		c = s.proxyless
	}
	touched := make(map[string]string, len(versions))
	for typ, v := range versions {
		if prev == nil || prev.Versions[typ] != v {
			touched[typ] = v
		}
	}
	s.tracker.expectConvergence(id, s.pub.start, touched)
	if p := s.pub.pushes; p != nil {
		s.tracker.startPush(p, id, touched)
	}
	if err := c.SetSnapshot(ctx, id, snap); err != nil {
		if s.pub.pushes != nil {
			s.tracker.pushNotSet(id, err)
		}
		s.metrics.snapshotFails.Inc()
		return false, fmt.Errorf("proxy %q: setting snapshot: %w", id, err)
	}
	s.metrics.snapshots.Inc()
	s.mu.Lock()
	s.retain(snap, 1)
	if prev != nil {
		s.retain(prev.snapshot, -1)
	}
	s.published[id] = &Published{Versions: versions, snapshot: snap, kind: kind}
	s.mu.Unlock()
	return true, nil
}

// snapshotTypes are the types served from per-proxy snapshots.
var snapshotTypes = []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.SecretType}

// internedSet is one type's resources as a snapshot holds them. Versions
// are content hashes, so proxies whose sets have the same version share
// one set: a thousand sidecars of the same service cost one cluster map,
// not a thousand.
type internedSet struct {
	res        cache.Resources
	versionMap map[string]string
	refs       int
}

func internKey(typ, version string) string { return typ + "/" + version }

// intern returns the shared set for (typ, version), building it if new.
// Callers hold s.mu.
func (s *Server) intern(typ, version string, items []Hashed) *internedSet {
	if set, ok := s.interned[internKey(typ, version)]; ok {
		return set
	}
	byName := make(map[string]types.ResourceWithTTL, len(items))
	vm := make(map[string]string, len(items))
	for _, it := range items {
		byName[it.Name] = types.ResourceWithTTL{Resource: it.Resource}
		// Filled from hashes computed once per shared resource, so the
		// delta server never re-marshals the same cluster per proxy.
		vm[it.Name] = it.Hash
	}
	set := &internedSet{res: cache.Resources{Version: version, Items: byName}, versionMap: vm}
	s.interned[internKey(typ, version)] = set
	return set
}

// retain adds delta to the reference counts of a snapshot's shared sets.
// Callers hold s.mu.
func (s *Server) retain(snap *layeredSnapshot, delta int) {
	for _, l := range snap.layers {
		if l.shared != nil {
			l.shared.refs += delta
		}
	}
}

// releaseUnused drops shared sets that no published snapshot uses; Publish
// calls it once per round.
func (s *Server) releaseUnused() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, set := range s.interned {
		if set.refs <= 0 {
			delete(s.interned, k)
		}
	}
}

// references lists the routes and endpoint assignments that resources
// name, like go-control-plane's GetAllResourceReferences, plus the routes
// named by API listeners (proxyless gRPC), which it does not look into.
func references(items ProxyResources) map[resource.Type]map[string]bool {
	var res [types.UnknownType]cache.Resources
	for typ, hs := range items {
		m := make(map[string]types.ResourceWithTTL, len(hs))
		for _, it := range hs {
			m[it.Name] = types.ResourceWithTTL{Resource: it.Resource}
		}
		res[cache.GetResponseType(typ)] = cache.Resources{Items: m}
	}
	refs := cache.GetAllResourceReferences(res)
	for _, it := range items[resource.ListenerType] {
		if name := apiListenerRoute(it.Resource); name != "" {
			if refs[resource.RouteType] == nil {
				refs[resource.RouteType] = map[string]bool{}
			}
			refs[resource.RouteType][name] = true
		}
	}
	return refs
}

// consistent checks a proxy's snapshot like cache.Snapshot.Consistent:
// the shared set's references were computed once, the proxy's own are
// few; endpoints are checked against the shared endpoint cache.
func (s *Server) consistent(shared *sharedSet, own ProxyResources) error {
	ownRefs := references(own)
	ownRoutes := map[string]bool{}
	for _, it := range own[resource.RouteType] {
		ownRoutes[it.Name] = true
	}
	referenced := func(name string) bool {
		return shared.refs[resource.RouteType][name] || ownRefs[resource.RouteType][name]
	}
	for _, refs := range []map[resource.Type]map[string]bool{shared.refs, ownRefs} {
		for name := range refs[resource.RouteType] {
			if !shared.routes[name] && !ownRoutes[name] {
				return fmt.Errorf("%w: route %q is referenced but missing", ErrInconsistent, name)
			}
		}
	}
	for _, routes := range []map[string]bool{shared.routes, ownRoutes} {
		for name := range routes {
			if !referenced(name) {
				return fmt.Errorf("%w: route %q is not referenced by any listener", ErrInconsistent, name)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, refs := range []map[resource.Type]map[string]bool{shared.refs, ownRefs} {
		for name := range refs[resource.EndpointType] {
			if _, ok := s.epHashes[name]; !ok {
				return fmt.Errorf("%w: endpoints %q are referenced but missing", ErrInconsistent, name)
			}
		}
	}
	return nil
}

func equalVersions(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// forget drops a disconnected proxy's snapshot and everything kept about
// what it was sent.
func (s *Server) forget(id string) {
	s.mu.Lock()
	prev, ok := s.published[id]
	if ok {
		s.retain(prev.snapshot, -1)
	}
	delete(s.published, id)
	s.mu.Unlock()
	if !ok {
		return
	}
	s.releaseUnused()
	if prev.kind == wire.ProxyProxyless {
		s.proxyless.ClearSnapshot(id)
	} else {
		s.envoy.ClearSnapshot(id)
	}
}

// PublishedFor returns what was last published for a proxy.
func (s *Server) PublishedFor(id string) (*Published, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.published[id]
	return p, ok
}

// Resources returns the resources last published for a proxy, endpoints
// from the shared cache included.
func (p *Published) Resources(s *Server) map[resource.Type][]types.Resource {
	out := map[resource.Type][]types.Resource{}
	for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.SecretType} {
		for _, r := range p.snapshot.GetResources(typ) {
			out[typ] = append(out[typ], r)
		}
	}
	eps := s.endpoints.resources()
	refs := cache.GetAllResourceReferences(p.snapshot.resources())
	for name := range refs[resource.EndpointType] {
		if r, ok := eps[name]; ok {
			out[resource.EndpointType] = append(out[resource.EndpointType], r)
		}
	}
	return out
}

// logAdapter routes go-control-plane's logs to slog. Its debug output is
// per request and too chatty for production, so it is dropped.
type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Debugf(string, ...any) {}

// Infof and Warnf format only when debug logging is on: go-control-plane
// logs whole subscriptions (a thousand names) on every watch, under its
// cache lock, and formatting them cost a fifth of the CPU of a change.
func (a logAdapter) Infof(f string, args ...any) {
	if a.l.Enabled(context.Background(), slog.LevelDebug) {
		a.l.Debug(fmt.Sprintf(f, args...), "component", "go-control-plane")
	}
}

func (a logAdapter) Warnf(f string, args ...any) {
	if a.l.Enabled(context.Background(), slog.LevelDebug) {
		a.l.Debug(fmt.Sprintf(f, args...), "component", "go-control-plane")
	}
}
func (a logAdapter) Errorf(f string, args ...any) {
	a.l.Error(fmt.Sprintf(f, args...), "component", "go-control-plane")
}

// apiListenerRoute returns the RDS name an API listener refers to.
func apiListenerRoute(r types.Resource) string {
	l, ok := r.(*listenerv3.Listener)
	if !ok || l.GetApiListener() == nil {
		return ""
	}
	h := &hcmv3.HttpConnectionManager{}
	if err := l.GetApiListener().GetApiListener().UnmarshalTo(h); err != nil {
		return ""
	}
	return h.GetRds().GetRouteConfigName()
}
