package main

import (
	"bytes"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"medmesh/controlplane"
	"medmesh/controlplane/policy"
)

func TestStatusListsPoliciesNotAccepted(t *testing.T) {
	cond := func(status metav1.ConditionStatus, reason, msg string) []metav1.Condition {
		return []metav1.Condition{{Type: "Accepted", Status: status, Reason: reason, Message: msg}}
	}
	pr := &controlplane.PoliciesResponse{Source: "dir:/etc/medmesh/policies", Resolved: true,
		Errors: []string{"emr.yaml: document 1: unknown field \"timout\"; the file's previous content stays in force"},
		Objects: []policy.ObjectStatus{
			{Key: policy.Key{Kind: "MeshRoute", Namespace: "default", Name: "good"}, Conditions: cond("True", "Accepted", "in force")},
			{Key: policy.Key{Kind: "MeshRoute", Namespace: "default", Name: "late"},
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
	PrintPolicies(&b, &controlplane.PoliciesResponse{})
	if b.Len() != 0 {
		t.Errorf("no policy source, yet output %q", b.String())
	}
}
