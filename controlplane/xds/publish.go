package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/translate"
)

// Round is what the control loop wants served: the mesh, and every
// connected proxy with the identity it holds. A proxy that is not in the
// round has gone; what was published for it is dropped.
type Round struct {
	Mesh    *ir.Mesh
	Proxies []RoundProxy
	// Start is when the change this round serves reached the control
	// loop (its first trigger): convergence is measured from it. Zero:
	// when Publish is called.
	Start time.Time
}

// RoundProxy is one proxy of a round.
type RoundProxy struct {
	Proxy ir.Proxy
	// SVID is the identity issued to the proxy (Envoys get it over SDS);
	// nil when it has none.
	SVID *ir.Identity
	// Err says the proxy could not be prepared (its SVID could not be
	// issued): it keeps what it was last sent, and counts as failed.
	Err error
}

// Report says how a round went when the mesh itself could be served.
type Report struct {
	// Warnings are the translator's, for the mesh as a whole.
	Warnings []string
	// Failed are the proxies that kept their previous configuration,
	// each error naming the proxy.
	Failed []error
	// Pushed are the proxies sent a new snapshot this round, by ID.
	Pushed []string
}

// publisher is what Publish remembers between rounds. Only the control
// loop calls Publish, so it needs no lock of its own.
type publisher struct {
	mesh   *ir.Mesh // the mesh shared was translated from
	shared *hashedShared
	// bundleKey identifies the trust bundle, so that a proxy whose own
	// inputs and caller set did not change either is skipped entirely.
	bundleKey string
	// scopes are the shared sets per calling service (scoped.go).
	scopes scopes
	// inboundKeys fingerprint, per service, what its inbound side is
	// built from; computed once per mesh, not once per proxy per round.
	inboundKeys map[string]string
	// services memoizes each service's translated, validated and hashed
	// share of the shared resources, by service name: an endpoint change
	// re-translates one service, not the mesh.
	services map[string]*serviceMemo
	// pushes traces the round being published (pushtrace.go); nil
	// between rounds and when the round is not traced.
	pushes *pushes
	// start is the round's Round.Start (convergence.go).
	start time.Time
}

type hashedShared struct {
	meshWide  []Hashed // Envoy's outbound listeners and the collector's cluster
	endpoints []Hashed
	warnings  []string
	// hashes are the content hashes of every piece above and of every
	// service's share, for assembling caller sets without re-hashing.
	hashes map[types.Resource]string
}

// serviceMemo is one service's translated share, valid while key holds.
type serviceMemo struct {
	// key fingerprints what the service's resources are made of except
	// its endpoints; endpointsKey what its endpoint assignments are made
	// of (serviceKeys).
	key, endpointsKey string
	set               *translate.ServiceSet
	hashes            map[types.Resource]string
	// scopeKey and contentKey feed caller sets (scoped.go).
	scopeKey, contentKey string
}

