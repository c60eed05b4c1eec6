package admin

import (
	"encoding/json"
	"time"
)

// ConfigResponse is the body of GET /debug/config?node=ID: what one proxy
// was last sent, as Envoy's own JSON, with private keys redacted.
type ConfigResponse struct {
	Node string `json:"node"`
	// Resources are the resources by type URL, each as protojson, sorted
	// so that two dumps diff cleanly.
	Resources map[string][]json.RawMessage `json:"resources"`
	// Versions are the published versions by type URL.
	Versions map[string]string `json:"versions"`
	// Scope is what the proxy's service may call and why (Envoy sidecars
	// and proxyless clients); nil for other proxies.
	Scope *ScopeResponse `json:"scope,omitempty"`
}

// JoinTokenResponse is the body of POST /join-tokens: a one-time token
// that proves a new workload's identity on its first connection.
type JoinTokenResponse struct {
	Token     string    `json:"token"`
	Service   string    `json:"service"`
	Namespace string    `json:"namespace"`
	Expires   time.Time `json:"expires"`
}
