// Package deploy holds medmesh's Kubernetes manifests; its tests render
// them with kustomize's Go API (what `kubectl kustomize` runs) and check
// what comes out. kubectl itself is not installed on the build machines.
package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"medmesh/controlplane/inject"
)

// rendered is one kustomization's output, decoded.
type rendered struct {
	yaml    []byte
	objects map[string]runtime.Object // "Kind/namespace/name"
}

// render runs kustomize on dir with its default options, which are
// kubectl's: load restrictions on (nothing outside the tree it may
// reference), so what renders here renders with `kubectl kustomize`.
func render(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	// Strict: an unknown or misspelt field is an error, as kubectl's
	// server-side field validation would make it.
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	r := rendered{yaml: out, objects: map[string]runtime.Object{}}
	for _, res := range m.Resources() {
		b, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := dec.Decode(b, nil, nil)
		if err != nil {
			t.Errorf("%s: %s %s does not decode strictly: %v", dir, res.GetKind(), res.GetName(), err)
			continue
		}
		key := fmt.Sprintf("%s/%s/%s", gvk.Kind, res.GetNamespace(), res.GetName())
		r.objects[key] = obj
	}
	return r
}

func get[T runtime.Object](t *testing.T, r rendered, key string) T {
	t.Helper()
	obj, ok := r.objects[key]
	if !ok {
		t.Fatalf("render lacks %s; it has %v", key, keys(r))
	}
	v, ok := obj.(T)
	if !ok {
		t.Fatalf("%s decoded as %T", key, obj)
	}
	return v
}

