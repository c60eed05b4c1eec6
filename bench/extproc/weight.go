//go:build medmeshweight

package main

// Linked only into the weighted floor (weighted.go): the packages
// cmd/medmesh imports, so that the do-nothing ext_proc server runs in a
// binary of medmesh's size. The bench prints both binaries' machine-code
// size, which shows if this list falls behind.
import (
	_ "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/tools/clientcmd"
	_ "sigs.k8s.io/controller-runtime/pkg/log"

	_ "medmesh/api/admin"
	_ "medmesh/certs"
	_ "medmesh/controlplane"
	_ "medmesh/controlplane/adminauth"
	_ "medmesh/controlplane/attest"
	_ "medmesh/controlplane/bootstrap"
	_ "medmesh/controlplane/identity"
	_ "medmesh/controlplane/inject"
	_ "medmesh/controlplane/ir"
	_ "medmesh/controlplane/policy"
	_ "medmesh/controlplane/residency"
	_ "medmesh/internal/telemetry"
	_ "medmesh/registry"
	_ "medmesh/sidecar/consulreg"
	_ "medmesh/sidecar/run"
)
