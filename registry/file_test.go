package registry_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"medmesh/registry"
)

func TestParseCatalogFileValid(t *testing.T) {
	data, err := os.ReadFile("testdata/catalog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cat, err := registry.ParseCatalogFile("testdata/catalog.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	want := &registry.Catalog{Services: []registry.Service{
		{
			Name: "emr", Namespace: "clinical", Kind: registry.KindEMR, Protocol: registry.ProtocolGRPC,
			PHI: false, LB: registry.LBLeastRequest, // phi: false overrides the emr default
			Instances: []registry.Instance{
				{ID: "emr-1", Node: "ward-a", Address: "10.1.0.11", Port: 9001, Health: registry.HealthPassing, Weight: 3,
					Locality: registry.Locality{Region: "north", Zone: "north-a", Site: "st-marys"}, AppPort: 9101},
				{ID: "emr-2", Address: "fd00::12", Port: 9001, Health: registry.HealthCritical, Weight: 1,
					Locality: registry.Locality{Region: "south"}},
			},
		},
		{
			Name: "vitals", Namespace: "default", Kind: registry.KindVitals, Protocol: registry.ProtocolHTTP,
			PHI: true, LB: registry.LBRoundRobin,
			Instances: []registry.Instance{
				{ID: "vitals-1", Address: "10.6.0.1", Port: 8070, Health: registry.HealthPassing, Weight: 1},
				{ID: "vitals-2", Address: "10.6.0.2", Port: 8070, Health: registry.HealthWarning, Weight: 1},
			},
		},
	}}
	// As in Consul, a service exists through its registrations: hl7-feed,
	// declared with no instances, is not in the catalog.
	if _, ok := cat.Service("hl7-feed"); ok {
		t.Error("a service with no instances is in the catalog")
	}
	if !reflect.DeepEqual(cat, want) {
		t.Errorf("catalog\n got %+v\nwant %+v", cat, want)
	}
}

// Every bad input names the file, the service (or its index when it has no
// name) and the field, so an operator at an edge site can fix it from the
// log line alone.
func TestParseCatalogFileErrors(t *testing.T) {
	const okInstance = "  - {id: emr-1, address: 10.0.0.1, port: 8080}\n"
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error besides the file name
	}{
		{"unknown top-level field", "servics: []\n", []string{`servics`}},
		{"unknown service field", "services:\n- name: emr\n  prot: grpc\n  instances:\n" + okInstance,
			[]string{`service "emr"`, `prot`}},
		{"unknown instance field", "services:\n- name: emr\n  instances:\n  - {id: emr-1, adress: 10.0.0.1, port: 8080}\n",
			[]string{`service "emr"`, `adress`}},
		{"unknown locality field", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 8080, locality: {room: 12}}\n",
			[]string{`service "emr"`, `room`}},
		{"port not a number", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: http}\n",
			[]string{`service "emr"`, `port`}},
		{"bad kind", "services:\n- name: emr\n  kind: dental\n  instances:\n" + okInstance,
			[]string{`service "emr"`, `kind`, `"dental"`}},
		{"bad protocol", "services:\n- name: emr\n  protocol: udp\n  instances:\n" + okInstance,
			[]string{`service "emr"`, `protocol`, `"udp"`}},
		{"bad lb", "services:\n- name: emr\n  lb: fastest\n  instances:\n" + okInstance,
			[]string{`service "emr"`, `lb`, `"fastest"`}},
		{"bad health", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 8080, health: sick}\n",
			[]string{`service "emr"`, `instances[0].health`, `"sick"`}},
		{"port zero", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 0}\n",
			[]string{`service "emr"`, `instances[0].port`}},
		{"port missing", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1}\n",
			[]string{`service "emr"`, `instances[0].port`}},
		{"port too large", "services:\n- name: emr\n  instances:\n" + okInstance + "  - {id: emr-2, address: 10.0.0.2, port: 65536}\n",
			[]string{`service "emr"`, `instances[1].port`, `65536`}},
		{"app port too large", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 8080, appPort: 70000}\n",
			[]string{`service "emr"`, `instances[0].appPort`, `70000`}},
		{"app port negative", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 8080, appPort: -1}\n",
			[]string{`service "emr"`, `instances[0].appPort`}},
		{"hostname instead of IP", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: emr.local, port: 8080}\n",
			[]string{`service "emr"`, `instances[0].address`, `"emr.local"`}},
		{"bad IP", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.256, port: 8080}\n",
			[]string{`service "emr"`, `instances[0].address`, `"10.0.0.256"`}},
		{"missing address", "services:\n- name: emr\n  instances:\n  - {id: emr-1, port: 8080}\n",
			[]string{`service "emr"`, `instances[0].address`}},
		{"negative weight", "services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 8080, weight: -1}\n",
			[]string{`service "emr"`, `instances[0].weight`}},
		{"missing instance id", "services:\n- name: emr\n  instances:\n  - {address: 10.0.0.1, port: 8080}\n",
			[]string{`service "emr"`, `instances[0].id`, `required`}},
		{"duplicate instance id across services",
			"services:\n- name: emr\n  instances:\n" + okInstance + "- name: his\n  instances:\n  - {id: emr-1, address: 10.0.0.2, port: 8090}\n",
			[]string{`service "his"`, `instances[0].id`, `duplicate`, `"emr-1"`}},
		{"duplicate service", "services:\n- name: emr\n  instances:\n" + okInstance + "- name: emr\n  instances: []\n",
			[]string{`service "emr"`, `name`, `duplicate`}},
		{"missing service name", "services:\n- name: emr\n  instances:\n" + okInstance + "- kind: his\n  instances: []\n",
			[]string{`services[1]`, `name`, `required`}},
		{"unknown field in an unnamed service", "services:\n- kind: his\n  instancs: []\n",
			[]string{`services[0]`, `instancs`}},
		{"not YAML", "services: [\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cat, err := registry.ParseCatalogFile("sites/st-marys.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted; catalog %+v", cat)
			}
			if cat != nil {
				t.Error("returned a catalog with the error; callers keep their last valid one")
			}
			msg := err.Error()
			for _, want := range append([]string{"sites/st-marys.yaml"}, tt.want...) {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %s", msg, want)
				}
			}
		})
	}
}