func keys(r rendered) []string {
	var out []string
	for k := range r.objects {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

const ns = "medmesh-system"

func TestBaseRenders(t *testing.T) {
	r := render(t, "base")
	want := []string{
		"Namespace//" + ns,
		"ServiceAccount/" + ns + "/medmesh-controlplane",
		"ClusterRole//medmesh-controlplane",
		"ClusterRoleBinding//medmesh-controlplane",
		"Deployment/" + ns + "/medmesh-controlplane",
		"Role/" + ns + "/medmesh-controlplane",
		"RoleBinding/" + ns + "/medmesh-controlplane",
		"PodDisruptionBudget/" + ns + "/medmesh-controlplane",
		"Service/" + ns + "/medmesh-xds",
		"Service/" + ns + "/medmesh-admin",
		"Service/" + ns + "/medmesh-webhook",
		"NetworkPolicy/" + ns + "/medmesh-controlplane",
		"MutatingWebhookConfiguration//" + inject.WebhookConfigName,
		"Service/" + ns + "/consul",
		"StatefulSet/" + ns + "/consul",
	}
	crds, _ := filepath.Glob("crds/*.yaml")
	for _, f := range crds {
		b, _ := os.ReadFile(f)
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatal(err)
		}
		want = append(want, "CustomResourceDefinition//"+crd.Name)
	}
	if len(crds) == 0 {
		t.Fatal("no CRDs in deploy/crds")
	}
	for _, k := range want {
		if _, ok := r.objects[k]; !ok {
			t.Errorf("base lacks %s", k)
		}
	}
	if len(r.objects) != len(want) {
		t.Errorf("base renders %d objects, want %d: %v", len(r.objects), len(want), keys(r))
	}

	d := get[*appsv1.Deployment](t, r, "Deployment/"+ns+"/medmesh-controlplane")
	if *d.Spec.Replicas != 2 {
		t.Errorf("control plane replicas = %d, want 2", *d.Spec.Replicas)
	}
	aa := d.Spec.Template.Spec.Affinity.PodAntiAffinity
	if aa == nil || len(aa.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
		aa.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("control plane anti-affinity = %+v, want required per hostname", aa)
	}
	cp := d.Spec.Template.Spec.Containers[0]
	args := strings.Join(cp.Args, " ")
	for _, a := range []string{"--kubeconfig=in-cluster", "--webhook-listen=:15443", "--webhook-config=" + inject.WebhookConfigName, "--kube-attest",
		"--webhook-dns=medmesh-webhook.medmesh-system.svc,", "--ca-key=", "--inject-consul=http://consul.medmesh-system.svc:8500"} {
		if !strings.Contains(args, a) {
			t.Errorf("control plane args lack %q: %s", a, args)
		}
	}
	if d.Spec.Template.Spec.ServiceAccountName != "medmesh-controlplane" {
		t.Errorf("service account = %q", d.Spec.Template.Spec.ServiceAccountName)
	}

	// Every Service targets a port the control plane declares.
	ports := map[string]int32{}
	for _, p := range cp.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, name := range []string{"medmesh-xds", "medmesh-admin", "medmesh-webhook"} {
		s := get[*corev1.Service](t, r, "Service/"+ns+"/"+name)
		for _, p := range s.Spec.Ports {
			if _, ok := ports[p.TargetPort.StrVal]; !ok {
				t.Errorf("service %s targets port %q, which the control plane does not declare (%v)", name, p.TargetPort.String(), ports)
			}
		}
		if !reflect.DeepEqual(s.Spec.Selector, d.Spec.Selector.MatchLabels) {
			t.Errorf("service %s selects %v, the Deployment's pods are %v", name, s.Spec.Selector, d.Spec.Selector.MatchLabels)
		}
	}

	assertRBAC(t, get[*rbacv1.ClusterRole](t, r, "ClusterRole//medmesh-controlplane"))
	crb := get[*rbacv1.ClusterRoleBinding](t, r, "ClusterRoleBinding//medmesh-controlplane")
	if s := crb.Subjects[0]; s.Name != "medmesh-controlplane" || s.Namespace != ns {
		t.Errorf("binding subject = %+v", s)
	}
	assertWebhookMatchesInjector(t, get[*admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration//"+inject.WebhookConfigName))
	if l := get[*corev1.Namespace](t, r, "Namespace//"+ns).Labels[inject.LabelNamespace]; l != "disabled" {
		t.Errorf("namespace %s label %s = %q, want disabled", ns, inject.LabelNamespace, l)
	}
}

func assertRBAC(t *testing.T, cr *rbacv1.ClusterRole) {
	t.Helper()
	allows := func(group, res, verb string) bool {
		for _, r := range cr.Rules {
			if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, res) && slices.Contains(r.Verbs, verb) {
				return true
			}
		}
		return false
	}
	for _, c := range [][3]string{
		{"authentication.k8s.io", "tokenreviews", "create"},
		{"policy.medmesh.io", "meshroutes", "watch"}, {"policy.medmesh.io", "meshdestinations", "list"},
		{"policy.medmesh.io", "meshaccesses", "get"}, {"policy.medmesh.io", "meshroutes/status", "update"},
		{"policy.medmesh.io", "meshaccesses/status", "patch"}, {"policy.medmesh.io", "meshdestinations/status", "update"},
		{"", "pods", "watch"}, {"", "namespaces", "list"},
		{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch"},
	} {
		if !allows(c[0], c[1], c[2]) {
			t.Errorf("ClusterRole does not allow %s on %s.%s", c[2], c[1], c[0])
		}
	}
	for _, c := range [][3]string{{"", "pods", "create"}, {"", "secrets", "get"}, {"", "pods", "delete"}} {
		if allows(c[0], c[1], c[2]) {
			t.Errorf("ClusterRole allows %s on %s: more than the control plane needs", c[2], c[1])
		}
	}
}

// assertWebhookMatchesInjector: the static configuration in deploy/base
// says what inject.WebhookConfiguration says, so the paths the webhook
// serves and the selectors its handler relies on cannot drift apart.
func assertWebhookMatchesInjector(t *testing.T, got *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	want := inject.WebhookConfiguration(func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Name: "medmesh-webhook", Namespace: ns, Path: &path, Port: ptr(int32(443))}}
	})
	// Labels come from kustomize; caBundle from the control plane at start.
	got = got.DeepCopy()
	got.Labels = nil
	if !reflect.DeepEqual(got.Webhooks, want.Webhooks) {
		a, _ := yaml.Marshal(got.Webhooks)
		b, _ := yaml.Marshal(want.Webhooks)
		t.Errorf("deploy/base/webhook.yaml differs from inject.WebhookConfiguration:\n--- deploy\n%s\n--- inject\n%s", a, b)
	}
}

