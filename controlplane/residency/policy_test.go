package residency

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func flow(srcSite, dstSite string, phi bool, kind string) Flow {
	return Flow{
		Source:      Source{Service: "vitals", Namespace: "default", Site: srcSite},
		Destination: Destination{Service: kind + "-svc", Namespace: "default", Site: dstSite, PHI: phi, Kind: kind},
	}
}

func decideOne(t *testing.T, p *Policy, f Flow) Decision {
	t.Helper()
	d, err := p.decide(context.Background(), f.astInput(f.Source.term()))
	if err != nil {
		t.Fatalf("%+v: %v", f, err)
	}
	return d
}

func mustParse(t *testing.T, name, src string) *Policy {
	t.Helper()
	p, err := Parse(name, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The default keeps PHI on its site and lets everything else cross.
func TestDefaultPolicy(t *testing.T) {
	p := Default()
	for _, tc := range []struct {
		name  string
		flow  Flow
		allow bool
	}{
		{"PHI within the site", flow("site-a", "site-a", true, "emr"), true},
		{"PHI to the hub", flow("site-a", "hub", true, "emr"), false},
		{"PHI from the hub to an edge site", flow("hub", "site-a", true, "vitals"), false},
		{"PHI imaging to the hub", flow("site-a", "hub", true, "imaging"), false},
		{"non-PHI to another site", flow("site-a", "site-b", false, "webrtc"), true},
		{"non-PHI within the site", flow("site-a", "site-a", false, "generic"), true},
		{"single site (no site names)", flow("", "", true, "emr"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decideOne(t, p, tc.flow)
			if d.Allowed != tc.allow {
				t.Fatalf("allowed = %v, want %v (reasons %q)", d.Allowed, tc.allow, d.Reasons)
			}
			if tc.allow && len(d.Reasons) != 0 {
				t.Errorf("allowed with reasons %q", d.Reasons)
			}
			if !tc.allow && (len(d.Reasons) != 1 || !strings.Contains(d.Reasons[0], "does not leave its site")) {
				t.Errorf("reasons %q, want the default's message", d.Reasons)
			}
		})
	}
}

// The hospital's own rule, written as a plain `deny if`.
func TestPlainDenyRule(t *testing.T) {
	p := mustParse(t, "hospital.rego", `package medmesh.residency

deny if {
	input.action == "data_transfer"
	input.destination.site != input.source.site
}
`)
	if d := decideOne(t, p, flow("site-a", "hub", true, "emr")); d.Allowed ||
		!reflect.DeepEqual(d.Reasons, []string{"denied by residency policy hospital.rego"}) {
		t.Errorf("PHI to the hub: %+v", d)
	}
	if d := decideOne(t, p, flow("site-a", "hub", false, "generic")); !d.Allowed {
		t.Errorf("non-PHI to the hub: %+v", d)
	}
}

const imagingToHub = `package medmesh.residency

# Imaging studies may go to the hub's archive; every other PHI flow stays local.
deny contains msg if {
	input.action == "data_transfer"
	input.destination.site != input.source.site
	not imaging_to_hub
	msg := sprintf("%s at %s holds PHI", [input.destination.service, input.destination.site])
}

imaging_to_hub if {
	input.destination.kind == "imaging"
	input.destination.site == "hub"
}
`

func TestCustomPolicyImagingToHub(t *testing.T) {
	p := mustParse(t, "imaging.rego", imagingToHub)
	for _, tc := range []struct {
		name  string
		flow  Flow
		allow bool
	}{
		{"imaging to the hub", flow("site-a", "hub", true, "imaging"), true},
		{"imaging to another edge site", flow("site-a", "site-b", true, "imaging"), false},
		{"EMR to the hub", flow("site-a", "hub", true, "emr"), false},
		{"local EMR", flow("site-a", "site-a", true, "emr"), true},
		{"non-PHI across", flow("site-a", "site-b", false, "generic"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := decideOne(t, p, tc.flow); d.Allowed != tc.allow {
				t.Fatalf("allowed = %v, want %v (reasons %q)", d.Allowed, tc.allow, d.Reasons)
			}
		})
	}
	d := decideOne(t, p, flow("site-a", "hub", true, "emr"))
	if want := []string{"emr-svc at hub holds PHI"}; !reflect.DeepEqual(d.Reasons, want) {
		t.Errorf("reasons %q, want %q", d.Reasons, want)
	}
}

// Every refusal names the file and, where OPA knows it, the line.
func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      string
	}{
		{"syntax error", "package medmesh.residency\n\ndeny if {\n\tinput.action ==\n", "bad.rego:5: rego_parse_error"},
		{"unsafe variable", "package medmesh.residency\n\ndeny if {\n\tx == input.action\n}\n", "bad.rego:4: rego_unsafe_var_error: var x is unsafe"},
		{"pre-v1 syntax", "package medmesh.residency\n\ndeny[msg] {\n\tmsg := \"x\"\n}\n", "bad.rego:3: rego_parse_error"},
		{"deny is a number", "package medmesh.residency\n\ndeny := 3\n", "bad.rego:3: deny is number; want true"},
		{"deny is a string", "package medmesh.residency\n\ndeny := \"no\" if input.destination.phi\n", "bad.rego:3: deny is string"},
		{"wrong package", "package medmesh.resdency\n\ndeny if true\n", "bad.rego:1: package medmesh.resdency; want package medmesh.residency"},
		{"no deny rule", "package medmesh.residency\n\nallow if true\n", "bad.rego: no deny rule"},
		{"empty", "", "bad.rego"},
		{"nondeterministic builtin", "package medmesh.residency\n\ndeny if {\n\ttime.now_ns() > 0\n}\n", "bad.rego:4: rego_type_error: undefined function time.now_ns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.rego", []byte(tc.src))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "residency.rego")
	if _, err := Load(path); !errors.Is(err, ErrPolicy) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("package medmesh.residency\n\ndeny if {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+":4: rego_parse_error") {
		t.Errorf("broken file: %v", err)
	}
	if err := os.WriteFile(path, []byte(imagingToHub), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != path || p.Source() != imagingToHub || len(p.Digest()) != 12 {
		t.Errorf("name %q digest %q", p.Name(), p.Digest())
	}
}

// A deny whose type only evaluation reveals, and a builtin that fails,
// deny the flow with the error: never allow by accident.
func TestRuntimeErrorsFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      string
	}{
		{"builtin error", "package medmesh.residency\n\ndeny if {\n\tto_number(input.destination.site) > 0\n}\n",
			"rt.rego:4: eval_builtin_error: to_number"},
		{"deny of the wrong type", "package medmesh.residency\n\ndeny := input.destination.kind\n",
			`rt.rego: deny is string "emr"; want true or a set of reasons`},
		{"conflicting values", "package medmesh.residency\n\ndeny := true if input.destination.phi\n\ndeny := false if input.destination.kind == \"emr\"\n",
			"rt.rego:5: eval_conflict_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustParse(t, "rt.rego", tc.src)
			f := flow("site-a", "hub", true, "emr")
			d, err := p.decide(context.Background(), f.astInput(f.Source.term()))
			if err == nil {
				t.Fatalf("no error; decision %+v", d)
			}
			if d.Allowed || len(d.Reasons) != 1 || !strings.Contains(d.Reasons[0], tc.want) {
				t.Fatalf("decision %+v, want denied with a reason containing %q", d, tc.want)
			}
		})
	}
}

// Input is the documented JSON document, and the OPA value the policy
// sees is the same document.
func TestInputDocument(t *testing.T) {
	f := Flow{
		Source:      Source{Service: "vitals", Namespace: "wards", Site: "site-a"},
		Destination: Destination{Service: "emr", Namespace: "records", Site: "hub", PHI: true, Kind: "emr"},
	}
	want := `{"action":"data_transfer","destination":{"kind":"emr","namespace":"records","phi":true,"service":"emr","site":"hub"},` +
		`"source":{"namespace":"wards","service":"vitals","site":"site-a"}}`
	got, err := json.Marshal(f.Input())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("Input\n got %s\nwant %s", got, want)
	}
	if s := f.astInput(f.Source.term()).String(); !equalJSON(t, s, want) {
		t.Errorf("astInput %s, want %s", s, want)
	}
	f.Destination.PHI = false
	if f.Action() != ActionCall {
		t.Errorf("non-PHI action %q", f.Action())
	}
}

func equalJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
