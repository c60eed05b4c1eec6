// Package v1alpha1 holds medmesh's policy API (group policy.medmesh.io):
// MeshRoute (how calls to a service are routed), MeshDestination (how a
// service's instances are balanced and protected) and MeshAccess (who may
// call what). The same types are read from YAML files (`medmesh
// controlplane --policies DIR`) and from the Kubernetes API (`--kubeconfig`).
//
// The schema markers here catch what a schema can (types, ranges, enums,
// patterns); controlplane/policy checks the rest (regexes compile, weights
// do not sum to zero, services exist) and reports it in status conditions.
//
// Regenerate deepcopy code and deploy/crds with `make crds`.
//
// +kubebuilder:object:generate=true
// +groupName=policy.medmesh.io
package v1alpha1