// Publish serves a round. It translates what changed (the mesh's shared
// resources when the mesh is new, each proxy's own resources when its
// inputs changed), validates every new resource with Envoy's ValidateAll,
// and touches the caches make-before-break: endpoint assignments first,
// then each proxy's snapshot, then departed proxies are dropped, and
// endpoints of removed services go last. An error means the mesh could
// not be translated and nothing was published: every proxy keeps its last
// good configuration.
//
// When ctx carries a recording span (the round's trace), translation gets
// a child span and every proxy whose snapshot or subscribed endpoints
// change a push span that ends with its ACK or NACK (pushtrace.go).
func (s *Server) Publish(ctx context.Context, r Round) (*Report, error) {
	pub := &s.pub
	if r.Mesh != pub.mesh {
		_, span := trace.SpanFromContext(ctx).TracerProvider().Tracer("medmesh/controlplane/xds").Start(ctx, "xds.translate")
		hs, services, err := translateShared(pub.services, r.Mesh)
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			span.End()
			return nil, err
		}
		span.SetAttributes(attribute.Int("medmesh.services", len(r.Mesh.Services)))
		span.End()
		pub.mesh, pub.shared, pub.services = r.Mesh, hs, services
		pub.scopes.newMesh(r.Mesh, services, hs.meshWide, hs.warnings, hs.hashes)
		pub.bundleKey = Fingerprint(r.Mesh.BundlePEM)
		pub.inboundKeys = inboundKeys(r.Mesh)
	}
	// Push tracing starts before the endpoints: their pushes are traced too.
	pub.pushes = newPushes(ctx, len(r.Proxies))
	defer func() { pub.pushes.done(); pub.pushes = nil }()
	updated, err := s.publishEndpoints(pub.shared.endpoints)
	if err != nil {
		return nil, err
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("medmesh.xds.endpoint_sets_updated", updated),
		attribute.Int(AttrProxies, len(r.Proxies)))
	pub.start = r.Start
	if pub.start.IsZero() {
		pub.start = time.Now()
	}
	report := &Report{Warnings: pub.shared.warnings}
	live := make(map[string]bool, len(r.Proxies))
	for i := range r.Proxies {
		live[r.Proxies[i].Proxy.ID] = true
		if err := r.Proxies[i].Err; err != nil {
			report.Failed = append(report.Failed, err)
			continue
		}
		pushed, err := s.publishProxy(ctx, &r.Proxies[i])
		if err != nil {
			report.Failed = append(report.Failed, err)
		} else if pushed {
			report.Pushed = append(report.Pushed, r.Proxies[i].Proxy.ID)
		}
	}
	pub.scopes.dropUnusedCallers()
	for _, id := range s.publishedIDs() {
		if !live[id] {
			s.forget(id)
		}
	}
	s.releaseUnused()
	if err := s.pruneEndpoints(pub.shared.endpoints); err != nil {
		report.Failed = append(report.Failed, err)
	}
	return report, nil
}

// publishProxy publishes one proxy's snapshot if its inputs changed, and
// says whether it did.
func (s *Server) publishProxy(ctx context.Context, rp *RoundProxy) (bool, error) {
	pub, p := &s.pub, &rp.Proxy
	// What the proxies of its service share: the services in their scope.
	var base *sharedSet
	var scope []string
	baseKey := "-"
	if p.Kind == wire.ProxyEnvoy || p.Kind == wire.ProxyProxyless {
		cs, err := s.callerShared(p.Kind, p.Service)
		if err != nil {
			return false, fmt.Errorf("proxy %q: %w", p.ID, err)
		}
		base, baseKey, scope = cs.shared, cs.key, cs.scope
	}
	// A proxy's own resources depend only on the shared set, its kind and
	// service, its instance's address and ports, and its identity: if none
	// changed (an endpoint elsewhere flapped), skip translating it at all.
	inputs := baseKey + "|" + string(p.Kind) + "|" + p.Service + "|" + instanceKey(p.Instance) +
		"|" + pub.bundleKey + "|" + svidKey(rp.SVID) + "|" + pub.inboundKeys[p.Service]
	if s.publishedInputs(p.ID) == inputs {
		return false, nil
	}
	own := translate.ForProxy(pub.mesh, p, rp.SVID)
	if err := own.Validate(); err != nil {
		return false, fmt.Errorf("proxy %q: %w", p.ID, err)
	}
	ownHashed, err := hashResources(own, nil)
	if err != nil {
		return false, err
	}
	// publishSnapshot itself skips a snapshot whose versions did not change.
	changed, err := s.publishSnapshot(ctx, p.ID, p.Kind, base, ownHashed)
	if err != nil {
		return false, err
	}
	as := publishedAs{service: p.Service, scope: scope}
	if svc, ok := pub.mesh.Service(p.Service); ok {
		as.http = svc.Protocol.IsHTTP()
	}
	if p.Instance != nil {
		in := *p.Instance
		in.Meta = nil
		as.instance = &in
	}
	s.mu.Lock()
	if pb, ok := s.published[p.ID]; ok {
		pb.inputs, pb.as = inputs, as
	}
	s.mu.Unlock()
	return changed, nil
}

