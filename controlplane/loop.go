package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"runtime/debug"
	"sort"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/translate"
	"medmesh/controlplane/xds"
	"medmesh/internal/backoff"
	"medmesh/registry"
)

// loopState is owned by the loop goroutine alone.
type loopState struct {
	catalog     *registry.Catalog // last good catalog
	catalogHash string
	fromDisk    bool

	mesh   *ir.Mesh
	shared *hashedShared
	// sharedKey identifies the shared non-endpoint resources, so a proxy
	// whose own inputs did not change either is skipped entirely.
	sharedKey string
	// instances index the catalog's instances by ID (node.id of Envoys).
	instances map[string]instanceRef
	// inboundKeys fingerprint, per service, what its inbound side is
	// built from; with instances they are computed once per mesh, not
	// once per proxy per change.
	inboundKeys map[string]string
	// proxyInputs remembers, per proxy, the inputs of its last
	// publication; equal inputs mean equal output, so it is skipped.
	proxyInputs map[string]string
	// published are the proxies that have a snapshot, with their kind.
	published map[string]wire.ProxyKind

	// svids are the SVIDs issued to Envoy proxies, by proxy ID.
	svids map[string]*issued
	// unattested remembers proxies already warned about, to warn once.
	unattested map[string]bool
	// identities say, per proxy, which SPIFFE ID it holds or why none.
	identities map[string]string
	// podAgents are SVID agents attested by a Kubernetes service-account
	// token, by node ID: they vouch for the Envoy of their pod.
	podAgents map[string]podAgent
	// bundle is the trust bundle as PEM and its hash.
	bundle, bundleHash string

	// services memoizes each service's translated, validated and hashed
	// share of the shared resources, by service name: an endpoint change
	// re-translates one service, not the mesh.
	services map[string]*serviceMemo

	pendingEmpty *registry.Catalog
	emptySince   time.Time

	// policySet is the policy source's latest set (nil: none yet) and
	// policyStatus the last resolution's statuses.
	policySet    *policy.Set
	policyStatus []policy.ObjectStatus
}

type hashedShared struct {
	envoy, proxyless *xds.Shared
	endpoints        []xds.Hashed
	warnings         []string
}

func (cp *ControlPlane) loop(ctx context.Context, catalogs chan *registry.Catalog, sets chan *policy.Set) error {
	st := &loopState{proxyInputs: map[string]string{}, published: map[string]wire.ProxyKind{},
		svids: map[string]*issued{}, unattested: map[string]bool{}, identities: map[string]string{}, podAgents: map[string]podAgent{}, services: map[string]*serviceMemo{}}
	if cat, err := cp.loadState(); err != nil {
		cp.log.Warn("no usable saved catalog; waiting for the registry", "err", err)
	} else if cat != nil {
		cp.log.Warn("serving the last known good catalog from the state dir until the registry answers",
			"services", len(cat.Services))
		st.catalog, st.catalogHash, st.fromDisk = cat, cat.Hash(), true
	}
	dirty := st.catalog != nil
	var timer, retry <-chan time.Time
	// A failed publish is retried with backoff even if nothing changes: a
	// proxy must not sit on a stale config until the next registry event.
	retryBackoff := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	graceTick := time.NewTicker(time.Second)
	defer graceTick.Stop()
	for {
		if dirty && timer == nil {
			timer = time.After(cp.opts.Coalesce)
		}
		select {
		case <-ctx.Done():
			return nil
		case cat := <-catalogs:
			if cp.acceptCatalog(st, cat) {
				dirty = true
			}
		case set := <-sets:
			st.policySet, st.mesh = set, nil
			dirty = true
		case <-graceTick.C:
			if cp.renewalsDue(st) || cp.bundleChanged(st) {
				dirty = true
			}
			if st.pendingEmpty != nil && time.Since(st.emptySince) >= cp.opts.EmptyCatalogGrace {
				cp.log.Warn("registry has listed no services for the whole grace period; removing all services",
					"grace", cp.opts.EmptyCatalogGrace.String())
				cat := st.pendingEmpty
				st.pendingEmpty = nil
				st.catalog, st.catalogHash, st.mesh, st.fromDisk = cat, cat.Hash(), nil, false
				dirty = true
			}
		case <-cp.xds.Tracker().Changed():
			dirty = true
		case <-cp.wake:
			dirty = true
		case <-retry:
			retry, dirty = nil, true
		case <-timer:
			timer, dirty = nil, false
			if cp.reconcileSafely(ctx, st) {
				retryBackoff.Reset()
				retry = nil
			} else if retry == nil {
				retry = time.After(retryBackoff.Next())
			}
		}
	}
}

