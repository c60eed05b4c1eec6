package ir

import (
	"fmt"
	"sort"
	"strings"

	"medmesh/api/wire"
)

// Scope: which services a caller's proxies are sent. Configuration follows
// authorization: a service's proxies get clusters, routes and endpoints
// only for the services it may call (the callee's RBAC would refuse the
// rest anyway), plus whatever the routes of those services send or mirror
// to. PHI services deny every caller no intention or MeshAccess allows, so
// a sidecar no longer holds the whole mesh.
//
// "May call" is decided exactly as the callee's RBAC decides it
// (translate/rbac.go, rbac_access.go): a MeshAccess deny without
// operations refuses; an intention or an allow rule naming the caller
// admits (for some of its calls at least); otherwise "others" decide,
// minus callers an intention denies, at an edge site only from the sites
// residency admits. With mTLS off nothing is enforced at the callee, so
// every service is in scope.
//
// A service whose meta says medmesh-scope=explicit narrows its own scope
// to the services whose authorization names it: default-allow services
// and wildcard allows are then left out unless an intention or MeshAccess
// names it as a caller.
//
// The decision is per calling service, never per proxy: every proxy of a
// service gets the same scope, so the xds layer shares one translated set
// between them.

// ScopeEntry is one service in (or out of) a caller's scope, and why.
type ScopeEntry struct {
	Service string `json:"service"`
	Reason  string `json:"reason"`
}

// ScopeExplanation is a caller's scope with the reason for every service
// of the mesh, for /debug/config and `medmesh status`.
type ScopeExplanation struct {
	Caller   string `json:"caller"`
	Explicit bool   `json:"explicit,omitempty"`
	// Included are the services its proxies are sent, sorted.
	Included []ScopeEntry `json:"included"`
	// Excluded are the mesh's other services, sorted.
	Excluded []ScopeEntry `json:"excluded,omitempty"`
}

// scopeIndex answers Scope in time proportional to the scope: services
// are classified once per mesh. A "simple" service's decision depends only
// on whether its authorization names the caller exactly; the few others
// (denials, wildcard patterns, edge-site narrowing) are decided per caller.
type scopeIndex struct {
	open    []int            // simple services every caller may call
	named   map[string][]int // caller SPIFFE ID -> simple services naming it
	complex []int            // decided per caller (decide)
	refs    [][]int          // per service: services its routes send or mirror to
}

// indexScope classifies every service; Build calls it once.
func (m *Mesh) indexScope() { m.scope = m.buildScopeIndex() }

func (m *Mesh) buildScopeIndex() *scopeIndex {
	idx := &scopeIndex{named: map[string][]int{}, refs: make([][]int, len(m.Services))}
	for i := range m.Services {
		svc := &m.Services[i]
		idx.refs[i] = m.routeTargets(svc)
		if !m.simpleAuthz(&svc.Authz) {
			idx.complex = append(idx.complex, i)
			continue
		}
		if svc.Authz.OthersAllowed || !m.MTLS {
			idx.open = append(idx.open, i)
		}
		seen := map[string]bool{}
		note := func(ids []string) {
			for _, id := range ids {
				if !seen[id] {
					seen[id] = true
					idx.named[id] = append(idx.named[id], i)
				}
			}
		}
		note(svc.Authz.Allowed)
		for _, r := range svc.Authz.Rules {
			if r.Allow {
				note(r.Principals)
			}
		}
	}
	return idx
}

// simpleAuthz: no denial that could refuse a caller, no pattern among the
// principals, no edge-site narrowing of "others".
func (m *Mesh) simpleAuthz(a *Authz) bool {
	if len(a.Denied) > 0 || len(a.Others) > 0 {
		return false
	}
	exact := func(ids []string) bool {
		for _, id := range ids {
			if m.isPattern(id) {
				return false
			}
		}
		return true
	}
	if !exact(a.Allowed) {
		return false
	}
	for _, r := range a.Rules {
		if !r.Allow && len(r.To) == 0 {
			return false
		}
		if r.Allow && !exact(r.Principals) {
			return false
		}
	}
	return true
}