func (s *Server) publishedInputs(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pb, ok := s.published[id]; ok {
		return pb.inputs
	}
	return ""
}

func (s *Server) publishedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.published))
	for id := range s.published {
		ids = append(ids, id)
	}
	return ids
}

// translateShared translates the shared resources, reusing each service's
// share while the service is unchanged. Every new or changed piece is
// validated (ValidateAll) before anything is published. It returns the
// memo for the next mesh.
func translateShared(memo map[string]*serviceMemo, mesh *ir.Mesh) (*hashedShared, map[string]*serviceMemo, error) {
	// Proxyless clients' out-of-scope routes name an empty assignment.
	eps := []types.Resource{translate.OutOfScopeEndpoints()}
	keep := make(map[string]*serviceMemo, len(mesh.Services))
	n := 0 // pieces, to size the map of every hash once
	for i := range mesh.Services {
		svc := &mesh.Services[i]
		key, epKey, err := serviceKeys(mesh, svc)
		if err != nil {
			return nil, nil, err
		}
		m, ok := memo[svc.Name]
		switch {
		case ok && m.key == key && m.endpointsKey == epKey:
		case ok && m.key == key:
			// Its instances alone changed (a health change, the most
			// common change of all): its endpoints alone again.
			if m, err = translateEndpoints(m, svc, epKey); err != nil {
				return nil, nil, err
			}
		default:
			if m, err = translateService(mesh, svc, key); err != nil {
				return nil, nil, err
			}
			m.endpointsKey = epKey
		}
		keep[svc.Name] = m
		eps = append(append(eps, m.set.Endpoints), m.set.SubsetEndpoints...)
		n += len(m.hashes)
	}
	hashes := make(map[types.Resource]string, n+len(mesh.Services))
	for _, m := range keep {
		maps.Copy(hashes, m.hashes)
	}
	meshWide := translate.MeshWide(mesh)
	if err := meshWide.Validate(); err != nil {
		return nil, nil, fmt.Errorf("translated configuration is invalid: %w", err)
	}
	// Mesh-wide: Envoy's outbound listeners and, with request tracing,
	// the collector's cluster (every Envoy sidecar gets it).
	listeners, err := HashAll(append(append([]types.Resource(nil), meshWide.Listeners...), meshWide.Clusters...), nil)
	if err != nil {
		return nil, nil, err
	}
	hashedEps, err := HashAll(eps, hashes)
	if err != nil {
		return nil, nil, err
	}
	for _, h := range listeners {
		hashes[h.Resource] = h.Hash
	}
	return &hashedShared{meshWide: listeners, endpoints: hashedEps, warnings: meshWide.Warnings, hashes: hashes}, keep, nil
}

// translateService translates, validates and hashes one service's share.
func translateService(mesh *ir.Mesh, svc *ir.Service, key string) (*serviceMemo, error) {
	set := translate.ForService(mesh, svc)
	if err := set.Validate(); err != nil {
		return nil, fmt.Errorf("service %q: translated configuration is invalid: %w", svc.Name, err)
	}
	m := &serviceMemo{key: key, set: set, hashes: map[types.Resource]string{}, scopeKey: scopeKey(svc)}
	for _, res := range []*translate.Resources{set.Resources(), set.DeniedResources()} {
		for _, rs := range res.ByType() {
			h, err := HashAll(rs, nil)
			if err != nil {
				return nil, err
			}
			for _, it := range h {
				m.hashes[it.Resource] = it.Hash
			}
		}
	}
	vh, err := hashVirtualHost(set)
	if err != nil {
		return nil, err
	}
	if set.EnvoyVirtualHost != nil {
		m.hashes[set.EnvoyVirtualHost] = vh
	}
	m.contentKey = contentKey(set, m.hashes)
	return m, nil
}

