// Package sidecar holds no code: it is the map of medmesh's data-plane
// side, the workload companion that `medmesh sidecar` runs beside each
// service, and of the libraries proxyless Go services link instead.
//
//   - run: assembles the `medmesh sidecar` process from the packages below
//     (what starts, in which order, and how it stops); cmd/medmesh only
//     turns flags into its options.
//   - svid: the SVID agent (the workload's X.509-SVID and bundle, fetched
//     over SDS and written to files) and the SPIFFE Workload API.
//   - phi: the PHI core shared by every front end: classify, cap by
//     caller, admit by priority, audit; the rules in force and metrics.
//   - extproc: the Envoy ext_proc front end of the PHI core.
//   - middleware: the net/http and gRPC front ends of the PHI core, for
//     services without an Envoy.
//   - classify: which requests carry PHI, their class and priority.
//   - sched: admission by clinical priority (limits, queues, aging).
//   - audit: the HIPAA audit trail (FHIR AuditEvent lines).
//   - consulreg: an injected pod's own registration in Consul.
//
// The data plane shares nothing with the control plane but the contract
// in api/wire (api/wire's TestPlanesIndependent keeps it so).
package sidecar