func ptr[T any](v T) *T { return &v }

func TestEdgeOverlayRenders(t *testing.T) {
	r := render(t, filepath.Join("overlays", "edge"))
	d := get[*appsv1.Deployment](t, r, "Deployment/"+ns+"/medmesh-controlplane")
	spec := d.Spec.Template.Spec
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("edge control plane: %d replicas, strategy %q; want 1, Recreate", *d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	if spec.NodeSelector["node-type"] != "edge" {
		t.Errorf("edge control plane node selector = %v", spec.NodeSelector)
	}
	if spec.Affinity != nil {
		t.Errorf("edge control plane keeps affinity %+v", spec.Affinity)
	}
	cp := spec.Containers[0]
	if !slices.Contains(cp.Args, "--state-dir=/var/lib/medmesh") {
		t.Errorf("edge control plane args lack --state-dir: %v", cp.Args)
	}
	if !slices.Contains(cp.Args, "--webhook-listen=:15443") {
		t.Error("the overlay lost the base's args")
	}
	var mounted bool
	for _, m := range cp.VolumeMounts {
		mounted = mounted || (m.Name == "state" && m.MountPath == "/var/lib/medmesh")
	}
	var claim string
	for _, v := range spec.Volumes {
		if v.Name == "state" && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if !mounted || claim == "" {
		t.Fatalf("state dir: mounted %v, claim %q; want /var/lib/medmesh on a PVC", mounted, claim)
	}
	get[*corev1.PersistentVolumeClaim](t, r, "PersistentVolumeClaim/"+ns+"/"+claim)
	if _, ok := r.objects["PodDisruptionBudget/"+ns+"/medmesh-controlplane"]; ok {
		t.Error("edge keeps a PodDisruptionBudget of 1 available for a single replica: drains would block")
	}

	c := get[*appsv1.StatefulSet](t, r, "StatefulSet/"+ns+"/consul")
	if c.Spec.Template.Spec.NodeSelector["node-type"] != "edge" {
		t.Errorf("edge Consul node selector = %v", c.Spec.Template.Spec.NodeSelector)
	}
	// What medmesh itself takes from a 4-core / 8 GB node leaves most of
	// it to clinical workloads: at most 2 cores and 2 GiB, all limits.
	var cpu, mem resource.Quantity
	for _, ctr := range append(spec.Containers, c.Spec.Template.Spec.Containers...) {
		l := ctr.Resources.Limits
		if l.Cpu().IsZero() || l.Memory().IsZero() {
			t.Errorf("edge container %s has no CPU or memory limit", ctr.Name)
		}
		cpu.Add(*l.Cpu())
		mem.Add(*l.Memory())
	}
	if cpu.Cmp(resource.MustParse("2")) > 0 || mem.Cmp(resource.MustParse("2Gi")) > 0 {
		t.Errorf("medmesh limits on an edge node: %s CPU, %s memory; want at most 2 and 2Gi", cpu.String(), mem.String())
	}
	if !bytes.Contains(r.yaml, []byte("node-type: edge")) {
		t.Error("rendered YAML lacks the edge node selector")
	}
}

// TestCRDKustomizationListsEveryCRD: deploy/crds/Kustomization must name
// every generated CRD, or a new policy kind would be left out of deploy.
func TestCRDKustomizationListsEveryCRD(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("crds", "Kustomization"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("crds/*.yaml")
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	slices.Sort(names)
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	if !slices.Equal(got, names) {
		t.Errorf("deploy/crds/Kustomization lists %v, deploy/crds holds %v", got, names)
	}
}
