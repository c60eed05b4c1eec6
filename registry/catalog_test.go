package registry_test

import (
	"encoding/hex"
	"os"
	"testing"

	"medmesh/registry"
)

// The catalog hash decides whether the control plane recomputes and pushes
// anything, and is compared with the last-known-good catalog on disk after
// a restart: equal content must hash equal whatever the source and order,
// and any change a proxy would see must change it.
func TestCatalogHash(t *testing.T) {
	data, err := os.ReadFile("testdata/catalog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := registry.ParseCatalogFile("testdata/catalog.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	h := fromFile.Hash()
	if b, err := hex.DecodeString(h); err != nil || len(b) != 8 {
		t.Errorf("hash %q: want 16 hex digits", h)
	}
	if again := fromFile.Hash(); again != h {
		t.Errorf("hash changed between calls: %s then %s", h, again)
	}

	// The same catalog as Consul would report it: meta keys instead of
	// file fields, listed in another order.
	meta := map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc", "medmesh-lb": "least_request",
		"medmesh-phi": "false", "medmesh-namespace": "clinical"}
	withLoc := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	fromConsul, warns := registry.BuildCatalog([]registry.RawInstance{
		{ServiceName: "vitals", ID: "vitals-2", Address: "10.6.0.2", Port: 8070, Health: registry.HealthWarning,
			ServiceMeta: map[string]string{"medmesh-kind": "vitals"}},
		{ServiceName: "emr", ID: "emr-2", Address: "fd00::12", Port: 9001, Health: registry.HealthCritical,
			ServiceMeta: meta, NodeMeta: map[string]string{"medmesh-region": "south"}},
		{ServiceName: "vitals", ID: "vitals-1", Address: "10.6.0.1", Port: 8070, Health: registry.HealthPassing,
			ServiceMeta: map[string]string{"medmesh-kind": "vitals"}},
		{ServiceName: "emr", ID: "emr-1", Node: "ward-a", Address: "10.1.0.11", Port: 9001, Health: registry.HealthPassing,
			Weight: 3, ServiceMeta: withLoc(meta, "medmesh-app-port", "9101", "medmesh-zone", "north-a"),
			NodeMeta: map[string]string{"medmesh-region": "north", "medmesh-zone": "ignored", "medmesh-site": "st-marys"}},
	})
	if len(warns) != 0 {
		t.Fatalf("warnings %v", warns)
	}
	if got := fromConsul.Hash(); got != h {
		t.Errorf("same catalog from Consul hashes %s, from the file %s", got, h)
	}

	changes := map[string]func(c *registry.Catalog){
		"health":   func(c *registry.Catalog) { c.Services[0].Instances[0].Health = registry.HealthWarning },
		"weight":   func(c *registry.Catalog) { c.Services[0].Instances[0].Weight = 4 },
		"address":  func(c *registry.Catalog) { c.Services[0].Instances[0].Address = "10.1.0.99" },
		"locality": func(c *registry.Catalog) { c.Services[0].Instances[0].Locality.Site = "riverside" },
		"lb":       func(c *registry.Catalog) { c.Services[0].LB = registry.LBRingHash },
		"phi":      func(c *registry.Catalog) { c.Services[0].PHI = true },
		"instance": func(c *registry.Catalog) { c.Services[1].Instances = c.Services[1].Instances[:1] },
	}
	for what, change := range changes {
		c, err := registry.ParseCatalogFile("testdata/catalog.yaml", data)
		if err != nil {
			t.Fatal(err)
		}
		change(c)
		if c.Hash() == h {
			t.Errorf("changing the %s left the hash unchanged", what)
		}
	}
}
