package admin_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoControlPlane keeps the package small enough for any client
// (`medmesh status`, scripts, the status UI) to link: the standard
// library and api/wire only, no control plane and no Kubernetes.
func TestLinksNoControlPlane(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "medmesh/api/admin").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		first, _, _ := strings.Cut(dep, "/")
		switch {
		case dep == "medmesh/api/admin" || dep == "medmesh/api/wire":
		case first == "medmesh" || strings.Contains(first, "."):
			t.Errorf("api/admin links %s; it may link the standard library and api/wire only", dep)
		}
	}
}
