package admin

import (
	"net/http"

	api "medmesh/api/admin"
)

func (cp *server) handlePolicies(w http.ResponseWriter, _ *http.Request) {
	resp := api.PoliciesResponse{Objects: []api.ObjectStatus{}}
	if cp.Policies != nil {
		resp.Source = cp.Policies.Name()
	}
	if res := cp.View().Policies; res != nil {
		resp.Resolved, resp.Errors = true, res.Errors
		resp.Objects = objectStatuses(res.Statuses)
	}
	writeJSON(w, resp)
}