func (m *Mesh) isPattern(id string) bool {
	if _, ok := wire.AnyAtSiteOf(m.TrustDomain, id); ok {
		return true
	}
	return strings.HasSuffix(id, "*")
}

// routeTargets are the other services a service's route rules send or
// mirror to (a subset's cluster is "<service>|<selector>").
func (m *Mesh) routeTargets(svc *Service) []int {
	var out []int
	add := func(cluster string) {
		name, _, _ := strings.Cut(cluster, "|")
		if name == svc.Name {
			return
		}
		if i, ok := m.serviceIndex(name); ok {
			out = append(out, i)
		}
	}
	for _, r := range svc.Policy.Rules {
		for _, c := range r.Clusters {
			add(c.Cluster)
		}
		if r.Mirror != nil {
			add(r.Mirror.Cluster)
		}
	}
	return out
}

func (m *Mesh) serviceIndex(name string) (int, bool) {
	i := sort.Search(len(m.Services), func(i int) bool { return m.Services[i].Name >= name })
	return i, i < len(m.Services) && m.Services[i].Name == name
}

// CallerID is the SPIFFE ID a service's proxies present: this site's ID
// of the service, in its namespace ("default" for a name the mesh does
// not know, as for an outbound-only client).
func (m *Mesh) CallerID(caller string) string {
	ns := "default"
	if s, ok := m.Service(caller); ok {
		ns = s.Namespace
	}
	return m.serviceID(ns, caller)
}

func (m *Mesh) explicitScope(caller string) bool {
	s, ok := m.Service(caller)
	return ok && s.ExplicitScope
}

// Scope returns the names of the services a caller's proxies are sent,
// sorted. It is the fast form of ExplainScope; both always agree.
func (m *Mesh) Scope(caller string) []string {
	idx := m.scope
	if idx == nil {
		idx = m.buildScopeIndex() // a Mesh made without Build (tests)
	}
	id, explicit := m.CallerID(caller), m.explicitScope(caller)
	in := make([]bool, len(m.Services))
	if !explicit {
		for _, i := range idx.open {
			in[i] = true
		}
	}
	for _, i := range idx.named[id] {
		in[i] = true
	}
	for _, i := range idx.complex {
		if ok, named, _ := m.decide(id, &m.Services[i]); ok && (named || !explicit) {
			in[i] = true
		}
	}
	m.closeOverRoutes(idx, in, nil)
	out := make([]string, 0, len(idx.open)+len(idx.named[id]))
	for i := range in {
		if in[i] {
			out = append(out, m.Services[i].Name)
		}
	}
	return out
}

