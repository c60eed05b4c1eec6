// Package admin is the JSON of the control plane's admin API: the bodies
// of /debug/proxies, /debug/policies, /debug/config and POST /join-tokens,
// which `medmesh status`, scripts and the status UI read.
//
// The types are plain structs owned by this package, not the control
// plane's internal ones: the control plane converts its state into them,
// so the xDS cache, the registry sources and the policy resolver can
// change without changing what clients see, and a client links this small
// package (and api/wire) instead of the whole control plane. A field's
// JSON name or omitempty changes only deliberately, with the golden test
// in controlplane (TestAdminJSONGolden) and every client.
//
// It imports nothing of medmesh but api/wire, and nothing of Kubernetes:
// Condition mirrors metav1.Condition's JSON.
package admin
