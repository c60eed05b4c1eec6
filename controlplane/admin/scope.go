package admin

import (
	"slices"
	"strings"

	api "medmesh/api/admin"
	"medmesh/controlplane/ir"
)

// scopeResponse explains a service's scope in the mesh.
func scopeResponse(m *ir.Mesh, service string) *api.ScopeResponse {
	ex := m.ExplainScope(service)
	out := &api.ScopeResponse{Service: service, Explicit: ex.Explicit, Services: len(m.Services),
		Included: make([]api.ScopeEntry, 0, len(ex.Included))}
	for _, e := range ex.Included {
		out.Included = append(out.Included, api.ScopeEntry{Service: e.Service, Reason: e.Reason})
	}
	for _, e := range ex.Excluded {
		out.Excluded = append(out.Excluded, api.ScopeEntry{Service: e.Service, Reason: e.Reason})
	}
	return out
}

// sentScope splits the explanation by what a proxy was actually sent
// (sorted names): a service the mesh has since added to or dropped from
// the scope keeps its reason, under the list that matches the proxy.
func sentScope(sr *api.ScopeResponse, sent []string) (in, out []api.ScopeEntry) {
	in = []api.ScopeEntry{}
	for _, e := range append(slices.Clone(sr.Included), sr.Excluded...) {
		if _, found := slices.BinarySearch(sent, e.Service); found {
			in = append(in, e)
		} else {
			out = append(out, e)
		}
	}
	byName := func(a, b api.ScopeEntry) int { return strings.Compare(a.Service, b.Service) }
	slices.SortFunc(in, byName)
	slices.SortFunc(out, byName)
	return in, out
}