// closeOverRoutes adds what in-scope services' routes reference, noting
// by whom in via (when not nil).
func (m *Mesh) closeOverRoutes(idx *scopeIndex, in []bool, via map[int]int) {
	var queue []int
	for i := range in {
		if in[i] {
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, t := range idx.refs[i] {
			if !in[t] {
				in[t] = true
				if via != nil {
					via[t] = i
				}
				queue = append(queue, t)
			}
		}
	}
}

// ExplainScope is Scope with the reason for each service of the mesh.
func (m *Mesh) ExplainScope(caller string) ScopeExplanation {
	idx := m.scope
	if idx == nil {
		idx = m.buildScopeIndex()
	}
	id, explicit := m.CallerID(caller), m.explicitScope(caller)
	out := ScopeExplanation{Caller: caller, Explicit: explicit, Included: []ScopeEntry{}}
	in := make([]bool, len(m.Services))
	reasons := make([]string, len(m.Services))
	for i := range m.Services {
		ok, named, why := m.decide(id, &m.Services[i])
		switch {
		case ok && !named && explicit:
			reasons[i] = fmt.Sprintf("narrowed: %q has medmesh-scope=explicit and no intention or MeshAccess names it as a caller (%s)", caller, why)
		case ok:
			in[i] = true
			reasons[i] = why
		default:
			reasons[i] = why
		}
	}
	via := map[int]int{}
	m.closeOverRoutes(idx, in, via)
	for i := range m.Services {
		e := ScopeEntry{Service: m.Services[i].Name, Reason: reasons[i]}
		if by, ok := via[i]; ok {
			e.Reason = fmt.Sprintf("referenced by the routes of %q (its own authorization: %s)", m.Services[by].Name, reasons[i])
		}
		if in[i] {
			out.Included = append(out.Included, e)
		} else {
			out.Excluded = append(out.Excluded, e)
		}
	}
	return out
}

// decide says whether caller (a SPIFFE ID) may call svc, whether svc's
// authorization names it (not only a wildcard or a default), and why,
// in the order the callee's RBAC applies its rules.
func (m *Mesh) decide(caller string, svc *Service) (allowed, named bool, reason string) {
	if !m.MTLS {
		return true, m.names(caller, &svc.Authz), "mTLS is off: no authorization is enforced"
	}
	a := &svc.Authz
	for _, r := range a.Rules {
		if !r.Allow && len(r.To) == 0 && m.matchesAny(r.Principals, caller) {
			return false, false, "denied by " + ruleName(r)
		}
	}
	for _, p := range a.Allowed {
		if m.matches(p, caller) {
			if p == caller {
				return true, true, "an intention allows it"
			}
			return true, false, "an intention from every caller (\"*\") allows it"
		}
	}
	for _, r := range a.Rules {
		if r.Allow && m.matchesAny(r.Principals, caller) {
			return true, containsExact(r.Principals, caller), ruleName(r) + " allows it"
		}
	}
	// A denial by name matters only for "others" in RBAC; checked first
	// here because it is the reason worth showing, even for a PHI service.
	if m.matchesAny(a.Denied, caller) {
		return false, false, "an intention denies it"
	}
	if !a.OthersAllowed {
		if svc.PHI {
			return false, false, "PHI default-deny: no intention or MeshAccess allows it"
		}
		return false, false, "an intention from every caller (\"*\") denies it"
	}
	if len(a.Others) > 0 && !m.matchesAny(a.Others, caller) {
		return false, false, "residency: callers from this site are not admitted"
	}
	if svc.PHI {
		return true, false, "an intention from every caller (\"*\") allows it"
	}
	return true, false, "default-allow: not PHI"
}

// names: svc's authorization names caller exactly (used with mTLS off).
func (m *Mesh) names(caller string, a *Authz) bool {
	if containsExact(a.Allowed, caller) {
		return true
	}
	for _, r := range a.Rules {
		if r.Allow && containsExact(r.Principals, caller) {
			return true
		}
	}
	return false
}

func ruleName(r AccessRule) string {
	if src, ok := strings.CutPrefix(r.Name, "intention/"); ok {
		src, _, _ = strings.Cut(src, "/")
		return fmt.Sprintf("an L7 intention from %q", src)
	}
	return fmt.Sprintf("MeshAccess %q", r.Name)
}

func containsExact(ids []string, id string) bool {
	for _, p := range ids {
		if p == id {
			return true
		}
	}
	return false
}

func (m *Mesh) matchesAny(patterns []string, id string) bool {
	for _, p := range patterns {
		if m.matches(p, id) {
			return true
		}
	}
	return false
}

// matches is RBAC's principal match (translate.principalExact): an exact
// ID, a trust-domain prefix ending in "*", or every workload of a site.
func (m *Mesh) matches(pattern, id string) bool {
	if site, ok := wire.AnyAtSiteOf(m.TrustDomain, pattern); ok {
		td, _, _, s, ok := wire.ParseServiceID(id)
		return ok && td == m.TrustDomain && s == site
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(id, prefix)
	}
	return pattern == id
}
