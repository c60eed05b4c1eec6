//go:build tools

// Package tools pins controller-gen, which generates medmesh's CRD
// manifests and deepcopy code from api/v1alpha1. It is a separate module
// so the main go.mod does not carry controller-tools' dependencies.
package tools

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
