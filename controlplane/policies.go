package controlplane

import (
	"net/http"
	"time"

	"medmesh/api/admin"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
)

// applyPolicies resolves the latest policy set against the catalog the
// mesh was built from and applies what is accepted. Objects whose
// standing changed are logged once, naming the object and the field.
// Returns nil when there is no policy source.
func (cp *ControlPlane) applyPolicies(st *loopState, mesh *ir.Mesh) *policy.Result {
	if st.policySet == nil {
		return nil
	}
	res := policy.Resolve(st.policySet, policy.Options{
		Catalog: st.catalog, Defaults: cp.opts.Defaults, Previous: st.policyStatus, Now: time.Now(),
	})
	mesh.ApplyPolicies(st.catalog, res.Policies)
	before := map[policy.Key]string{}
	for i := range st.policyStatus {
		before[st.policyStatus[i].Key] = st.policyStatus[i].Message()
	}
	for i := range res.Statuses {
		s := &res.Statuses[i]
		msg, seen := before[s.Key]
		switch {
		case s.Message() != "" && (s.Message() != msg || !seen):
			cp.log.Warn("policy not applied; the rest of the mesh keeps its configuration", "policy", s.Key.String(),
				"source", s.Source, "reason", s.Message())
		case s.Message() == "" && (msg != "" || !seen):
			cp.log.Info("policy in force", "policy", s.Key.String(), "service", s.Service)
		}
	}
	st.policyStatus = res.Statuses
	if w, ok := cp.opts.Policies.(policy.StatusWriter); ok {
		w.WriteStatuses(res.Statuses)
	}
	return res
}

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