// acceptCatalog decides whether a new catalog replaces the current one.
func (cp *ControlPlane) acceptCatalog(st *loopState, cat *registry.Catalog) bool {
	h := cat.Hash()
	if len(cat.Services) == 0 && st.catalog != nil && len(st.catalog.Services) > 0 {
		if st.pendingEmpty == nil {
			st.emptySince = time.Now()
			cp.log.Warn("registry suddenly lists no services; keeping the current mesh for the grace period",
				"source", cp.opts.Source.Name(), "grace", cp.opts.EmptyCatalogGrace.String())
		}
		st.pendingEmpty = cat
		return false
	}
	st.pendingEmpty = nil
	if h == st.catalogHash && !st.fromDisk {
		return false
	}
	st.catalog, st.catalogHash, st.fromDisk, st.mesh = cat, h, false, nil
	cp.metrics.catalogChanges.Inc()
	return true
}

// reconcileSafely recovers a panic in translation: it is counted and
// logged, and the last good configuration stays in place.
func (cp *ControlPlane) reconcileSafely(ctx context.Context, st *loopState) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ok = false
			cp.metrics.panics.Inc()
			cp.log.Error("reconcile panicked; keeping the last good configuration", "panic", fmt.Sprint(r),
				"stack", string(debug.Stack()))
			cp.setError(fmt.Sprintf("internal error: %v", r))
		}
	}()
	start := time.Now()
	err := cp.reconcile(ctx, st)
	cp.metrics.reconcileSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		cp.log.Error("configuration not published; proxies keep their last good configuration", "err", err)
		cp.setError(err.Error())
		return false
	}
	return true
}

func (cp *ControlPlane) reconcile(ctx context.Context, st *loopState) error {
	if st.catalog == nil {
		return nil // nothing known yet: push nothing rather than an empty mesh
	}
	if cp.opts.Policies != nil && st.policySet == nil {
		return nil // a mesh without its policies would flap canaries and access
	}
	if st.mesh == nil {
		mesh := ir.Build(st.catalog, cp.opts.Defaults, cp.opts.TrustDomain)
		pol := cp.applyPolicies(st, mesh)
		if cp.opts.Identities != nil {
			mesh.MTLS = true
			cp.bundleChanged(st)
			mesh.BundlePEM = []byte(st.bundle)
		}
		hs, err := cp.translateShared(st, mesh)
		if err != nil {
			return err
		}
		for _, w := range hs.warnings {
			cp.log.Warn("configuration warning", "warning", w)
		}
		st.mesh, st.shared = mesh, hs
		st.sharedKey = sharedKey(hs)
		st.instances = indexInstances(st.catalog)
		st.inboundKeys = inboundKeys(mesh)
		cp.saveState(st.catalog)
		cp.mu.Lock()
		cp.state.catalog = st.catalog
		cp.state.mesh, cp.state.warnings = mesh, hs.warnings
		if pol != nil {
			cp.state.policies = pol
		}
		cp.state.catalogFrom = cp.opts.Source.Name()
		if st.fromDisk {
			cp.state.catalogFrom = "disk"
		}
		cp.state.lastChange = time.Now()
		cp.mu.Unlock()
	}
	// Make before break: new endpoint assignments exist before any cluster
	// that names them is published.
	if _, err := cp.xds.PublishEndpoints(st.shared.endpoints); err != nil {
		return err
	}
	connected := cp.xds.Tracker().Connected()
	// SVID agents first: an Envoy may be vouched for by its pod's agent
	// (identity.go, coLocated), which must be attested before it.
	sort.SliceStable(connected, func(i, j int) bool {
		return connected[i].Kind == wire.ProxySVIDAgent && connected[j].Kind != wire.ProxySVIDAgent
	})
	live := make(map[string]bool, len(connected))
	var errs []error
	for i := range connected {
		p := connected[i]
		live[p.ID] = true
		if err := cp.publishProxy(ctx, st, p); err != nil {
			errs = append(errs, err)
		}
	}
	for id, kind := range st.published {
		if !live[id] {
			cp.xds.Forget(id, kind)
			delete(st.published, id)
			delete(st.proxyInputs, id)
			delete(st.svids, id)
			delete(st.unattested, id)
			delete(st.identities, id)
			delete(st.podAgents, id)
		}
	}
	cp.proofs.forget(live)
	cp.xds.ReleaseUnused()
	// Break after make: endpoints of removed services go last.
	if err := cp.xds.PruneEndpoints(st.shared.endpoints); err != nil {
		errs = append(errs, err)
	}
	cp.mu.Lock()
	cp.state.ready = true
	cp.state.identities = maps.Clone(st.identities)
	if len(errs) == 0 {
		cp.state.lastError = ""
	}
	cp.mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("%d proxies kept their previous configuration: %w", len(errs), errs[0])
	}
	return nil
}

