package admin

import "time"

// UIStatus is the body of GET /ui/api/status: everything the status page
// shows, in one read so that one refresh is one consistent picture. The
// proxies, policies and residency parts are the /debug endpoints' own
// bodies.
type UIStatus struct {
	// Now is the control plane's clock: ages on the page are counted
	// from it, not from the browser's.
	Now       time.Time          `json:"now"`
	Proxies   ProxiesResponse    `json:"proxies"`
	Policies  PoliciesResponse   `json:"policies"`
	Residency ResidencyResponse  `json:"residency"`
	Services  []ServiceStatus    `json:"services"`
	Identity  []IdentityStatus   `json:"identities"`
	Changes   []Change           `json:"changes"`
	Traces    TraceBackendStatus `json:"traces"`
}

// ServiceStatus is one service of the catalog being served, with the
// health of each instance.
type ServiceStatus struct {
	Name      string           `json:"name"`
	Namespace string           `json:"namespace"`
	Kind      string           `json:"kind"`
	Protocol  string           `json:"protocol"`
	PHI       bool             `json:"phi"`
	Instances []InstanceStatus `json:"instances"`
}

// InstanceStatus is one registered instance: passing and warning ones
// are sent to proxies, critical ones are not.
type InstanceStatus struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	Health  string `json:"health"`
	// Site is the instance's site (locality); Peer the Consul peering it
	// was imported through, empty for this site's own.
	Site string `json:"site,omitempty"`
	Peer string `json:"peer,omitempty"`
}

// IdentityStatus is one connected proxy's identity.
type IdentityStatus struct {
	Proxy string `json:"proxy"`
	// Identity is the SPIFFE ID held, or why there is none.
	Identity string `json:"identity"`
	// IssuedAt and NotAfter bound the SVID held; absent without one.
	IssuedAt time.Time `json:"issuedAt,omitzero"`
	NotAfter time.Time `json:"notAfter,omitzero"`
}

// Change is one round of the control loop that changed what proxies
// hold (or failed to): the page lists the recent ones, newest first.
type Change struct {
	// TraceID is the round's trace (hex); empty when tracing is off.
	TraceID string `json:"traceId,omitempty"`
	// Trigger says what started the round: catalog, policy, proxies, ...
	Trigger []string  `json:"trigger"`
	At      time.Time `json:"at"`
	// DurationMS is how long the round took to publish (not to be ACKed).
	DurationMS float64 `json:"durationMs"`
	// Rebuilt: the mesh was built anew (an input changed), not only
	// proxies connecting or leaving.
	Rebuilt bool `json:"rebuilt"`
	// Pushed are the proxies sent a new configuration, by ID.
	Pushed []string `json:"pushed"`
	// Error is why the round did not publish everything.
	Error string `json:"error,omitempty"`
}

// TraceBackendStatus says where the page reads traces from.
type TraceBackendStatus struct {
	// Query is set when a trace query API is configured
	// (--trace-query-url); traces open on the page only then.
	Query bool `json:"query"`
	// UIURL is the trace backend's own UI, for links out; empty when not
	// configured.
	UIURL string `json:"uiUrl,omitempty"`
}

// Waterfall is the body of GET /ui/api/traces/{id}: one trace read from
// the trace backend, as rows to draw.
type Waterfall struct {
	TraceID string `json:"traceId"`
	// Start is the earliest span's start; every offset counts from it.
	Start      time.Time `json:"start"`
	DurationUS int64     `json:"durationUs"`
	// Services are the programs that made the spans (caller, extension,
	// callee, control plane).
	Services []string `json:"services"`
	// Spans in drawing order: a configuration change's own spans in tree
	// order, then every proxy push slowest first; any other trace in
	// tree order.
	Spans []WaterfallSpan `json:"spans"`
	// UIURL links the trace in the backend's own UI, when configured.
	UIURL string `json:"uiUrl,omitempty"`
}

// WaterfallSpan is one span of a Waterfall.
type WaterfallSpan struct {
	SpanID   string `json:"spanId"`
	ParentID string `json:"parentId,omitempty"`
	Name     string `json:"name"`
	Service  string `json:"service"`
	// Kind is the span kind (client, server, producer, internal, ...).
	Kind       string `json:"kind,omitempty"`
	Depth      int    `json:"depth"`
	OffsetUS   int64  `json:"offsetUs"`
	DurationUS int64  `json:"durationUs"`
	// Error: the span's status is an error (a NACK, a failed step).
	Error bool `json:"error,omitempty"`
	// Proxy, Outcome and NACK are set on pushes: which proxy, how its
	// push ended (ack, nack, ...) and the proxy's reason for a NACK.
	Proxy   string `json:"proxy,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	NACK    string `json:"nack,omitempty"`
	// Detail is one line of the span's other notable attributes.
	Detail string           `json:"detail,omitempty"`
	Events []WaterfallEvent `json:"events,omitempty"`
}

// WaterfallEvent is a span event: an ACK of one type on a push, or, on
// the one summary span of a round beyond the per-proxy span limit, one
// proxy's answer (those are listed slowest first).
type WaterfallEvent struct {
	Name     string `json:"name"`
	OffsetUS int64  `json:"offsetUs"`
	Proxy    string `json:"proxy,omitempty"`
	Outcome  string `json:"outcome,omitempty"`
	NACK     string `json:"nack,omitempty"`
	Detail   string `json:"detail,omitempty"`
}
