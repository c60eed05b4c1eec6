package classify

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClassifyBuiltin(t *testing.T) {
	c := New(nil)
	fhir := map[string]string{"accept": "application/fhir+json"}
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		phi                bool
		class              string
		prio               Priority
		rule               string
		patient            string
	}{
		// FHIR
		{"fhir read patient", "GET", "/fhir/Patient/p-123", fhir, true, "fhir.Patient", Low, "fhir.read", "Patient/p-123"},
		{"fhir metadata", "GET", "/fhir/metadata", fhir, false, "fhir.CapabilityStatement", Background, "fhir.metadata", ""},
		{"fhir metadata no accept", "GET", "/fhir/metadata", nil, false, "fhir.CapabilityStatement", Background, "fhir.metadata", ""},
		{"fhir search by patient", "GET", "/fhir/Observation?patient=p-9&code=1234", fhir, true, "fhir.Observation", Medium, "fhir.search", "p-9"},
		{"fhir _search post", "POST", "/Observation/_search", map[string]string{"content-type": "application/x-www-form-urlencoded"}, true, "fhir.Observation", Medium, "fhir.search", ""},
		{"fhir compartment", "GET", "/fhir/Patient/42/MedicationRequest", fhir, true, "fhir.MedicationRequest", High, "fhir.compartment", "Patient/42"},
		{"fhir everything", "GET", "/fhir/Patient/42/$everything", fhir, true, "fhir.Patient", Low, "fhir.everything", "Patient/42"},
		{"fhir history instance", "GET", "/fhir/Patient/42/_history/3", fhir, true, "fhir.Patient", Low, "fhir.history", "Patient/42"},
		{"fhir history system", "GET", "/fhir/_history", fhir, true, "fhir.history", Low, "fhir.history", ""},
		{"fhir bulk export", "GET", "/fhir/$export", fhir, true, "fhir.export", Background, "fhir.export", ""},
		{"fhir legacy media type", "PUT", "/base/Condition/7", map[string]string{"content-type": "application/json+fhir; charset=utf-8"}, true, "fhir.Condition", Low, "fhir.write", ""},
		{"fhir non-PHI practitioner", "GET", "/fhir/Practitioner/1", fhir, false, "fhir.Practitioner", Low, "fhir.read", ""},
		{"fhir terminology", "GET", "/fhir/ValueSet/$expand", fhir, false, "fhir.ValueSet", Background, "fhir.operation", ""},
		{"fhir transaction", "POST", "/fhir", map[string]string{"content-type": "application/fhir+xml"}, true, "fhir.Bundle", Low, "fhir.system", ""},
		{"fhir unknown type with fhir media is PHI", "GET", "/fhir/FutureThing/1", fhir, true, "fhir.other", Low, "fhir.read", ""},
		{"fhir name-like segment never becomes a class", "GET", "/fhir/JaneDoe", fhir, true, "fhir.other", Low, "fhir.search", ""},
		{"fhir escaped path", "GET", "/fhir/Patient/a%2Fb", fhir, true, "fhir.Patient", Low, "fhir.read", "Patient/a"},
		// DICOMweb
		{"qido studies", "GET", "/dicomweb/studies?PatientID=MRN77", map[string]string{"accept": "application/dicom+json"}, true, "dicom.query", Medium, "dicom.qido", "MRN77"},
		{"qido series of study", "GET", "/dicomweb/studies/1.2.3/series", nil, true, "dicom.query", Medium, "dicom.qido", ""},
		{"wado study bulk", "GET", "/dicomweb/studies/1.2.3", map[string]string{"accept": "multipart/related; type=\"application/dicom\""}, true, "dicom.study", Low, "dicom.wado-rs", ""},
		{"wado series bulk", "GET", "/studies/1.2.3/series/4.5", nil, true, "dicom.series", Low, "dicom.wado-rs", ""},
		{"wado instance", "GET", "/studies/1.2.3/series/4.5/instances/6.7", nil, true, "dicom.instance", Medium, "dicom.wado-rs", ""},
		{"wado frames", "GET", "/studies/1.2.3/series/4.5/instances/6.7/frames/1", nil, true, "dicom.instance", Medium, "dicom.wado-rs", ""},
		{"wado metadata", "GET", "/studies/1.2.3/metadata", nil, true, "dicom.metadata", Medium, "dicom.wado-rs", ""},
		{"stow", "POST", "/dicomweb/studies", map[string]string{"content-type": "multipart/related; type=\"application/dicom\"; boundary=x"}, true, "dicom.store", Low, "dicom.stow", ""},
		{"wado-uri", "GET", "/wado?requestType=WADO&studyUID=1&00100020=MRN5", nil, true, "dicom.instance", Medium, "dicom.wado-uri", "MRN5"},
		{"dicom media only", "GET", "/pacs/object/9", map[string]string{"accept": "application/dicom"}, true, "dicom.instance", Medium, "dicom.media", ""},
		// HL7 v2
		{"hl7 er7", "POST", "/interface/inbound", map[string]string{"content-type": "x-application/hl7-v2+er7"}, true, "hl7v2.message", Medium, "hl7v2", ""},
		{"hl7 path", "POST", "/hl7/adt", nil, true, "hl7v2.message", Medium, "hl7v2.path", ""},
		// Vitals
		{"cardiac arrest alert", "POST", "/vitals/alerts/cardiac_arrest_alert", nil, true, "vitals.alert", Critical, "vitals.alert", ""},
		{"cardiac arrest grpc", "POST", "/medmesh.vitals.Alerts/CardiacArrestAlert", map[string]string{"content-type": "application/grpc"}, true, "vitals.alert", Critical, "vitals.alert", ""},
		{"defibrillator", "POST", "/devices/d1/defibrillator-control", nil, true, "device.control", Critical, "device.control", ""},
		{"ecg", "GET", "/vitals/ecg_realtime?patient=p1", nil, true, "vitals.ecg", High, "vitals.ecg", "p1"},
		{"spo2", "GET", "/vitals/spo2", nil, true, "vitals.spo2", High, "vitals.spo2", ""},
		{"device status", "GET", "/devices/d1/device_status", nil, false, "device.status", Background, "device.status", ""},
		{"vitals other", "GET", "/vitals/bp", nil, true, "vitals.stream", High, "vitals.stream", ""},
		// WebRTC, health, generic
		{"webrtc signalling", "POST", "/webrtc/offer", nil, false, "webrtc.signalling", High, "webrtc.signalling", ""},
		{"sdp", "POST", "/call/1", map[string]string{"content-type": "application/sdp"}, false, "webrtc.signalling", High, "webrtc.sdp", ""},
		{"health", "GET", "/healthz", nil, false, "health", High, "health", ""},
		{"lab results", "GET", "/api/lab_results/5", nil, true, "lab.result", Medium, "lab.results", ""},
		{"records", "GET", "/api/records/5", nil, true, "record", Low, "records", ""},
		// Unknown
		{"unknown", "GET", "/static/app.js", nil, false, "unknown", Medium, "default", ""},
		{"unknown content type", "POST", "/x", map[string]string{"content-type": "application/x-weird"}, false, "unknown", Medium, "default", ""},
		{"empty", "", "", nil, false, "unknown", Medium, "default", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := c.Classify(NewRequest(tc.method, tc.path, tc.hdr))
			if got.PHI != tc.phi || got.Class != tc.class || got.Priority != tc.prio || got.Rule != tc.rule {
				t.Errorf("got phi=%v class=%s prio=%s rule=%s; want phi=%v class=%s prio=%s rule=%s",
					got.PHI, got.Class, got.Priority, got.Rule, tc.phi, tc.class, tc.prio, tc.rule)
			}
			if got.Patient.Reveal() != tc.patient {
				t.Errorf("patient reference: got %q, want %q", got.Patient.Reveal(), tc.patient)
			}
		})
	}
}

