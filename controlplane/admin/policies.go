package admin

import (
	"net/http"

	api "medmesh/api/admin"
)

func (cp *server) handlePolicies(w http.ResponseWriter, _ *http.Request) { writeJSON(w, cp.policies()) }

// policies is the body of /debug/policies.
func (cp *server) policies() api.PoliciesResponse {
	resp := api.PoliciesResponse{Objects: []api.ObjectStatus{}}
	if cp.Policies != nil {
		resp.Source = cp.Policies.Name()
	}
	if res := cp.View().Policies; res != nil {
		resp.Resolved, resp.Errors = true, res.Errors
		resp.Objects = objectStatuses(res.Statuses)
	}
	return resp
}