// All mistakes in a file are reported at once: an operator fixing an edge
// site over a slow link should not need one round trip per typo.
func TestParseCatalogFileReportsEveryError(t *testing.T) {
	_, err := registry.ParseCatalogFile("c.yaml", []byte(
		"services:\n- name: emr\n  kind: dental\n  instances: []\n- name: his\n  lb: fastest\n  instances: []\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`service "emr": kind`, `service "his": lb`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestParseCatalogFileEmpty(t *testing.T) {
	for _, in := range []string{"", "services: []\n"} {
		cat, err := registry.ParseCatalogFile("empty.yaml", []byte(in))
		if err != nil || len(cat.Services) != 0 {
			t.Errorf("%q: %v, %v", in, cat, err)
		}
	}
}

// The file source emits the catalog it reads at start and reports itself
// synced; /readyz depends on that.
func TestFileSourceEmitsCatalog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.yaml")
	data, err := os.ReadFile("testdata/catalog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f := &registry.File{Path: path, Interval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *registry.Catalog, 1)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, out) }()
	select {
	case cat := <-out:
		if len(cat.Services) != 2 {
			t.Errorf("catalog has %d services, want 2", len(cat.Services))
		}
	case <-time.After(10 * time.Second): // a bound for a hung test, not a wait
		t.Fatal("no catalog emitted")
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	if st := f.Status(); !st.Synced || st.Services != 2 || st.LastError != "" {
		t.Errorf("status %+v", st)
	}
	if f.Name() != "file:"+path {
		t.Errorf("Name() = %q", f.Name())
	}
}
