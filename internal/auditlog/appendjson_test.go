package auditlog

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// AppendJSON must write exactly what encoding/json writes, for records
// as the trails fill them and for hostile strings (quotes, control
// characters, HTML, invalid UTF-8, U+2028), empty and absent fields.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	hostile := []string{"", "plain", `quo"te\back`, "<script>&amp;</script>", "tab\tnew\nline\rret\bbs\fff\x00\x01\x1f",
		"caf\xc3\xa9 \xff\xfe bad utf8", "line\u2028sep\u2029para", "emoji \U0001F489 ok", strings.Repeat("x", 300)}
	rng := rand.New(rand.NewPCG(3, 5))
	pick := func() string { return hostile[rng.IntN(len(hostile))] }
	coding := func() Coding { return Coding{System: pick(), Code: pick(), Display: pick()} }
	ref := func() *Reference {
		if rng.IntN(3) == 0 {
			return nil
		}
		return &Reference{Identifier: Identifier{System: pick(), Value: pick()}, Display: pick()}
	}
	events := []AuditEvent{{}, { // zero, then one as the sidecar writes it
		ResourceType: "AuditEvent", Type: RESTType, Subtype: []Coding{MethodSubtype("GET")}, Action: "R",
		Period: Period{Start: "2026-11-30T04:00:00.123456789Z", End: "2026-11-30T04:00:00.2Z"}, Recorded: "2026-11-30T04:00:00.2Z",
		Outcome: "0", OutcomeDesc: "200",
		Agent: []Agent{{Type: SourceRole, Who: &Reference{Identifier: Identifier{System: URISystem, Value: "spiffe://medmesh.local/ns/default/svc/his"}}, Requestor: true,
			Network: &Network{Address: "10.0.0.7", Type: "2"}},
			{Type: DestinationRole, Who: &Reference{Identifier: Identifier{System: URISystem, Value: "spiffe://medmesh.local/ns/default/svc/emr"}, Display: "emr"}}},
		Source: Source{Site: "emr", Observer: Reference{Identifier: Identifier{System: URISystem, Value: "emr-1"}}, Type: []Coding{AppServerSource}},
		Entity: []Entity{{What: &Reference{Identifier: Identifier{System: "urn:medmesh:patient-reference:hmac-sha256", Value: "ab12"}},
			Type: &Coding{System: EntityTypeSystem, Code: "1", Display: "Person"}, Role: &Coding{Code: "1"},
			Detail: []Detail{{Type: "dataClass", ValueString: "fhir"}, {Type: "latencyMs", ValueString: "1.250"}}}},
	}}
	for range 500 {
		e := AuditEvent{ResourceType: pick(), Type: coding(), Action: pick(), Period: Period{Start: pick(), End: pick()},
			Recorded: pick(), Outcome: pick(), OutcomeDesc: pick(), Source: Source{Site: pick(), Observer: Reference{Identifier: Identifier{Value: pick()}}}}
		for range rng.IntN(3) {
			e.Subtype = append(e.Subtype, coding())
		}
		if rng.IntN(4) > 0 { // else nil: "null"
			e.Agent = []Agent{}
			for range rng.IntN(3) {
				a := Agent{Who: ref(), Requestor: rng.IntN(2) == 0}
				if rng.IntN(2) == 0 {
					a.Type.Coding = []Coding{coding()}
				}
				if rng.IntN(2) == 0 {
					a.Network = &Network{Address: pick(), Type: pick()}
				}
				e.Agent = append(e.Agent, a)
			}
			e.Source.Type = []Coding{coding()}
		}
		if rng.IntN(4) > 0 {
			e.Entity = []Entity{}
			for range rng.IntN(3) {
				en := Entity{What: ref()}
				if rng.IntN(2) == 0 {
					c := coding()
					en.Type, en.Role = &c, &c
				}
				if rng.IntN(3) > 0 {
					en.Detail = []Detail{}
					for range rng.IntN(4) {
						en.Detail = append(en.Detail, Detail{Type: pick(), ValueString: pick()})
					}
				}
				e.Entity = append(e.Entity, en)
			}
		}
		events = append(events, e)
	}
	for i := range events {
		want, err := json.Marshal(&events[i])
		if err != nil {
			t.Fatal(err)
		}
		if got := events[i].AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("event %d:\n got %s\nwant %s", i, got, want)
		}
	}
}
