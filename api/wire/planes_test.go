package wire_test

import (
	"bytes"
	"encoding/json"
	"go/parser"
	"go/token"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// pkg is what `go list -json` says of one package of the module.
type pkg struct {
	ImportPath   string
	Dir          string
	Deps         []string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func listModule(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Dir,Deps,Imports,TestImports,XTestImports", "medmesh/...")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	for dec := json.NewDecoder(&out); dec.More(); {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func under(path, tree string) bool { return path == tree || strings.HasPrefix(path, tree+"/") }

// TestPlanesIndependent keeps the control plane and the data plane apart:
// what they must agree on lives in api/wire, so neither links the other,
// the examples (stand-ins for hospital services) link no control plane
// internals, and library tests do not lean on example code.
func TestPlanesIndependent(t *testing.T) {
	pkgs := listModule(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	for _, p := range pkgs {
		// Everything the package links, and what its tests import.
		linked := append(append(append([]string{}, p.Deps...), p.TestImports...), p.XTestImports...)
		for _, dep := range linked {
			switch {
			case under(p.ImportPath, "medmesh/controlplane") && under(dep, "medmesh/sidecar"):
				t.Errorf("%s links %s: the control plane must not depend on the data plane (use api/wire)", p.ImportPath, dep)
			case under(p.ImportPath, "medmesh/sidecar") && under(dep, "medmesh/controlplane"):
				t.Errorf("%s links %s: the data plane must not depend on the control plane (use api/wire)", p.ImportPath, dep)
			case under(p.ImportPath, "medmesh/examples") && under(dep, "medmesh/controlplane") && dep != "medmesh/controlplane/bootstrap":
				// bootstrap is the library a service uses to write its
				// own xDS bootstrap; nothing else there is for services.
				t.Errorf("%s links %s: examples use api/wire and controlplane/bootstrap only", p.ImportPath, dep)
			case isLibrary(p.ImportPath) && under(dep, "medmesh/examples"):
				t.Errorf("%s imports %s: a library's tests must not depend on example code", p.ImportPath, dep)
			}
		}
	}
}

// isLibrary: packages others build on, as opposed to programs, examples,
// benchmarks and the end-to-end tests.
func isLibrary(path string) bool {
	for _, not := range []string{"medmesh/examples", "medmesh/bench", "medmesh/cmd", "medmesh/integration"} {
		if under(path, not) {
			return false
		}
	}
	return true
}

// TestStatusLinksAdminTypesOnly: `medmesh status` is a client of the admin
// API; it reads the JSON through api/admin and never the control plane's
// own types.
func TestStatusLinksAdminTypesOnly(t *testing.T) {
	var dir string
	for _, p := range listModule(t) {
		if p.ImportPath == "medmesh/cmd/medmesh" {
			dir = p.Dir
		}
	}
	if dir == "" {
		t.Fatal("medmesh/cmd/medmesh not found")
	}
	for _, file := range []string{"status.go", "status_policies.go", "status_residency.go"} {
		f, err := parser.ParseFile(token.NewFileSet(), dir+"/"+file, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "medmesh/") && path != "medmesh/api/admin" && path != "medmesh/api/wire" {
				t.Errorf("cmd/medmesh/%s imports %s; status reads the admin API through medmesh/api/admin only", file, path)
			}
		}
	}
}
