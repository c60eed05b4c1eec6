// Package wire is the contract between medmesh's control plane and its
// data planes (Envoy sidecars, proxyless gRPC services, `medmesh sidecar`)
// and the example services: the names, ports, headers and formats both
// sides must agree on. It holds constants and tiny pure functions only,
// and imports nothing of medmesh, so either side can depend on it without
// depending on the other (TestPlanesIndependent keeps it so).
//
// SPIFFE IDs of services (spiffe.go) come in two forms, both valid in one
// trust domain:
//
//	spiffe://<trust-domain>/ns/<namespace>/svc/<service>              no site
//	spiffe://<trust-domain>/ns/<namespace>/svc/<service>/site/<site>  issued at edge site <site>
//
// A control plane without --site issues the first form, as medmesh always
// has; a control plane serving an edge site issues the second, so a callee
// reads a verified caller's site from its ID (ParseServiceID) without
// asking anyone: the uplink may be down. The site is the last segment so
// that RBAC names the callers of a service either by one exact principal
// per allowed site (".../svc/<service>/site/<site>") or, for any site, by
// the prefix ".../svc/<service>/site/". The trailing "/site/" matters: the
// prefix ".../svc/emr" alone would also match the service "emr-billing".
//
// A value here changes only together with CONTRACT.md (where it is listed
// there) and with every deployed bootstrap that names it.
package wire
