// Package wire is the contract between medmesh's control plane and its
// data planes (Envoy sidecars, proxyless gRPC services, `medmesh sidecar`)
// and the example services: the names, ports, headers and formats both
// sides must agree on. It holds constants and tiny pure functions only,
// and imports nothing of medmesh, so either side can depend on it without
// depending on the other (TestPlanesIndependent keeps it so).
//
// A value here changes only together with CONTRACT.md (where it is listed
// there) and with every deployed bootstrap that names it.
package wire
