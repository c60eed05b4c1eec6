// Package meshapp is what every example workload does to join the mesh as
// a proxyless gRPC service: find its xDS bootstrap (writing it and
// re-executing itself when GRPC_XDS_BOOTSTRAP is unset), serve through
// grpc-go's xDS server and dial other services as xds:///<service>, both
// with xDS credentials (the control plane decides mTLS), register in
// Consul with a TTL check it keeps passing, and name its callers by the
// SPIFFE ID in their verified certificates.
//
// The example services (examples/service, examples/vitals) are separate
// programs; this is the part they share, so each of them reads as what it
// does rather than how it joins the mesh.
package meshapp
