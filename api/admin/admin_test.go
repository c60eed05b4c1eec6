package admin_test

import (
	"encoding/json"
	"testing"

	"medmesh/api/admin"
)

// A client decodes the bodies with these types alone: the policies
// body as the control plane writes it (metav1's condition JSON), and the
// helpers `medmesh status` builds its summary from.
func TestPoliciesHelpers(t *testing.T) {
	body := `{"source":"dir:/p","resolved":true,"objects":[
	  {"kind":"MeshRoute","namespace":"default","name":"good","conditions":[
	    {"type":"Accepted","status":"True","lastTransitionTime":"2026-03-04T04:06:07Z","reason":"Accepted","message":"in force"}]},
	  {"kind":"MeshRoute","namespace":"default","name":"late","conditions":[
	    {"type":"Invalid","status":"False","lastTransitionTime":"2026-03-04T04:06:07Z","reason":"Valid","message":"the object is valid"},
	    {"type":"Accepted","status":"False","observedGeneration":3,"lastTransitionTime":"2026-03-04T04:06:07Z","reason":"Conflicted","message":"spec.service: taken"}]},
	  {"kind":"MeshAccess","namespace":"default","name":"unresolved","conditions":null}]}`
	var pr admin.PoliciesResponse
	if err := json.Unmarshal([]byte(body), &pr); err != nil {
		t.Fatal(err)
	}
	bad := pr.NotAccepted()
	if len(bad) != 2 || bad[0].Name != "late" || bad[1].Name != "unresolved" {
		t.Fatalf("not accepted: %+v", bad)
	}
	if got, want := bad[0].Message(), "Conflicted: spec.service: taken"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	if bad[1].Message() != "" || pr.Objects[0].Message() != "" {
		t.Errorf("a message without an Accepted=False condition: %q %q", bad[1].Message(), pr.Objects[0].Message())
	}
	if got := bad[0].Key.String(); got != "MeshRoute default/late" {
		t.Errorf("key %q", got)
	}
	if c := bad[0].Conditions[1]; c.ObservedGeneration != 3 || c.LastTransitionTime.IsZero() {
		t.Errorf("condition %+v", c)
	}
}

func TestTypeStatusInSync(t *testing.T) {
	for ts, want := range map[admin.TypeStatus]bool{
		{}:                        true,
		{Sent: "v1", Acked: "v1"}: true,
		{Sent: "v2", Acked: "v1"}: false,
		{Sent: "v1"}:              false,
	} {
		if ts.InSync() != want {
			t.Errorf("%+v: InSync %t, want %t", ts, ts.InSync(), want)
		}
	}
}