// publishProxy publishes one proxy's snapshot if its inputs changed.
func (cp *ControlPlane) publishProxy(ctx context.Context, st *loopState, p ir.Proxy) error {
	if ref, ok := st.instances[p.ID]; ok && (p.Service == "" || p.Service == ref.service) {
		p.Service, p.Instance = ref.service, ref.instance
	}
	if st.mesh.MTLS && p.Kind != wire.ProxyProxyless {
		if err := cp.identify(ctx, st, &p); err != nil {
			return err
		}
	}
	// A proxy's own resources depend only on the shared set, its kind and
	// service, its instance's address and ports, and its identity: if none
	// changed (an endpoint elsewhere flapped), skip translating it at all.
	inputs := st.sharedKey + "|" + string(p.Kind) + "|" + p.Service + "|" + instanceKey(p.Instance) +
		"|" + st.bundleHash + "|" + svidKey(p.SVID) + "|" + st.inboundKeys[p.Service]
	if st.proxyInputs[p.ID] == inputs {
		return nil
	}
	own := translate.ForProxy(st.mesh, &p)
	if err := own.Validate(); err != nil {
		return fmt.Errorf("proxy %q: %w", p.ID, err)
	}
	ownHashed, err := hashResources(own, nil)
	if err != nil {
		return err
	}
	var base *xds.Shared
	switch p.Kind {
	case wire.ProxyProxyless:
		base = st.shared.proxyless
	case wire.ProxyEnvoy:
		base = st.shared.envoy
	}
	// PublishProxy itself skips a snapshot whose versions did not change.
	if _, err := cp.xds.PublishProxy(ctx, p, base, ownHashed); err != nil {
		return err
	}
	st.proxyInputs[p.ID] = inputs
	st.published[p.ID] = p.Kind
	return nil
}

// identify gives an attested proxy its SVID, and logs once why an
// unattested one gets none. It records the outcome for status.
func (cp *ControlPlane) identify(ctx context.Context, st *loopState, p *ir.Proxy) error {
	ns := "default"
	if svc, ok := st.mesh.Service(p.Service); ok {
		ns = svc.Namespace
	}
	ok, pending, refusal := cp.attested(ctx, p, ns)
	if !ok && !pending && refusal == nil {
		ok = coLocated(st, p)
	}
	switch {
	case pending:
		st.identities[p.ID] = "checking " + string(p.Proof.Kind) + " proof"
		return nil
	case !ok:
		st.identities[p.ID] = "none: no proof of identity"
		if refusal != nil {
			st.identities[p.ID] = "refused: " + refusal.Error()
		}
		if !st.unattested[p.ID] {
			st.unattested[p.ID] = true
			if refusal != nil {
				// A claim on someone else's identity, or a stale token:
				// refused and logged (the token itself never is).
				cp.log.Warn("SVID request refused", "proxy", p.ID, "service", p.Service, "peer", p.Peer,
					"proof", string(p.Proof.Kind), "reason", refusal.Error())
			} else {
				cp.log.Warn("no SVID for proxy: its identity is not proven; its mTLS listeners and clusters stay closed",
					"proxy", p.ID, "peer", p.Peer)
			}
		}
		return nil
	}
	ident, err := cp.svidFor(st, p, ns)
	if err != nil {
		return err
	}
	p.SVID = ident
	st.identities[p.ID] = ident.SPIFFEID
	if p.Kind == wire.ProxySVIDAgent && p.Proof.Kind == wire.ProofKubernetes {
		st.podAgents[p.ID] = podAgent{service: p.Service, peer: p.Peer}
	}
	return nil
}

// instanceRef locates an instance in the catalog.
type instanceRef struct {
	service  string
	instance *registry.Instance
}

func indexInstances(cat *registry.Catalog) map[string]instanceRef {
	out := make(map[string]instanceRef, cat.InstanceCount())
	for si := range cat.Services {
		svc := &cat.Services[si]
		for ii := range svc.Instances {
			out[svc.Instances[ii].ID] = instanceRef{service: svc.Name, instance: &svc.Instances[ii]}
		}
	}
	return out
}

// inboundKeys fingerprint what each service's inbound side is built from
// (everything but its endpoints): its authorization, protocol and routes.
func inboundKeys(m *ir.Mesh) map[string]string {
	out := make(map[string]string, len(m.Services))
	for i := range m.Services {
		svc := &m.Services[i]
		b, _ := json.Marshal(struct {
			Authz    ir.Authz
			Protocol registry.Protocol
			Route    ir.Route
			Timeout  time.Duration
		}{svc.Authz, svc.Protocol, svc.Route, svc.ConnectTimeout})
		out[svc.Name] = xds.Fingerprint(b)
	}
	return out
}

func svidKey(id *ir.Identity) string {
	if id == nil {
		return "-"
	}
	return id.Fingerprint
}

