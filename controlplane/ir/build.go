package ir

import (
	"fmt"
	"net"
	"slices"
	"sort"

	"medmesh/api/wire"
	"medmesh/registry"
)

// Inputs are everything a Mesh is built from.
type Inputs struct {
	Catalog *registry.Catalog
	// Policies are the accepted policies (controlplane/policy validated
	// them against the same catalog); nil: none.
	Policies    *Policies
	Defaults    Defaults
	TrustDomain string
	// MTLS turns on mutual TLS with SPIFFE identities on every hop;
	// BundlePEM is then the trust bundle proxies verify peers with.
	MTLS      bool
	BundlePEM []byte
	// Site is the site this control plane serves; with Residency, other
	// sites' instances (imported through peering) are routed where every
	// local caller's flow is allowed. Without either, none are.
	Site      string
	Residency Residency
	// EnvoyTracing is where Envoy sidecars send request spans; zero: off.
	EnvoyTracing EnvoyTracing
}

// Build resolves its inputs into a Mesh, in one pass: services with their
// defaults, intentions, then policies (which may select instances by
// meta, read from the mesh's own instances). It is pure, and the Mesh is
// not changed afterwards.
func Build(in Inputs) *Mesh {
	cat := in.Catalog
	if cat == nil {
		cat = &registry.Catalog{}
	}
	m := &Mesh{TrustDomain: in.TrustDomain, Services: make([]Service, 0, len(cat.Services)),
		MTLS: in.MTLS, BundlePEM: in.BundlePEM, EnvoyTracing: in.EnvoyTracing}
	splits := splitSites(cat, in.Site)
	routed, decisions, conds := crossSite(splits, in.Site, in.Residency)
	m.Site, m.Residency, m.ResidencyConditions = in.Site, decisions, conds
	for _, sp := range splits {
		remote := routed[sp.svc.Name]
		if len(sp.local) == 0 && len(remote) == 0 {
			continue // only at other sites, and none of them routed here
		}
		svc, warns := buildService(sp.svc, sp.local, remote, in.Defaults)
		m.Services = append(m.Services, svc)
		m.Warnings = append(m.Warnings, warns...)
	}
	m.applyIntentions(cat.Intentions)
	m.applyPolicies(in.Policies)
	m.admitOtherSites(cat.PeerSites, in.Residency)
	m.indexInstances()
	m.indexScope()
	return m
}

// applyIntentions resolves intentions into each service's Authz. An exact
// source beats the wildcard; with neither, the service's default holds.
func (m *Mesh) applyIntentions(intentions []registry.Intention) {
	for i := range m.Services {
		m.Services[i].Authz.OthersAllowed = !m.Services[i].PHI
	}
	for _, in := range intentions {
		dst, ok := m.Service(in.Destination)
		if !ok {
			m.UnresolvedIntentions = append(m.UnresolvedIntentions,
				fmt.Sprintf("%s -> %s: destination is not registered", in.Source, in.Destination))
			continue
		}
		if in.Source == "*" && len(in.Permissions) == 0 {
			dst.Authz.OthersAllowed = in.Allow
			continue
		}
		ns := "default"
		if src, ok := m.Service(in.Source); ok {
			ns = src.Namespace
		} else {
			m.UnresolvedIntentions = append(m.UnresolvedIntentions,
				fmt.Sprintf("%s -> %s: source is not registered", in.Source, in.Destination))
		}
		id := m.serviceID(ns, in.Source)
		if in.Source == "*" {
			id = wire.AnyInTrustDomain(m.TrustDomain)
		}
		if len(in.Permissions) > 0 {
			m.Warnings = append(m.Warnings, dst.applyPermissions(id, in)...)
			continue
		}
		if in.Allow {
			dst.Authz.Allowed = append(dst.Authz.Allowed, id)
		} else {
			dst.Authz.Denied = append(dst.Authz.Denied, id)
		}
	}
}

// buildService resolves one service (settings from s) from its local
// instances and the other sites' instances routed here.
func buildService(s *registry.Service, local, remote []registry.Instance, d Defaults) (Service, []string) {
	var warns []string
	port := commonPort(local)
	if len(local) == 0 {
		port = commonPort(remote)
	}
	out := Service{
		Name: s.Name, Namespace: s.Namespace, Kind: Kind(s.Kind), Protocol: Protocol(s.Protocol), PHI: s.PHI,
		Port:           port,
		LB:             LoadBalancer{Policy: LBPolicy(s.LB)},
		ConnectTimeout: d.ConnectTimeout,
		CircuitBreaker: d.CircuitBreaker,
		Outlier:        d.Outlier,
		Route:          d.route(Kind(s.Kind), Protocol(s.Protocol)),
		Instances:      make([]Instance, 0, len(local)),
		Permissive:     s.Permissive && !s.PHI,
		ExplicitScope:  s.ExplicitScope,
	}
	for _, in := range local {
		out.Instances = append(out.Instances, Instance{ID: in.ID, Address: in.Address, Port: in.Port, AppPort: in.AppPort, Meta: in.Meta})
	}
	for _, in := range remote {
		out.RemoteSites = append(out.RemoteSites, in.Locality.Site)
	}
	slices.Sort(out.RemoteSites)
	out.RemoteSites = slices.Compact(out.RemoteSites)
	switch out.LB.Policy {
	case LBLeastRequest:
		out.LB.ChoiceCount = 2
	case LBRingHash:
		out.LB.MinRingSize, out.LB.MaxRingSize = 1024, 8*1024*1024
	}
	type locKey struct {
		loc    Locality
		remote bool
	}
	byLoc := map[locKey][]Endpoint{}
	for _, in := range append(slices.Clip(local), remote...) {
		if in.Health == registry.HealthCritical {
			continue
		}
		if net.ParseIP(in.Address) == nil {
			// Consul accepts host names; Envoy and grpc-go reject a whole
			// endpoint assignment that holds one. Skip just this instance.
			warns = append(warns, fmt.Sprintf("service %q instance %q: address %q is not an IP address; not routable",
				s.Name, in.ID, in.Address))
			continue
		}
		w := uint32(max(in.Weight, 1))
		loc := locKey{Locality(in.Locality), in.Peer != ""}
		byLoc[loc] = append(byLoc[loc], Endpoint{
			InstanceID: in.ID, Address: in.Address, Port: in.Port,
			Degraded: in.Health == registry.HealthWarning, Weight: w,
		})
	}
	for k, eps := range byLoc {
		out.Localities = append(out.Localities, LocalityEndpoints{Locality: k.loc, Remote: k.remote, Endpoints: eps})
	}
	// Local localities first, each group in a stable order.
	sort.Slice(out.Localities, func(i, j int) bool {
		a, b := &out.Localities[i], &out.Localities[j]
		if a.Remote != b.Remote {
			return !a.Remote
		}
		return localityKey(a.Locality) < localityKey(b.Locality)
	})
	return out, warns
}

