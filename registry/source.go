package registry

import (
	"context"
	"time"
)

// Source is a registry of services: Consul (Consul) or a catalog file
// (File). The control plane runs one.
type Source interface {
	Name() string
	// Run sends complete catalogs on out ("latest wins": a slow reader
	// gets the newest, see internal/latest) until ctx ends. The first
	// catalog goes out once everything has been read once.
	Run(ctx context.Context, out chan *Catalog) error
	Status() SourceStatus
}

// SourceStatus is what a source reports to /readyz and the status page.
type SourceStatus struct {
	// Synced is true once a complete catalog has been emitted.
	Synced      bool      `json:"synced"`
	Services    int       `json:"services"`
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	LastChange  time.Time `json:"lastChange,omitzero"`
	// HealthWatch is how a Consul source follows health: "per-service"
	// (a blocking query per service) or "all-checks" (one on every
	// check), decided by the number of services (ConsulOptions.
	// ServiceWatches).
	HealthWatch string `json:"healthWatch,omitempty"`
	// Peers are the Consul cluster peerings other sites' services come
	// through (Consul sources only).
	Peers []PeerStatus `json:"peers,omitempty"`
}
