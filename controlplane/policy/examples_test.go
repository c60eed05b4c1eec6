package policy_test

import (
	"os"
	"path/filepath"
	"testing"

	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/registry"
)

// TestExamplesAccepted: every example in examples/policies decodes
// strictly and is accepted against the example catalog, so the README's
// examples never rot.
func TestExamplesAccepted(t *testing.T) {
	root := filepath.Join("..", "..", "examples", "policies")
	catData, err := os.ReadFile(filepath.Join(root, "catalog", "catalog.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := registry.ParseCatalogFile("catalog.yaml", catData)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "*.yaml"))
	if len(files) < 5 {
		t.Fatalf("only %d example files", len(files))
	}
	all := &policy.Set{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		set, err := policy.ParseSet(f, data)
		if err != nil {
			t.Fatal(err)
		}
		all.Routes = append(all.Routes, set.Routes...)
		all.Destinations = append(all.Destinations, set.Destinations...)
		all.Access = append(all.Access, set.Access...)
	}
	res := policy.Resolve(all, policy.Options{Catalog: cat, Defaults: ir.DefaultDefaults(), Now: now})
	kinds := map[string]int{}
	for _, s := range res.Statuses {
		kinds[s.Kind]++
		if !s.Accepted() {
			t.Errorf("%s (%s) not accepted: %s", s.Key, s.Source, s.Message())
		}
	}
	if kinds["MeshRoute"] == 0 || kinds["MeshDestination"] == 0 || kinds["MeshAccess"] == 0 {
		t.Fatalf("examples by kind %v: want every kind", kinds)
	}
	ir.Build(ir.Inputs{Catalog: cat, Policies: res.Policies, Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local"})
}
