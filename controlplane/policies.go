package controlplane

import (
	"net/http"

	"medmesh/api/admin"
)

func (cp *ControlPlane) handlePolicies(w http.ResponseWriter, _ *http.Request) {
	resp := admin.PoliciesResponse{Objects: []admin.ObjectStatus{}}
	if cp.opts.Policies != nil {
		resp.Source = cp.opts.Policies.Name()
	}
	cp.mu.RLock()
	if res := cp.state.policies; res != nil {
		resp.Resolved, resp.Errors = true, res.Errors
		resp.Objects = adminObjectStatuses(res.Statuses)
	}
	cp.mu.RUnlock()
	writeJSON(w, resp)
}