func TestOperatorRulesComeFirst(t *testing.T) {
	cfg, err := Parse("rules.yaml", []byte(`
rules:
  - name: stat-orders
    match: {methods: [post], pathPrefix: /fhir/MedicationRequest, headers: [{name: X-Urgency, exact: stat}]}
    phi: true
    class: pharmacy.stat
    priority: critical
  - name: demote-ecg
    match: {segments: [ecg_realtime]}
    phi: true
    class: vitals.ecg
    priority: low
`))
	if err != nil {
		t.Fatal(err)
	}
	c := New(cfg.Rules)
	got := c.Classify(NewRequest("POST", "/fhir/MedicationRequest", map[string]string{"x-urgency": "stat"}))
	if got.Rule != "stat-orders" || got.Priority != Critical || got.Class != "pharmacy.stat" {
		t.Errorf("operator rule did not win: %+v", got)
	}
	got = c.Classify(NewRequest("POST", "/fhir/MedicationRequest", map[string]string{"x-urgency": "routine"}))
	if got.Rule != "fhir.write" {
		t.Errorf("header mismatch should fall through to built-in: %+v", got)
	}
	if got := c.Classify(NewRequest("GET", "/vitals/ecg_realtime", nil)); got.Priority != Low || got.Rule != "demote-ecg" {
		t.Errorf("override of a built-in: %+v", got)
	}
	if s := c.Rules()[0].Source; s != "rules.yaml:3" {
		t.Errorf("source = %q, want rules.yaml:3", s)
	}
}

