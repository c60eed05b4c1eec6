package v1alpha1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedUpToDate regenerates the CRDs and deepcopy code into a
// scratch copy and fails if they differ from what is committed: a changed
// marker without `make crds` would ship a schema that disagrees with the
// Go types. controller-gen is built from the module cache only
// (GOPROXY=off); without the cached module the test is skipped.
func TestGeneratedUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds controller-gen")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	gen := filepath.Join(tmp, "controller-gen")
	build := exec.Command("go", "build", "-o", gen, "sigs.k8s.io/controller-tools/cmd/controller-gen")
	build.Dir = filepath.Join(root, "tools", "controller-gen")
	build.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build controller-gen offline (run `make crds` once): %v\n%s", err, out)
	}

	// A scratch module holding a copy of the API package, so generation
	// never writes into the checkout.
	mod := filepath.Join(tmp, "mod")
	api := filepath.Join(mod, "api", "v1alpha1")
	if err := os.MkdirAll(api, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(mod, f))
	}
	srcs, _ := filepath.Glob(filepath.Join(root, "api", "v1alpha1", "*.go"))
	for _, f := range srcs {
		if filepath.Base(f) == "zz_generated.deepcopy.go" || filepath.Ext(filepath.Base(f)) != ".go" ||
			bytes.HasSuffix([]byte(f), []byte("_test.go")) {
			continue
		}
		copyFile(t, f, filepath.Join(api, filepath.Base(f)))
	}
	crds := filepath.Join(tmp, "crds")
	run := exec.Command(gen, "object", "paths=./api/...", "crd:crdVersions=v1", "output:crd:artifacts:config="+crds)
	run.Dir = mod
	run.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod")
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, out)
	}

	compare(t, filepath.Join(api, "zz_generated.deepcopy.go"), filepath.Join(root, "api", "v1alpha1", "zz_generated.deepcopy.go"))
	want, _ := filepath.Glob(filepath.Join(crds, "*.yaml"))
	have, _ := filepath.Glob(filepath.Join(root, "deploy", "crds", "*.yaml"))
	if len(want) == 0 || len(want) != len(have) {
		t.Fatalf("controller-gen made %d CRDs, deploy/crds holds %d; run make crds", len(want), len(have))
	}
	for _, f := range want {
		compare(t, f, filepath.Join(root, "deploy", "crds", filepath.Base(f)))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func compare(t *testing.T, generated, committed string) {
	t.Helper()
	g, err := os.ReadFile(generated)
	if err != nil {
		t.Fatal(err)
	}
	c, err := os.ReadFile(committed)
	if err != nil {
		t.Fatalf("%v; run make crds", err)
	}
	if !bytes.Equal(g, c) {
		t.Errorf("%s is stale; run make crds", committed)
	}
}
