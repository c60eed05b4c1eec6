package ir

import (
	"fmt"
	"net"
	"sort"

	"medmesh/api/wire"
	"medmesh/registry"
)

// Build resolves a catalog and defaults into a Mesh. It is pure.
func Build(cat *registry.Catalog, d Defaults, trustDomain string) *Mesh {
	m := &Mesh{TrustDomain: trustDomain, Services: make([]Service, 0, len(cat.Services))}
	for i := range cat.Services {
		svc, warns := buildService(&cat.Services[i], d)
		m.Services = append(m.Services, svc)
		m.Warnings = append(m.Warnings, warns...)
	}
	m.applyIntentions(cat.Intentions)
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
		id := wire.ServiceID(m.TrustDomain, ns, in.Source)
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

func buildService(s *registry.Service, d Defaults) (Service, []string) {
	var warns []string
	out := Service{
		Name: s.Name, Namespace: s.Namespace, Kind: s.Kind, Protocol: s.Protocol, PHI: s.PHI,
		Port:           commonPort(s.Instances),
		LB:             LoadBalancer{Policy: s.LB},
		ConnectTimeout: d.ConnectTimeout,
		CircuitBreaker: d.CircuitBreaker,
		Outlier:        d.Outlier,
		Route:          d.route(s),
		Instances:      s.Instances,
		Permissive:     s.Permissive && !s.PHI,
	}
	switch s.LB {
	case registry.LBLeastRequest:
		out.LB.ChoiceCount = 2
	case registry.LBRingHash:
		out.LB.MinRingSize, out.LB.MaxRingSize = 1024, 8*1024*1024
	}
	byLoc := map[registry.Locality][]Endpoint{}
	for _, in := range s.Instances {
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
		byLoc[in.Locality] = append(byLoc[in.Locality], Endpoint{
			InstanceID: in.ID, Address: in.Address, Port: in.Port,
			Degraded: in.Health == registry.HealthWarning, Weight: w,
		})
	}
	for loc, eps := range byLoc {
		out.Localities = append(out.Localities, LocalityEndpoints{Locality: loc, Endpoints: eps})
	}
	sort.Slice(out.Localities, func(i, j int) bool {
		return localityKey(out.Localities[i].Locality) < localityKey(out.Localities[j].Locality)
	})
	return out, warns
}

func localityKey(l registry.Locality) string {
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

// SpiffeID is the SPIFFE ID of a service (CONTRACT.md).
func (m *Mesh) SpiffeID(s *Service) string {
	return wire.ServiceID(m.TrustDomain, s.Namespace, s.Name)
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
