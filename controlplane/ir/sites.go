package ir

import (
	"fmt"
	"slices"
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

// siteSplit is one catalog service as this site sees it: its own
// instances, and other sites' instances (imported through peering) by
// site. Instances of a peer naming itself this site are never routed.
type siteSplit struct {
	svc    *registry.Service // its settings; Instances are not read
	local  []registry.Instance
	remote map[string][]registry.Instance
	sites  []string // remote's sites, sorted
}

func splitSites(cat *registry.Catalog, site string) []siteSplit {
	out := make([]siteSplit, len(cat.Services))
	for i := range cat.Services {
		sp := &out[i]
		sp.svc = &cat.Services[i]
		for _, in := range sp.svc.Instances {
			switch {
			case in.Peer == "":
				sp.local = append(sp.local, in)
			case in.Locality.Site != site:
				if sp.remote == nil {
					sp.remote = map[string][]registry.Instance{}
				}
				if _, ok := sp.remote[in.Locality.Site]; !ok {
					sp.sites = append(sp.sites, in.Locality.Site)
				}
				sp.remote[in.Locality.Site] = append(sp.remote[in.Locality.Site], in)
			}
		}
		slices.Sort(sp.sites)
	}
	return out
}

// routable counts the instances that may receive traffic.
func routable(ins []registry.Instance) int {
	n := 0
	for _, in := range ins {
		if in.Health != registry.HealthCritical {
			n++
		}
	}
	return n
}

// crossSite decides, for every service with instances at other sites,
// which sites' instances this site's proxies may be sent: those every
// local caller (a service with instances here) may reach. A site that some
// callers may reach and others may not is not routed: endpoints are
// shared by all callers of a service, so routing it would let the refused
// callers cross too; the callee's RBAC is the second line either way. It
// returns the routed instances by service, the decisions (by service,
// then site), and conditions for services that have no routable instance
// here and may not leave.
func crossSite(splits []siteSplit, site string, res Residency) (
	routed map[string][]registry.Instance, decisions []SiteDecision, conds []ResidencyCondition) {
	if site == "" || res == nil {
		return nil, nil, nil
	}
	var callers []FlowEnd // sorted: the catalog is
	for _, sp := range splits {
		if len(sp.local) > 0 {
			callers = append(callers, FlowEnd{Service: sp.svc.Name, Namespace: sp.svc.Namespace, Site: site})
		}
	}
	var flows []Flow
	for _, sp := range splits {
		for _, remote := range sp.sites {
			for _, c := range callers {
				flows = append(flows, Flow{Source: c, PHI: sp.svc.PHI, Kind: Kind(sp.svc.Kind),
					Destination: FlowEnd{Service: sp.svc.Name, Namespace: sp.svc.Namespace, Site: remote}})
			}
		}
	}
	answers := res.Decide(flows)
	routed = map[string][]registry.Instance{}
	next := 0
	for _, sp := range splits {
		var held []string
		for _, remote := range sp.sites {
			d := SiteDecision{Service: sp.svc.Name, Site: remote, PHI: sp.svc.PHI, Routed: len(callers) > 0,
				Instances: routable(sp.remote[remote])}
			for _, c := range callers {
				if a := answers[next]; !a.Allowed {
					d.Routed = false
					d.Denied = append(d.Denied, DeniedFlow{Source: c.Service, Reasons: a.Reasons})
				}
				next++
			}
			decisions = append(decisions, d)
			if d.Routed {
				routed[sp.svc.Name] = append(routed[sp.svc.Name], sp.remote[remote]...)
			} else {
				held = append(held, remote)
			}
		}
		if len(held) > 0 && routable(sp.local) == 0 && len(routed[sp.svc.Name]) == 0 {
			conds = append(conds, ResidencyCondition{Service: sp.svc.Name, Sites: held, Message: fmt.Sprintf(
				"service %q has no healthy instance at site %s and may not be reached at %s (residency): calls to it fail here rather than leave the site",
				sp.svc.Name, site, strings.Join(held, ", "))})
		}
	}
	return routed, decisions, conds
}

// admitOtherSites is residency's second line, at the callee: a caller's
// site is in its SPIFFE ID, so the authorization this site's services
// give a caller (intentions, MeshAccess) names it at this site only, and
// at another peered site only where the policy allows that flow (a caller
// there calling this service here). A misrouted or hand-configured caller
// from elsewhere is refused by RBAC whatever its proxy was sent. Denials
// cover the caller at every site. Without a site or a policy nothing
// changes.
func (m *Mesh) admitOtherSites(peerSites []string, res Residency) {
	if m.Site == "" || res == nil {
		return
	}
	sites := slices.Compact(slices.Sorted(slices.Values(peerSites)))
	sites = slices.DeleteFunc(sites, func(s string) bool { return s == m.Site || s == "" })
	for i := range m.Services {
		if len(m.Services[i].Instances) > 0 { // served here: a callee to protect
			m.admitAt(&m.Services[i], sites, res)
		}
	}
}

// admitAt rewrites one service's authorization for the other sites.
func (m *Mesh) admitAt(svc *Service, sites []string, res Residency) {
	ask := func(from []FlowEnd) []FlowDecision {
		flows := make([]Flow, len(from))
		for i, f := range from {
			flows[i] = Flow{Source: f, PHI: svc.PHI, Kind: svc.Kind,
				Destination: FlowEnd{Service: svc.Name, Namespace: svc.Namespace, Site: m.Site}}
		}
		return res.Decide(flows)
	}
	// "Any caller" (a wildcard intention, or a service that admits callers
	// no rule names) is any caller of this site, and of each peered site
	// where residency allows a call from an unnamed service there.
	anyWhere := []string{wire.AnyAtSite(m.TrustDomain, m.Site)}
	var unnamed []FlowEnd
	for _, s := range sites {
		unnamed = append(unnamed, FlowEnd{Site: s})
	}
	for i, d := range ask(unnamed) {
		if d.Allowed {
			anyWhere = append(anyWhere, wire.AnyAtSite(m.TrustDomain, sites[i]))
		}
	}
	// A caller named at this site is admitted from each site its flow is
	// allowed from: extra maps its ID here to its IDs there.
	var named []FlowEnd
	for _, id := range m.namedCallers(svc.Authz) {
		_, ns, name, _, _ := wire.ParseServiceID(id)
		for _, s := range sites {
			named = append(named, FlowEnd{Service: name, Namespace: ns, Site: s})
		}
	}
	extra := map[string][]string{}
	for i, d := range ask(named) {
		if f := named[i]; d.Allowed {
			here := m.serviceID(f.Namespace, f.Service)
			extra[here] = append(extra[here], wire.SiteServiceID(m.TrustDomain, f.Namespace, f.Service, f.Site))
		}
	}
	anyID := wire.AnyInTrustDomain(m.TrustDomain)
	admit := func(ids []string) []string {
		var out []string
		for _, id := range ids {
			if id == anyID {
				out = append(out, anyWhere...)
				continue
			}
			out = append(append(out, id), extra[id]...)
		}
		return out
	}
	refuseEverywhere := func(ids []string) []string {
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
	svc.Authz.Allowed = admit(svc.Authz.Allowed)
	svc.Authz.Denied = refuseEverywhere(svc.Authz.Denied)
	if svc.Authz.OthersAllowed {
		svc.Authz.Others = anyWhere
	}
	for k := range svc.Authz.Rules {
		r := &svc.Authz.Rules[k]
		if r.Allow {
			r.Principals = admit(r.Principals)
		} else {
			r.Principals = refuseEverywhere(r.Principals)
		}
	}
}

// namedCallers are the callers at this site a service's authorization
// allows by name (intentions and allow rules), each once, sorted.
func (m *Mesh) namedCallers(a Authz) []string {
	var ids []string
	note := func(list []string) {
		for _, id := range list {
			if _, _, _, site, ok := wire.ParseServiceID(id); ok && site == m.Site {
				ids = append(ids, id)
			}
		}
	}
	note(a.Allowed)
	for _, r := range a.Rules {
		if r.Allow {
			note(r.Principals)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}
