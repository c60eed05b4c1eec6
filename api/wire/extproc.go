package wire

import "time"

// The PHI extension (`medmesh sidecar`) beside every Envoy sidecar: what
// the Envoy filter the control plane writes and the extension that
// answers it must agree on.
const (
	// ExtProcAttrNamespace is where Envoy puts the request attributes it
	// sends to the extension.
	ExtProcAttrNamespace = "envoy.filters.http.ext_proc"
	// ExtProcAttrPeerURI is the caller's SPIFFE ID (its URI SAN); it caps
	// the caller's priority and goes in the audit trail.
	ExtProcAttrPeerURI = "connection.uri_san_peer_certificate"
	// ExtProcAttrSource is the caller's address, for the audit trail.
	ExtProcAttrSource = "source.address"

	// MetadataNamespace is the dynamic metadata namespace in which the
	// extension puts its tags (keys MetadataPHI, MetadataPriority,
	// MetadataClass); access logs read them as
	// %DYNAMIC_METADATA(medmesh:priority)%.
	MetadataNamespace = "medmesh"
	MetadataPHI       = "phi"
	MetadataPriority  = "priority"
	MetadataClass     = "class"
)

// The extension's scheduler limits at its defaults (sidecar/sched), which
// the control plane sizes Envoy's side of the ext_proc stream from.
// sched's tests fail when its defaults and these drift apart.
const (
	// SchedulerLongestWait is the longest the scheduler holds a request
	// before admitting or refusing it (the critical queue's maximum wait).
	SchedulerLongestWait = 10 * time.Second
	// SchedulerMaxOutstanding is the most requests one upstream can hold,
	// admitted plus queued (the limit plus every priority's queue bound).
	SchedulerMaxOutstanding = 64 + 4096 + 1024 + 512 + 256 + 128
)

// ExtProcMessageTimeout bounds how long Envoy waits for the extension's
// answer to one message. It must exceed the longest queue wait: a
// request admitted (or shed with a 503) at the last moment must not be
// turned into an ext_proc timeout instead. The margin covers the
// classification itself and a loaded machine.
const ExtProcMessageTimeout = SchedulerLongestWait + 2*time.Second

// ExtProcMaxStreams is the ext_proc cluster's circuit breaker. Envoy
// opens one gRPC stream per request and holds it while the request is
// queued, so it must admit every request the scheduler can hold, with
// room to spare: Envoy's default of 1,024 would turn a full queue into
// ext_proc failures (503s for PHI services) before the scheduler could
// choose who waits.
const ExtProcMaxStreams = 2 * SchedulerMaxOutstanding
