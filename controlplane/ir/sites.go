package ir

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"medmesh/api/wire"
	"medmesh/registry"
)

// Sites. A control plane serves one site (Inputs.Site); other sites'
// instances reach it through Consul cluster peering (registry instances
// with a Peer). Which of them a proxy here may be sent is residency's
// decision, per flow: a service of this site calling a service at another
// site. Local instances always come first; another site's instances are a
// lower failover priority (translate), so they take traffic only when the
// local ones cannot.

// FlowEnd is one end of a flow.
type FlowEnd struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	Site      string `json:"site"`
}

// Flow is a service at this site calling a service at a site.
type Flow struct {
	Source      FlowEnd `json:"source"`
	Destination FlowEnd `json:"destination"`
	// PHI and Kind describe the destination service.
	PHI  bool `json:"phi"`
	Kind Kind `json:"kind"`
}

// FlowDecision is residency's answer for one flow.
type FlowDecision struct {
	Allowed bool     `json:"allowed"`
	Reasons []string `json:"reasons,omitempty"`
}

// Residency decides flows (controlplane/residency, a Rego policy). It is
// called once per mesh build with every cross-site flow; implementations
// memoize, so an unchanged flow costs a lookup.
type Residency interface {
	Decide(flows []Flow) []FlowDecision
}

// SiteDecision is what the mesh does with one service's instances at one
// other site, for /debug/residency and `medmesh status`.
type SiteDecision struct {
	Service string `json:"service"`
	Site    string `json:"site"`
	PHI     bool   `json:"phi"`
	// Routed: this site's proxies are sent the instances (every local
	// caller's flow is allowed).
	Routed bool `json:"routed"`
	// Denied lists the local callers whose flow the policy refuses, with
	// the policy's reasons.
	Denied []DeniedFlow `json:"denied,omitempty"`
	// Instances counts the other site's routable instances.
	Instances int `json:"instances"`
}

// DeniedFlow is one refused flow.
type DeniedFlow struct {
	Source  string   `json:"source"`
	Reasons []string `json:"reasons,omitempty"`
}

// ResidencyCondition reports a service this site cannot serve locally and
// may not reach elsewhere: it fails here rather than leave its site.
type ResidencyCondition struct {
	Service string   `json:"service"`
	Sites   []string `json:"sites"` // where it has instances
	Message string   `json:"message"`
}

// remoteSites returns, per other site, the instances of a service there.
func remoteSites(s *registry.Service) map[string][]registry.Instance {
	out := map[string][]registry.Instance{}
	for _, in := range s.Instances {
		if in.Peer != "" {
			out[in.Locality.Site] = append(out[in.Locality.Site], in)
		}
	}
	return out
}

// crossSite decides, for every service with instances at other sites,
// which sites' instances this site's proxies may be sent: those every
// local caller may reach. (A site that some callers may reach and others
// may not is not routed: endpoints are shared by all callers of a service,
// so routing it would let the refused callers cross too. The callee's
// RBAC is the second line either way.) It returns the routed instances by
// service, the decisions, and conditions for services that have no local
// instance and may not leave.
func crossSite(cat *registry.Catalog, site string, res Residency, local map[string]*registry.Service) (
	routed map[string][]registry.Instance, decisions []SiteDecision, conds []ResidencyCondition) {
	routed = map[string][]registry.Instance{}
	if site == "" || res == nil {
		return routed, nil, nil
	}
	callers := slices.Sorted(func(yield func(string) bool) {
		for name := range local {
			if !yield(name) {
				return
			}
		}
	})
	type key struct{ service, site string }
	var flows []Flow
	var keys []key
	for i := range cat.Services {
		s := &cat.Services[i]
		for remote := range remoteSites(s) {
			if remote == site {
				continue // another datacenter naming itself this site
			}
			for _, c := range callers {
				flows = append(flows, Flow{
					Source:      FlowEnd{Service: c, Namespace: local[c].Namespace, Site: site},
					Destination: FlowEnd{Service: s.Name, Namespace: s.Namespace, Site: remote},
					PHI:         s.PHI, Kind: Kind(s.Kind),
				})
				keys = append(keys, key{s.Name, remote})
			}
		}
	}
	answers := res.Decide(flows)
	byKey := map[key]*SiteDecision{}
	for i, f := range flows {
		k := keys[i]
		d := byKey[k]
		if d == nil {
			d = &SiteDecision{Service: k.service, Site: k.site, PHI: f.PHI, Routed: true}
			byKey[k] = d
		}
		if i >= len(answers) || !answers[i].Allowed {
			d.Routed = false
			var reasons []string
			if i < len(answers) {
				reasons = answers[i].Reasons
			}
			d.Denied = append(d.Denied, DeniedFlow{Source: f.Source.Service, Reasons: reasons})
		}
	}
	for i := range cat.Services {
		s := &cat.Services[i]
		var deniedSites []string
		for remote, ins := range remoteSites(s) {
			d := byKey[key{s.Name, remote}]
			if d == nil {
				continue
			}
			for _, in := range ins {
				if in.Health != registry.HealthCritical {
					d.Instances++
				}
			}
			if d.Routed {
				routed[s.Name] = append(routed[s.Name], ins...)
			} else {
				deniedSites = append(deniedSites, remote)
			}
		}
		if len(deniedSites) > 0 && !hasRoutableLocal(local[s.Name]) && len(routed[s.Name]) == 0 {
			sort.Strings(deniedSites)
			conds = append(conds, ResidencyCondition{Service: s.Name, Sites: deniedSites, Message: fmt.Sprintf(
				"service %q has no healthy instance at site %s and may not be reached at %s (residency): calls to it fail here rather than leave the site",
				s.Name, site, strings.Join(deniedSites, ", "))})
		}
	}
	for _, d := range byKey {
		decisions = append(decisions, *d)
	}
	sort.Slice(decisions, func(i, j int) bool {
		if decisions[i].Service != decisions[j].Service {
			return decisions[i].Service < decisions[j].Service
		}
		return decisions[i].Site < decisions[j].Site
	})
	return routed, decisions, conds
}

