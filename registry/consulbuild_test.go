package registry

import (
	"encoding/json"
	"testing"
)

// serviceBuilds must give exactly what BuildCatalog gives over every
// instance, local and imported, whatever changed between builds, and
// rebuild only what it was told changed.
func TestServiceBuildsMatchBuildCatalog(t *testing.T) {
	inst := func(svc, id string, health Health, meta map[string]string) RawInstance {
		return RawInstance{ServiceName: svc, ID: id, Node: "n-" + id, Address: "10.0.0.1", Port: 80, Health: health, Weight: 1, ServiceMeta: meta}
	}
	local := map[string][]RawInstance{
		"emr": {inst("emr", "emr-2", HealthPassing, map[string]string{"medmesh-phi": "true"}), inst("emr", "emr-1", HealthPassing, map[string]string{"medmesh-phi": "true"})},
		"his": {inst("his", "his-1", HealthPassing, map[string]string{"medmesh-protocol": "http"})},
		// Disagreeing meta within a service: a warning, kept across builds.
		"lab":  {inst("lab", "lab-1", HealthPassing, map[string]string{"medmesh-protocol": "grpc"}), inst("lab", "lab-2", HealthPassing, map[string]string{"medmesh-protocol": "http"})},
		"gone": nil, // listed once, no instances now
	}
	var imported []RawInstance
	b := newServiceBuilds()
	check := func(step string) {
		t.Helper()
		got, gotWarns := b.build(local, imported)
		var all []RawInstance
		all = append(all, imported...)
		for _, in := range local {
			all = append(all, in...)
		}
		want, wantWarns := BuildCatalog(all)
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if string(g) != string(w) {
			t.Fatalf("%s: built\n%s\nwant\n%s", step, g, w)
		}
		if len(gotWarns) != len(wantWarns) {
			t.Fatalf("%s: %d warnings, want %d", step, len(gotWarns), len(wantWarns))
		}
	}
	check("first build")
	check("nothing changed")

	local["emr"] = []RawInstance{inst("emr", "emr-1", HealthCritical, map[string]string{"medmesh-phi": "true"}), local["emr"][0]}
	b.touch("emr")
	check("one instance's health")

	// A change the builder is not told of is not seen: the source must
	// touch every service it changes (this is what makes it cheap).
	before, _ := b.build(local, imported)
	local["his"] = []RawInstance{inst("his", "his-1", HealthCritical, nil)}
	after, _ := b.build(local, imported)
	if health(after, "his") != HealthPassing || health(before, "his") != HealthPassing {
		t.Fatal("a service not touched was rebuilt")
	}
	b.touch("his")
	check("the touched service")

	imported = []RawInstance{{ServiceName: "emr", ID: "emr-9", Node: "far", Address: "10.9.0.1", Port: 80, Health: HealthPassing, Peer: "hub", PeerSite: "hub"},
		{ServiceName: "pacs", ID: "pacs-1", Node: "far", Address: "10.9.0.2", Port: 80, Health: HealthPassing, Peer: "hub", PeerSite: "hub"}}
	b.touchAll()
	check("imports: a local service's and an imported-only one")

	delete(local, "lab")
	b.touch("lab")
	check("a service gone")

	imported = nil
	b.touchAll()
	check("imports withdrawn")
}

// health is the first instance's health of a service in a catalog.
func health(c *Catalog, service string) Health {
	for _, s := range c.Services {
		if s.Name == service {
			return s.Instances[0].Health
		}
	}
	return ""
}
