package admin

import (
	"net/http"

	api "medmesh/api/admin"
	"medmesh/controlplane/ir"
)

// handleResidency shows what crosses sites: GET /debug/residency.
func (cp *server) handleResidency(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, cp.residency())
}

// residency is the body of /debug/residency.
func (cp *server) residency() api.ResidencyResponse {
	resp := api.ResidencyResponse{Site: cp.Site, Decisions: []api.SiteDecision{}}
	if cp.Residency != nil {
		st := cp.Residency.Stats()
		resp.Policy = api.ResidencyPolicy{Name: st.Policy, Digest: st.Digest, Evaluations: st.Evaluations, Failures: st.Failures}
	}
	if cp.ResidencyPolicy != nil {
		st := cp.ResidencyPolicy.Status()
		resp.Policy.LastError, resp.Policy.LastErrorAt = st.LastError, st.LastErrorAt
	}
	if m := cp.View().Mesh; m != nil {
		resp.Decisions = siteDecisions(m.Residency)
		resp.Conditions = residencyConditions(m.ResidencyConditions)
	}
	return resp
}

func siteDecisions(in []ir.SiteDecision) []api.SiteDecision {
	out := make([]api.SiteDecision, 0, len(in))
	for _, d := range in {
		a := api.SiteDecision{Service: d.Service, Site: d.Site, PHI: d.PHI, Routed: d.Routed, Instances: d.Instances}
		for _, f := range d.Denied {
			a.Denied = append(a.Denied, api.DeniedCall{Source: f.Source, Reasons: f.Reasons})
		}
		out = append(out, a)
	}
	return out
}

func residencyConditions(in []ir.ResidencyCondition) []api.ResidencyCondition {
	var out []api.ResidencyCondition
	for _, c := range in {
		out = append(out, api.ResidencyCondition{Service: c.Service, Sites: c.Sites, Message: c.Message})
	}
	return out
}
