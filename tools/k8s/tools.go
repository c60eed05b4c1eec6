//go:build tools

// Package tools pins the Kubernetes API server that envtest runs in
// medmesh's tests; `make tools` builds it into bin/k8s.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