func localityKey(l Locality) string {
	return fmt.Sprintf("%s/%s/%s", l.Region, l.Zone, l.Site)
}

// commonPort is the port most instances use (ties: the lowest), which is
// what callers of a TCP service dial on their local sidecar.
func commonPort(instances []registry.Instance) int {
	count := map[int]int{}
	best, bestN := 0, 0
	for _, in := range instances {
		count[in.Port]++
	}
	for p, n := range count {
		if n > bestN || (n == bestN && p < best) {
			best, bestN = p, n
		}
	}
	return best
}

// Service returns the named service.
func (m *Mesh) Service(name string) (*Service, bool) {
	i := sort.Search(len(m.Services), func(i int) bool { return m.Services[i].Name >= name })
	if i < len(m.Services) && m.Services[i].Name == name {
		return &m.Services[i], true
	}
	return nil, false
}

// Instance finds an instance by its ID (an Envoy's node.id) and the
// service it belongs to. Registry IDs are unique per agent only: when two
// instances share an ID, the last in the mesh's order wins.
func (m *Mesh) Instance(id string) (*Service, *Instance, bool) {
	ref, ok := m.instances[id]
	if !ok {
		return nil, nil, false
	}
	svc := &m.Services[ref.service]
	return svc, &svc.Instances[ref.instance], true
}

// indexInstances makes Instance a map lookup: the control loop resolves
// every connected proxy's instance on every round.
func (m *Mesh) indexInstances() {
	m.instances = map[string]instanceRef{}
	for si := range m.Services {
		for ii := range m.Services[si].Instances {
			m.instances[m.Services[si].Instances[ii].ID] = instanceRef{si, ii}
		}
	}
}

// SpiffeID is the SPIFFE ID of a service (CONTRACT.md).
func (m *Mesh) SpiffeID(s *Service) string { return m.serviceID(s.Namespace, s.Name) }

// SpiffeIDs are the identities a service's instances routed here hold:
// this site's, then each other site's whose instances are routed.
func (m *Mesh) SpiffeIDs(s *Service) []string {
	ids := []string{m.SpiffeID(s)}
	for _, site := range s.RemoteSites {
		ids = append(ids, wire.SiteServiceID(m.TrustDomain, s.Namespace, s.Name, site))
	}
	return ids
}

// serviceID is the SPIFFE ID of a service of this site: with a site, the
// site form (api/wire), which is what this site's CA issues.
func (m *Mesh) serviceID(namespace, service string) string {
	return wire.SiteServiceID(m.TrustDomain, namespace, service, m.Site)
}

// applyPermissions turns an intention's L7 permissions into access rules
// for its source. Consul evaluates permissions in order, first match
// wins; here a deny wins over every allow whatever the order, which can
// only refuse more. A match medmesh cannot express (a path regex, headers
// or a JWT) drops an allow (less access) and widens a deny (the deny
// applies without that condition), each with a warning.
func (s *Service) applyPermissions(caller string, in registry.Intention) (warnings []string) {
	for i, p := range in.Permissions {
		name := fmt.Sprintf("intention/%s/%d", in.Source, i)
		var op Operation
		switch {
		case p.PathExact != "":
			op.Paths = []string{p.PathExact}
		case p.PathPrefix != "":
			op.Paths = []string{p.PathPrefix + "*"}
		}
		op.Methods = p.Methods
		if p.PathRegex != "" || p.Headers {
			what := fmt.Sprintf("intention %s -> %s, permission %d: matches on a path regex, headers or a JWT, which medmesh does not translate", in.Source, in.Destination, i)
			if p.Allow {
				warnings = append(warnings, what+"; it allows nothing")
				continue
			}
			warnings = append(warnings, what+"; it denies without that condition")
			if p.PathRegex != "" {
				op.Paths = nil
			}
		}
		rule := AccessRule{Name: name, Allow: p.Allow, Principals: []string{caller}}
		if len(op.Paths) > 0 || len(op.Methods) > 0 {
			rule.To = []Operation{op}
		}
		s.Authz.Rules = append(s.Authz.Rules, rule)
	}
	return warnings
}