// renewalsDue reports whether an issued SVID is past half its lifetime.
func (cp *ControlPlane) renewalsDue(st *loopState) bool {
	now := time.Now()
	for _, s := range st.svids {
		if s.renewDue(now) {
			return true
		}
	}
	return false
}

// bundleChanged refreshes the trust bundle (a root rotation adds a root)
// and reports whether it changed.
func (cp *ControlPlane) bundleChanged(st *loopState) bool {
	if cp.opts.Identities == nil {
		return false
	}
	pemBytes, err := cp.opts.Identities.Bundle().Marshal()
	if err != nil {
		cp.log.Error("cannot encode the trust bundle", "err", err)
		return false
	}
	b := string(pemBytes)
	if b == st.bundle {
		return false
	}
	st.bundle, st.bundleHash = b, xds.Fingerprint([]byte(b))
	if st.mesh != nil {
		st.mesh.BundlePEM = []byte(b)
	}
	return true
}

func instanceKey(in *registry.Instance) string {
	if in == nil {
		return "-"
	}
	return fmt.Sprintf("%s/%d/%d", in.Address, in.Port, in.AppPort)
}

// serviceMemo is one service's translated share, valid while key holds.
type serviceMemo struct {
	key    string
	set    *translate.ServiceSet
	hashes map[types.Resource]string
}

// translateShared translates the shared resources, reusing each service's
// share while the service is unchanged. Every new or changed piece is
// validated (ValidateAll) before anything is published.
func (cp *ControlPlane) translateShared(st *loopState, mesh *ir.Mesh) (*hashedShared, error) {
	sets := make([]*translate.ServiceSet, 0, len(mesh.Services))
	hashes := map[types.Resource]string{}
	keep := make(map[string]*serviceMemo, len(mesh.Services))
	for i := range mesh.Services {
		svc := &mesh.Services[i]
		b, err := json.Marshal(svc)
		if err != nil {
			return nil, err
		}
		key := xds.Fingerprint(append(b, fmt.Sprintf("|%t|%s", mesh.MTLS, mesh.TrustDomain)...))
		memo, ok := st.services[svc.Name]
		if !ok || memo.key != key {
			set := translate.ForService(mesh, svc)
			res := set.Resources()
			if err := res.Validate(); err != nil {
				return nil, fmt.Errorf("service %q: translated configuration is invalid: %w", svc.Name, err)
			}
			memo = &serviceMemo{key: key, set: set, hashes: map[types.Resource]string{}}
			for _, rs := range res.ByType() {
				h, err := xds.HashAll(rs, nil)
				if err != nil {
					return nil, err
				}
				for _, it := range h {
					memo.hashes[it.Resource] = it.Hash
				}
			}
		}
		keep[svc.Name] = memo
		sets = append(sets, memo.set)
		maps.Copy(hashes, memo.hashes)
	}
	meshWide := translate.MeshWide(mesh)
	if err := meshWide.Validate(); err != nil {
		return nil, fmt.Errorf("translated configuration is invalid: %w", err)
	}
	shared := translate.Assemble(meshWide, sets)
	hs, err := hashShared(shared, hashes)
	if err != nil {
		return nil, err
	}
	st.services = keep
	return hs, nil
}

// hashShared hashes the shared set, taking known hashes from memo.
func hashShared(s *translate.SharedSet, memo map[types.Resource]string) (*hashedShared, error) {
	envoy, err := hashResources(s.Envoy, memo)
	if err != nil {
		return nil, err
	}
	proxyless, err := hashResources(s.Proxyless, memo)
	if err != nil {
		return nil, err
	}
	eps, err := xds.HashAll(s.Endpoints, memo)
	if err != nil {
		return nil, err
	}
	return &hashedShared{envoy: xds.NewShared(envoy), proxyless: xds.NewShared(proxyless), endpoints: eps,
		warnings: s.Envoy.Warnings}, nil
}

// hashResources hashes resources by type, endpoints excluded (they are
// served from the shared endpoint cache). memo may be nil.
func hashResources(r *translate.Resources, memo map[types.Resource]string) (xds.ProxyResources, error) {
	out := xds.ProxyResources{}
	for typ, rs := range r.ByType() {
		if typ == resource.EndpointType || len(rs) == 0 {
			continue
		}
		h, err := xds.HashAll(rs, memo)
		if err != nil {
			return nil, fmt.Errorf("hashing %s: %w", typ, err)
		}
		out[typ] = h
	}
	return out, nil
}

// sharedKey identifies the shared sets by their content versions.
func sharedKey(h *hashedShared) string {
	return fmt.Sprint(h.envoy.Versions(), h.proxyless.Versions())
}

func (cp *ControlPlane) setError(msg string) {
	cp.mu.Lock()
	cp.state.lastError = msg
	cp.mu.Unlock()
}
