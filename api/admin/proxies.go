package admin

import (
	"time"

	"medmesh/api/wire"
)

// ProxiesResponse is the body of GET /debug/proxies: whether the control
// plane serves a configuration, where it came from, and every connected
// proxy's sync state.
type ProxiesResponse struct {
	// Ready is true once a configuration is being served (as /readyz).
	Ready bool `json:"ready"`
	// Source is the catalog source's own report (Consul or a file).
	Source SourceStatus `json:"source"`
	// Serving names where the served catalog came from: the source's
	// name, or "disk" when the last good catalog was restored at start.
	Serving string `json:"serving"`
	// Site is the edge site this control plane serves; empty for one
	// site. /debug/residency then says what crosses sites.
	Site     string `json:"site,omitempty"`
	Services int    `json:"services"`
	// Error is the last publish error; the previous configuration stays.
	Error    string   `json:"error,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// MTLS says whether every hop is mutual TLS.
	MTLS bool `json:"mtls"`
	// UnresolvedIntentions name services not registered (yet); the
	// intentions are kept and apply when the services appear.
	UnresolvedIntentions []string `json:"unresolvedIntentions,omitempty"`
	// Permissive lists the services that accept plaintext beside mTLS.
	Permissive []string `json:"permissive,omitempty"`
	// Proxies are the connected proxies, by ID; null when none is.
	Proxies []Proxy `json:"proxies"`
}

// SourceStatus is what the catalog source reports: whether it has a
// complete catalog and its last error, so an operator sees a registry
// outage while the mesh keeps its last good configuration.
type SourceStatus struct {
	// Synced is true once a complete catalog has been emitted.
	Synced      bool      `json:"synced"`
	Services    int       `json:"services"`
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	LastChange  time.Time `json:"lastChange,omitzero"`
	// HealthWatch is how a Consul source follows health: "per-service"
	// (a blocking query per service, on sites of up to 100 services) or
	// "all-checks" (one query on every check).
	HealthWatch string `json:"healthWatch,omitempty"`
	// Peers are the Consul cluster peerings other sites' services come
	// through; absent for a single site.
	Peers []Peer `json:"peers,omitempty"`
}

// Peer is one Consul cluster peering: another site, whether it is heard
// from, and what it exports to this one.
type Peer struct {
	Name string `json:"name"`
	// Site is the peer's site (its Consul datacenter).
	Site string `json:"site"`
	// State is Consul's: ACTIVE, FAILING, PENDING, ESTABLISHING, ...
	State       string    `json:"state"`
	LastReceive time.Time `json:"lastReceive,omitzero"`
	Imported    []string  `json:"imported,omitempty"`
	// Instances counts the imported instances served.
	Instances int `json:"instances"`
	// StaleSince is when the peering stopped being ACTIVE: its imports
	// are served as last heard of. Zero while active.
	StaleSince time.Time `json:"staleSince,omitzero"`
	// Withdrawn: stale for longer than the grace period; its imports are
	// no longer served.
	Withdrawn bool `json:"withdrawn,omitempty"`
}

// Proxy is one row of /debug/proxies and of the `medmesh status` table:
// one connected proxy (Envoy, proxyless gRPC client or SVID agent).
type Proxy struct {
	// ID is the xDS node ID.
	ID string `json:"id"`
	// Service is the node's cluster: the service it claims to be.
	Service string         `json:"service"`
	Kind    wire.ProxyKind `json:"kind"`
	// Peer is the proxy's address as the control plane sees it.
	Peer string `json:"peer,omitempty"`
	// Transport is the xDS variant its streams use: sotw, delta or both.
	Transport   string    `json:"transport"`
	ConnectedAt time.Time `json:"connectedAt"`
	// Types is the sync state per resource type (LDS, RDS, CDS, EDS, SDS).
	Types map[string]TypeStatus `json:"types"`
	// LastNACK is the proxy's latest rejection; nil if it never rejected.
	LastNACK *NACK `json:"lastNack,omitempty"`
	// NACKs counts every rejection since the proxy connected.
	NACKs int `json:"nacks"`
	// Published are the versions last published for the proxy, by type
	// URL; absent before the first publish.
	Published map[string]string `json:"published,omitempty"`
	// Identity is the SPIFFE ID the proxy holds, or why it has none
	// (proxyless clients read theirs from files: empty).
	Identity string `json:"identity,omitempty"`
	// TraceID is the OpenTelemetry trace (hex) of the last configuration
	// change the proxy ACKed in full: look it up in the trace backend to
	// see what triggered it and how long each step took. Empty when
	// tracing is off or no traced change reached the proxy yet.
	TraceID string `json:"traceId,omitempty"`
	// ServerListeners are the inbound listeners a proxyless server asked
	// for, named after the addresses it listens on.
	ServerListeners []string `json:"serverListeners,omitempty"`
	// Scope is how many services the proxy was sent (its service's
	// scope: /debug/scope?service= says which and why); absent for
	// proxies that are sent none (SVID agents) and before the first
	// publish.
	Scope *int `json:"scope,omitempty"`
	// Problems are what the proxy asked for and cannot have, one line
	// each naming the node (e.g. a gRPC server listening on a port no
	// instance is registered on, which then serves nothing).
	Problems []string `json:"problems,omitempty"`
}

// TypeStatus is the sync state of one resource type for one proxy: the
// proxy is in sync when Acked equals Sent.
type TypeStatus struct {
	Sent  string `json:"sent,omitempty"`
	Acked string `json:"acked,omitempty"`
	// AckedAt is when the proxy last ACKed this type (any version): how
	// stale "in sync" is. Zero before its first ACK.
	AckedAt time.Time `json:"ackedAt,omitzero"`
}

// InSync reports whether the proxy acknowledged the last version sent.
func (t TypeStatus) InSync() bool { return t.Acked == t.Sent }

// NACK is a rejection reported by a proxy: the proxy keeps its previous
// configuration of that type, so an operator needs the version and the
// proxy's reason.
type NACK struct {
	TypeURL string    `json:"typeUrl"`
	Version string    `json:"version"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}
