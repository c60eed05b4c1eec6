package v1alpha1_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"medmesh/internal/kubetest"
)

// TestCRDsInRealAPIServer installs deploy/crds into a real kube-apiserver
// (envtest, binaries from `make tools`): the CRDs and their CEL rules are
// accepted, every example in examples/policies is accepted, each kind of
// bad input is refused with a message naming the field, and the status
// subresource takes conditions.
func TestCRDsInRealAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver")
	}
	if _, err := kubetest.AssetsDir(); err != nil {
		t.Skip(err)
	}
	cfg, kc := kubetest.Start(t, filepath.Join("..", "..", "deploy", "crds"))
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "clinical"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	create := func(doc string) (*unstructured.Unstructured, error) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		if u.GetNamespace() == "" {
			u.SetNamespace("default")
		}
		gvr := schema.GroupVersionResource{Group: "policy.medmesh.io", Version: "v1alpha1",
			Resource: strings.ToLower(u.GetKind()) + "s"}
		if u.GetKind() == "MeshAccess" {
			gvr.Resource = "meshaccesses"
		}
		// Strict, as kubectl apply is: an unknown field is an error.
		return dc.Resource(gvr).Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
	}

	files, _ := filepath.Glob(filepath.Join("..", "..", "examples", "policies", "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := create(string(doc)); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}

	// A failover list naming sites only (an edge site orders the others).
	if _, err := create("apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshDestination\nmetadata: {name: fo-sites}\nspec: {service: emr, localityFailover: [{site: hub}, {site: north}]}\n"); err != nil {
		t.Errorf("site-only failover entries: %v", err)
	}

	route := func(name, rule string) string {
		return "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshRoute\nmetadata: {name: " + name + "}\nspec:\n  service: emr\n  rules:\n" + rule
	}
	for _, c := range []struct{ name, doc, want string }{
		{"negative-timeout", route("negative-timeout", "  - destinations: [{}]\n    timeout: -5s\n"), "spec.rules[0].timeout: Invalid value"},
		{"weight-too-big", route("weight-too-big", "  - destinations: [{weight: 20000}]\n"), "spec.rules[0].destinations[0].weight"},
		{"unknown-field", route("unknown-field", "  - destinations: [{}]\n    timout: 5s\n"), `unknown field "spec.rules[0].timout"`},
		{"relative-path", route("relative-path", "  - match: {path: {type: Exact, value: fhir}}\n    destinations: [{}]\n"), "an Exact or Prefix path starts with /"},
		{"header-without-value", route("header-without-value", "  - match: {headers: [{name: x-a}]}\n    destinations: [{}]\n"), "value is required unless type is Present"},
		{"two-abort-statuses", route("two-abort-statuses", "  - destinations: [{}]\n    fault: {abort: {httpStatus: 503, grpcStatus: 14, percent: 5}}\n"), "give exactly one of httpStatus and grpcStatus"},
		{"no-rules", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshRoute\nmetadata: {name: no-rules}\nspec: {service: emr, rules: []}\n", "spec.rules"},
		{"bad-service-name", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshRoute\nmetadata: {name: bad-service}\nspec: {service: EMR_1, rules: [{destinations: [{}]}]}\n", "spec.service"},
		{"choice-count-on-ring-hash", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshDestination\nmetadata: {name: cc}\nspec: {service: emr, loadBalancer: {algorithm: RingHash, choiceCount: 3}}\n", "choiceCount is for LeastRequest"},
		{"failover-entry-empty", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshDestination\nmetadata: {name: fo-empty}\nspec: {service: emr, localityFailover: [{site: hub}, {}]}\n", "spec.localityFailover[1]: Invalid value: \"object\": a region or a site is required"},
		{"failover-zone-without-region", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshDestination\nmetadata: {name: fo-zone}\nspec: {service: emr, localityFailover: [{site: hub, zone: hub-a}]}\n", "zone needs a region"},
		{"failover-empty-site", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshDestination\nmetadata: {name: fo-empty-site}\nspec: {service: emr, localityFailover: [{site: \"\"}]}\n", "spec.localityFailover[0].site"},
		{"unknown-algorithm", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshDestination\nmetadata: {name: algo}\nspec: {service: emr, loadBalancer: {algorithm: Fastest}}\n", `Unsupported value: "Fastest"`},
		{"both-caller-kinds", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshAccess\nmetadata: {name: both}\nspec: {service: emr, action: Allow, from: [{service: his, spiffeID: \"spiffe://medmesh.local/ns/default/svc/his\"}]}\n", "give exactly one of service and spiffeID"},
		{"empty-operation", "apiVersion: policy.medmesh.io/v1alpha1\nkind: MeshAccess\nmetadata: {name: empty-op}\nspec: {service: emr, action: Deny, from: [{service: his}], to: [{}]}\n", "give paths, methods or both"},
	} {
		_, err := create(c.doc)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error containing %q", c.name, err, c.want)
		}
	}

	// The status subresource takes the conditions the control plane makes.
	gvr := schema.GroupVersionResource{Group: "policy.medmesh.io", Version: "v1alpha1", Resource: "meshroutes"}
	obj, err := dc.Resource(gvr).Namespace("clinical").Get(ctx, "emr-canary", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cond := map[string]any{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "in force",
		"lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": obj.GetGeneration()}
	if err := unstructured.SetNestedSlice(obj.Object, []any{cond}, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Resource(gvr).Namespace("clinical").UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("status update: %v", err)
	}
	got, _ := dc.Resource(gvr).Namespace("clinical").Get(ctx, "emr-canary", metav1.GetOptions{})
	conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
	if len(conds) != 1 {
		t.Fatalf("status conditions after update: %v", conds)
	}
}