// serviceKeys fingerprints a service's shared resources apart from its
// endpoint assignments (key), and those (epKey): the endpoints are the
// only part its instances decide (translate.Endpoints).
func serviceKeys(mesh *ir.Mesh, svc *ir.Service) (key, epKey string, err error) {
	rest := *svc
	rest.Localities, rest.Instances = nil, nil
	rest.Policy.Subsets = slices.Clone(svc.Policy.Subsets)
	subsets := make([][]ir.LocalityEndpoints, len(rest.Policy.Subsets))
	for i := range rest.Policy.Subsets {
		subsets[i] = rest.Policy.Subsets[i].Localities
		rest.Policy.Subsets[i].Localities = nil
	}
	b, err := json.Marshal(&rest)
	if err != nil {
		return "", "", err
	}
	e, err := json.Marshal(struct {
		L []ir.LocalityEndpoints
		S [][]ir.LocalityEndpoints
	}{svc.Localities, subsets})
	if err != nil {
		return "", "", err
	}
	return Fingerprint(append(b, fmt.Sprintf("|%t|%s", mesh.MTLS, mesh.TrustDomain)...)), Fingerprint(e), nil
}

// translateEndpoints gives a service's memo new endpoint assignments,
// validated and hashed, and keeps everything else of it.
func translateEndpoints(old *serviceMemo, svc *ir.Service, epKey string) (*serviceMemo, error) {
	set := *old.set
	set.Endpoints, set.SubsetEndpoints = translate.Endpoints(svc)
	fresh := &translate.Resources{Endpoints: append([]types.Resource{set.Endpoints}, set.SubsetEndpoints...)}
	if err := fresh.Validate(); err != nil {
		return nil, fmt.Errorf("service %q: translated configuration is invalid: %w", svc.Name, err)
	}
	m := *old
	m.set, m.endpointsKey = &set, epKey
	m.hashes = maps.Clone(old.hashes)
	delete(m.hashes, old.set.Endpoints)
	for _, r := range old.set.SubsetEndpoints {
		delete(m.hashes, r)
	}
	h, err := HashAll(fresh.Endpoints, nil)
	if err != nil {
		return nil, err
	}
	for _, it := range h {
		m.hashes[it.Resource] = it.Hash
	}
	return &m, nil
}

// hashResources hashes resources by type, endpoints excluded (they are
// served from the shared endpoint cache). memo may be nil.
func hashResources(r *translate.Resources, memo map[types.Resource]string) (ProxyResources, error) {
	out := ProxyResources{}
	for typ, rs := range r.ByType() {
		if typ == resource.EndpointType || len(rs) == 0 {
			continue
		}
		h, err := HashAll(rs, memo)
		if err != nil {
			return nil, fmt.Errorf("hashing %s: %w", typ, err)
		}
		out[typ] = h
	}
	return out, nil
}

// inboundKeys fingerprint what each service's inbound side is built from
// (everything but its endpoints): its authorization, protocol and routes,
// its PHI flag (the extension's failure mode), plaintext acceptance and
// kind (a tag of its request spans).
func inboundKeys(m *ir.Mesh) map[string]string {
	out := make(map[string]string, len(m.Services))
	for i := range m.Services {
		svc := &m.Services[i]
		b, _ := json.Marshal(struct {
			Authz           ir.Authz
			Protocol        ir.Protocol
			Route           ir.Route
			Timeout         time.Duration
			PHI, Permissive bool
			Kind            ir.Kind
		}{svc.Authz, svc.Protocol, svc.Route, svc.ConnectTimeout, svc.PHI, svc.Permissive, svc.Kind})
		out[svc.Name] = Fingerprint(b)
	}
	return out
}

func svidKey(id *ir.Identity) string {
	if id == nil {
		return "-"
	}
	return id.Fingerprint
}

func instanceKey(in *ir.Instance) string {
	if in == nil {
		return "-"
	}
	return fmt.Sprintf("%s/%d/%d", in.Address, in.Port, in.AppPort)
}