func hasRoutableLocal(s *registry.Service) bool {
	if s == nil {
		return false
	}
	for _, in := range s.Instances {
		if in.Health != registry.HealthCritical {
			return true
		}
	}
	return false
}

// admitOtherSites is residency's second line, at the callee: a caller's
// site is in its SPIFFE ID, so the authorization this site's services
// give a caller (intentions, MeshAccess) names it at this site only, and
// at another site only where the policy allows that flow (a caller there
// calling this service here). A misrouted or hand-configured caller from
// elsewhere is refused by RBAC whatever its proxy was sent. Denials cover
// the caller at every site. Without a site or a policy nothing changes.
func (m *Mesh) admitOtherSites(sites []string, res Residency) {
	if m.Site == "" || res == nil {
		return
	}
	sites = slices.DeleteFunc(slices.Clone(sites), func(s string) bool { return s == m.Site || s == "" })
	for i := range m.Services {
		svc := &m.Services[i]
		if len(svc.Instances) == 0 {
			continue // not served here: no callee to protect
		}
		// Ask about every (caller, other site) the service's authorization
		// names, in one batch.
		type caller struct{ ns, name string }
		var callers []caller
		seen := map[caller]bool{}
		note := func(ids []string) {
			for _, id := range ids {
				if _, ns, name, site, ok := wire.ParseServiceID(id); ok && site == m.Site && !seen[caller{ns, name}] {
					seen[caller{ns, name}] = true
					callers = append(callers, caller{ns, name})
				}
			}
		}
		note(svc.Authz.Allowed)
		for _, r := range svc.Authz.Rules {
			if r.Allow {
				note(r.Principals)
			}
		}
		// "Any caller" (a wildcard intention, or a service that admits
		// callers no rule names) is any caller of this site, and of each
		// peered site where residency allows a call from an unnamed
		// service there (source.service is "").
		var flows []Flow
		for _, site := range sites {
			flows = append(flows, Flow{Source: FlowEnd{Site: site},
				Destination: FlowEnd{Service: svc.Name, Namespace: svc.Namespace, Site: m.Site}, PHI: svc.PHI, Kind: svc.Kind})
		}
		anyFlows := len(flows)
		for _, c := range callers {
			for _, site := range sites {
				flows = append(flows, Flow{Source: FlowEnd{Service: c.name, Namespace: c.ns, Site: site},
					Destination: FlowEnd{Service: svc.Name, Namespace: svc.Namespace, Site: m.Site}, PHI: svc.PHI, Kind: svc.Kind})
			}
		}
		allowed := map[string]bool{} // local ID -> other-site IDs admitted, by ID
		extra := map[string][]string{}
		anyWhere := []string{wire.AnyAtSite(m.TrustDomain, m.Site)}
		if len(flows) > 0 {
			for j, d := range res.Decide(flows) {
				f := flows[j]
				if j < anyFlows {
					if d.Allowed {
						anyWhere = append(anyWhere, wire.AnyAtSite(m.TrustDomain, f.Source.Site))
					}
					continue
				}
				if d.Allowed {
					local := m.serviceID(f.Source.Namespace, f.Source.Service)
					id := wire.SiteServiceID(m.TrustDomain, f.Source.Namespace, f.Source.Service, f.Source.Site)
					if !allowed[id] {
						allowed[id] = true
						extra[local] = append(extra[local], id)
					}
				}
			}
		}
		anyID := wire.AnyInTrustDomain(m.TrustDomain)
		expand := func(ids []string) []string {
			var out []string
			for _, id := range ids {
				if id == anyID {
					out = append(out, anyWhere...)
					continue
				}
				out = append(out, id)
				out = append(out, extra[id]...)
			}
			return out
		}
		everySite := func(ids []string) []string {
			var out []string
			for _, id := range ids {
				out = append(out, id)
				if _, ns, name, site, ok := wire.ParseServiceID(id); ok && site == m.Site {
					for _, s := range sites {
						out = append(out, wire.SiteServiceID(m.TrustDomain, ns, name, s))
					}
				}
			}
			return out
		}
		svc.Authz.Allowed = expand(svc.Authz.Allowed)
		if svc.Authz.OthersAllowed {
			svc.Authz.Others = anyWhere
		}
		svc.Authz.Denied = everySite(svc.Authz.Denied)
		for k := range svc.Authz.Rules {
			r := &svc.Authz.Rules[k]
			if r.Allow {
				r.Principals = expand(r.Principals)
			} else {
				r.Principals = everySite(r.Principals)
			}
		}
	}
}
