package controlplane

import (
	"net/http"

	"medmesh/controlplane/policy"
)

// PoliciesResponse is the body of /debug/policies.
type PoliciesResponse struct {
	// Source names the policy source; empty when there is none.
	Source string `json:"source,omitempty"`
	// Resolved says whether a policy set has been applied yet.
	Resolved bool `json:"resolved"`
	// Errors are the source's (e.g. a file that does not decode).
	Errors []string `json:"errors,omitempty"`
	// Objects are every policy object with its conditions.
	Objects []policy.ObjectStatus `json:"objects"`
}

// NotAccepted lists the objects that are not in force.
func (r *PoliciesResponse) NotAccepted() []policy.ObjectStatus {
	var out []policy.ObjectStatus
	for _, o := range r.Objects {
		if !o.Accepted() {
			out = append(out, o)
		}
	}
	return out
}

func (cp *ControlPlane) handlePolicies(w http.ResponseWriter, _ *http.Request) {
	resp := PoliciesResponse{Objects: []policy.ObjectStatus{}}
	if cp.opts.Policies != nil {
		resp.Source = cp.opts.Policies.Name()
	}
	cp.mu.RLock()
	if res := cp.state.policies; res != nil {
		resp.Resolved, resp.Errors = true, res.Errors
		resp.Objects = append(resp.Objects, res.Statuses...)
	}
	cp.mu.RUnlock()
	writeJSON(w, resp)
}
