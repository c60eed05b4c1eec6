package classify

import (
	"strings"
	"testing"
)

// builtinClass: classes come from the rules' fixed vocabulary or the
// known FHIR resource types, never from arbitrary request text.
func builtinClass(c string) bool {
	if r, ok := strings.CutPrefix(c, "fhir."); ok {
		return r == "other" || r == "Bundle" || r == "history" || r == "export" || r == "operation" ||
			patientCompartment[r] || nonPHIResources[r]
	}
	for _, rule := range Builtin() {
		if rule.Class == c {
			return true
		}
	}
	return strings.HasPrefix(c, "dicom.")
}

// FuzzClassify feeds arbitrary request lines and headers: classification
// must never panic and must always produce a valid priority and a rule.
func FuzzClassify(f *testing.F) {
	f.Add("GET", "/fhir/Patient/1/$everything", "application/fhir+json", "")
	f.Add("POST", "/studies/1.2/series/3/instances/4/frames/1", "multipart/related; type=application/dicom", "")
	f.Add("GET", "/%zz/Patient?patient=%", "", "text/html,,;;")
	f.Add("", "?", ";", "")
	f.Add("GET", "/vitals/alerts/cardiac_arrest_alert", "", "")
	f.Add("GET", "/wado?requestType=WADO", "", "application/dicom")
	f.Add("PUT", "////fhir///Observation//_search", "x-application/hl7-v2+er7", "*/*")
	c := New(nil)
	f.Fuzz(func(t *testing.T, method, path, ct, accept string) {
		r := c.Classify(NewRequest(method, path, map[string]string{"content-type": ct, "accept": accept}))
		if !r.Priority.Valid() || r.Rule == "" || r.Class == "" {
			t.Fatalf("invalid result %+v for %q %q", r, method, path)
		}
		if r.Class != "unknown" && strings.Contains(path, r.Class) && !builtinClass(r.Class) {
			t.Fatalf("class %q was taken from the request", r.Class)
		}
		if !r.PHI && !r.Patient.Empty() {
			t.Fatalf("non-PHI result carries a patient reference: %q %q", method, path)
		}
	})
}

// FuzzRuleFile: arbitrary rule files are either rejected with an error or
// produce rules that classify without panicking.
func FuzzRuleFile(f *testing.F) {
	f.Add("rules:\n  - {name: a, match: {pathPrefix: /a}, phi: true, class: x, priority: low}\n")
	f.Add("rules: [\n")
	f.Add("callers: {default: high, allow: [{id: 'spiffe://x', max: critical}]}\n")
	f.Add("rules:\n  - {name: r, match: {pathRegex: '^/a', headers: [{name: h, regex: '.*'}]}, phi: false, class: y, priority: background}\n")
	f.Fuzz(func(t *testing.T, body string) {
		cfg, err := Parse("fuzz.yaml", []byte(body))
		if err != nil {
			return
		}
		New(cfg.Rules).Classify(NewRequest("GET", "/a", map[string]string{"h": "v"}))
	})
}
