package admin

import "time"

// ResidencyResponse is the body of /debug/residency: at an edge site,
// which other sites' services this site's proxies are sent, which calls
// the residency policy refuses and why, and the policy in force.
type ResidencyResponse struct {
	// Site is the site this control plane serves; empty for a single
	// site (nothing crosses sites then).
	Site   string          `json:"site"`
	Policy ResidencyPolicy `json:"policy"`
	// Decisions: per service and other site where it has instances.
	Decisions []SiteDecision `json:"decisions"`
	// Conditions name services that can be served neither here nor at
	// another site: calls to them fail here rather than leave the site.
	Conditions []ResidencyCondition `json:"conditions,omitempty"`
}

// ResidencyPolicy is the Rego policy in force.
type ResidencyPolicy struct {
	// Name is its file, or the built-in default's name.
	Name   string `json:"name"`
	Digest string `json:"digest"`
	// LastError is the last edit that did not compile (file:line); the
	// policy above stayed in force.
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	// Evaluations counts flows the policy evaluated (others came from
	// its memo); Failures those that failed and so were denied.
	Evaluations uint64 `json:"evaluations"`
	Failures    uint64 `json:"failures"`
}

// SiteDecision is what this site does with one service's instances at
// one other site.
type SiteDecision struct {
	Service string `json:"service"`
	Site    string `json:"site"`
	PHI     bool   `json:"phi"`
	// Routed: this site's proxies are sent those instances (every local
	// caller's call is allowed).
	Routed    bool         `json:"routed"`
	Instances int          `json:"instances"`
	Denied    []DeniedCall `json:"denied,omitempty"`
}

// DeniedCall is one local caller the policy refuses, with its reasons.
type DeniedCall struct {
	Source  string   `json:"source"`
	Reasons []string `json:"reasons,omitempty"`
}

// ResidencyCondition is a service that may not be served here.
type ResidencyCondition struct {
	Service string   `json:"service"`
	Sites   []string `json:"sites"`
	Message string   `json:"message"`
}
