package controlplane

import (
	"medmesh/controlplane/ir"
	"medmesh/controlplane/residency"
)

// residencyAdapter lets ir.Build ask a residency.Decider about flows: the
// IR speaks its own types, residency its own (so the Rego input document
// is defined in one place).
type residencyAdapter struct{ d *residency.Decider }

func (a residencyAdapter) Decide(flows []ir.Flow) []ir.FlowDecision {
	in := make([]residency.Flow, len(flows))
	for i, f := range flows {
		in[i] = residency.Flow{
			Source: residency.Source{Service: f.Source.Service, Namespace: f.Source.Namespace, Site: f.Source.Site},
			Destination: residency.Destination{Service: f.Destination.Service, Namespace: f.Destination.Namespace,
				Site: f.Destination.Site, PHI: f.PHI, Kind: string(f.Kind)},
		}
	}
	out := make([]ir.FlowDecision, len(flows))
	for i, d := range a.d.Decide(in) {
		out[i] = ir.FlowDecision{Allowed: d.Allowed, Reasons: d.Reasons}
	}
	return out
}
