package admin

// ScopeResponse is the body of GET /debug/scope?service=S, and the
// "scope" of /debug/config: which services the proxies of a service are
// sent, and why each service of the mesh is in or out. Configuration is
// scoped by authorization: a PHI service is sent only to callers an
// intention or MeshAccess allows; a default-allow (non-PHI) service to
// every caller, unless the caller's meta says medmesh-scope=explicit.
type ScopeResponse struct {
	Service string `json:"service"`
	// Explicit: the service narrowed its scope (medmesh-scope=explicit).
	Explicit bool `json:"explicit,omitempty"`
	// Services counts the mesh's services.
	Services int          `json:"services"`
	Included []ScopeEntry `json:"included"`
	Excluded []ScopeEntry `json:"excluded,omitempty"`
}

// ScopeEntry is one service and the reason it is in or out of a scope.
type ScopeEntry struct {
	Service string `json:"service"`
	Reason  string `json:"reason"`
}
