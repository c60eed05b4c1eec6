package main

import (
	"bytes"
	"strings"
	"testing"

	"medmesh/api/admin"
)

func TestStatusListsPoliciesNotAccepted(t *testing.T) {
	cond := func(status, reason, msg string) []admin.Condition {
		return []admin.Condition{{Type: "Accepted", Status: status, Reason: reason, Message: msg}}
	}
	pr := &admin.PoliciesResponse{Source: "dir:/etc/medmesh/policies", Resolved: true,
		Errors: []string{"emr.yaml: document 1: unknown field \"timout\"; the file's previous content stays in force"},
		Objects: []admin.ObjectStatus{
			{Key: admin.Key{Kind: "MeshRoute", Namespace: "default", Name: "good"}, Conditions: cond("True", "Accepted", "in force")},
			{Key: admin.Key{Kind: "MeshRoute", Namespace: "default", Name: "late"},
				Conditions: cond("False", "Conflicted", "spec.service: \"emr\" is already configured by MeshRoute default/good")},
		}}
	var b bytes.Buffer
	PrintPolicies(&b, pr)
	out := b.String()
	for _, want := range []string{"1 in force, 1 not accepted", "MeshRoute default/late: Conflicted", "timout"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not accepted: MeshRoute default/good") {
		t.Errorf("an accepted policy is listed:\n%s", out)
	}
	b.Reset()
	PrintPolicies(&b, &admin.PoliciesResponse{})
	if b.Len() != 0 {
		t.Errorf("no policy source, yet output %q", b.String())
	}
}