func TestRuleFileErrorsNameFileAndLine(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"bad priority", "rules:\n  - name: a\n    match: {pathPrefix: /a}\n    phi: true\n    class: x\n    priority: urgent\n", `bad.yaml:2: rule 1 ("a"): priority: unknown value "urgent"`},
		{"bad regex", "rules:\n  - name: ok\n    match: {pathPrefix: /a}\n    phi: false\n    class: x\n    priority: low\n  - name: b\n    match: {pathRegex: '(['}\n    phi: true\n    class: x\n    priority: low\n", `bad.yaml:7: rule 2 ("b"): match.pathRegex`},
		{"missing phi", "rules:\n  - name: a\n    match: {pathPrefix: /a}\n    class: x\n    priority: low\n", `bad.yaml:2: rule 1 ("a"): phi: required`},
		{"catch-all", "rules:\n  - name: a\n    match: {}\n    phi: true\n    class: x\n    priority: low\n", `bad.yaml:2: rule 1 ("a"): match: at least one condition`},
		{"duplicate", "rules:\n  - {name: a, match: {pathPrefix: /a}, phi: true, class: x, priority: low}\n  - {name: a, match: {pathPrefix: /b}, phi: true, class: x, priority: low}\n", `bad.yaml:3: rule 2 ("a"): name "a" already used by the rule at line 2`},
		{"unknown key", "rules:\n  - name: a\n    mtach: {pathPrefix: /a}\n", `bad.yaml: line 3: field mtach not found`},
		{"syntax", "rules: [\n", `bad.yaml: line 1: did not find expected node content`},
		{"caller not spiffe", "callers:\n  allow:\n    - id: vitals\n      max: critical\n", `bad.yaml:3: callers.allow[0]: "vitals" is not a SPIFFE ID`},
		{"caller default", "callers:\n  default: top\n", `bad.yaml:2: callers.default: unknown priority "top"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
	if cfg, err := Parse("empty.yaml", nil); err != nil || len(cfg.Rules) != 0 || cfg.Callers.Default != Critical {
		t.Errorf("empty file: %+v %v", cfg, err)
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file error should name the file: %v", err)
	}
}

func TestCallerPolicy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r.yaml")
	os.WriteFile(path, []byte(`
callers:
  default: medium
  allow:
    - prefix: spiffe://medmesh.local/ns/icu/
      max: critical
    - prefix: spiffe://medmesh.local/ns/
      max: high
    - id: spiffe://medmesh.local/ns/icu/svc/batch
      max: background
`), 0o600)
	cfg, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]Priority{
		"spiffe://medmesh.local/ns/icu/svc/monitor": Critical,
		"spiffe://medmesh.local/ns/icu/svc/batch":   Background,
		"spiffe://medmesh.local/ns/default/svc/his": High,
		"spiffe://other/ns/x/svc/y":                 Medium,
		"":                                          Medium,
	} {
		if got := cfg.Callers.Max(id); got != want {
			t.Errorf("Max(%q) = %s, want %s", id, got, want)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	r := Result{Patient: NewSecret("Patient/jane-doe")}
	var sb strings.Builder
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("x", "result", r, "patient", r.Patient)
	b, _ := json.Marshal(r)
	out := sb.String() + string(b) + fmt.Sprintf("%v %+v %#v %s", r, r, r, r.Patient)
	if strings.Contains(out, "jane-doe") {
		t.Fatalf("patient reference leaked: %s", out)
	}
}

func TestPriorityParse(t *testing.T) {
	for p := Critical; p <= Background; p++ {
		if q, ok := ParsePriority(" " + strings.ToUpper(p.String()) + " "); !ok || q != p {
			t.Errorf("round trip %s", p)
		}
	}
	if _, ok := ParsePriority("urgent"); ok {
		t.Error("urgent parsed")
	}
	if Lower(High, Low) != Low || Lower(Background, Critical) != Background {
		t.Error("Lower")
	}
}
