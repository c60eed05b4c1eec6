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
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
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
	return decode(t, dir, m)
}

// decode decodes what kustomize rendered from dir, strictly.
func decode(t *testing.T, dir string, m resmap.ResMap) rendered {
	t.Helper()
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
		"ClusterRole//medmesh-admin-read",
		"ClusterRole//medmesh-admin-operate",
		"ClusterRoleBinding//medmesh-controlplane-auth-delegator",
		"Service/" + ns + "/medmesh-metrics",
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
	for _, name := range []string{"medmesh-xds", "medmesh-admin", "medmesh-metrics", "medmesh-webhook"} {
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
	assertAdminAuth(t, r, d)
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
	assertSite(t, r, "unnamed-edge-site")
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
	// Edge sites dial out to the hub (they are behind NAT): nothing of
	// theirs is exposed outside the cluster.
	for k, o := range r.objects {
		if s, ok := o.(*corev1.Service); ok && s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("edge %s is of type %s", k, s.Spec.Type)
		}
	}
	if !bytes.Contains(r.yaml, []byte("node-type: edge")) {
		t.Error("rendered YAML lacks the edge node selector")
	}
}

// assertSite checks what makes a rendered tree one site of the network
// (components/site): the site's name written once, in the ConfigMap
// medmesh-site, and read from there by the control plane (--site) and by
// Consul (-datacenter), which must agree since medmesh takes a peer's site
// from its Consul datacenter; the control plane signing with the site's
// intermediate CA copied from the Secret medmesh-site-ca; Consul serving
// gRPC over TLS (which peering requires) with the Secret
// consul-server-tls.
func assertSite(t *testing.T, r rendered, wantSite string) {
	t.Helper()
	cm := siteConfigMap(t, r)
	if got := cm.Data["site"]; got != wantSite {
		t.Errorf("ConfigMap %s: site = %q, want %q", cm.Name, got, wantSite)
	}
	d := get[*appsv1.Deployment](t, r, "Deployment/"+ns+"/medmesh-controlplane")
	spec := d.Spec.Template.Spec
	cp := spec.Containers[0]
	assertEnvFromSite(t, "control plane", cp, cm.Name)
	if got := flagValues(cp.Args, "--site"); !slices.Equal(got, []string{"$(MEDMESH_SITE)"}) {
		t.Errorf("control plane --site = %q, want exactly [$(MEDMESH_SITE)]", got)
	}
	if got := flagValues(cp.Args, "--peer-stale-grace"); len(got) != 1 {
		t.Errorf("control plane --peer-stale-grace = %q, want one", got)
	} else if _, err := time.ParseDuration(got[0]); err != nil {
		t.Errorf("control plane --peer-stale-grace: %v", err)
	}

	// The CA flags name files the init container copied from the
	// intermediate's Secret into the volume the control plane mounts; the
	// key mode 0600 (medmesh refuses a key others can read).
	secretMount, secret := secretVolumeMount(t, spec, initContainer(t, spec, "ca-key"))
	if secret != "medmesh-site-ca" {
		t.Errorf("the CA init container copies from Secret %q, want medmesh-site-ca", secret)
	}
	copies := installs(t, initContainer(t, spec, "ca-key"))
	for flag, want := range map[string]struct{ key, mode string }{
		"--ca-cert":   {"intermediate.pem", "0644"},
		"--ca-key":    {"intermediate-key.pem", "0600"},
		"--ca-bundle": {"bundle.pem", "0644"},
	} {
		vals := flagValues(cp.Args, flag)
		if len(vals) != 1 {
			t.Errorf("control plane %s = %q, want exactly one", flag, vals)
			continue
		}
		path := vals[0]
		_, used := mountOf(spec, cp, path)
		_, written := mountOf(spec, initContainer(t, spec, "ca-key"), path)
		if used == nil || written == nil || used.Name != written.Name {
			t.Errorf("control plane %s=%s: the control plane reads volume %+v there, the init container writes %+v", flag, path, used, written)
		}
		c, ok := copies[path]
		switch {
		case !ok:
			t.Errorf("control plane %s=%s: the init container does not write it (it writes %v)", flag, path, copies)
		case c.src != secretMount+"/"+want.key || c.mode != want.mode:
			t.Errorf("control plane %s=%s is copied from %s mode %s; want %s/%s mode %s", flag, path, c.src, c.mode, secretMount, want.key, want.mode)
		}
	}

	ss := get[*appsv1.StatefulSet](t, r, "StatefulSet/"+ns+"/consul")
	consul := ss.Spec.Template.Spec.Containers[0]
	assertEnvFromSite(t, "Consul", consul, cm.Name)
	for _, a := range []string{"-datacenter=$(MEDMESH_SITE)", "-grpc-tls-port=8503"} {
		if !slices.Contains(consul.Args, a) {
			t.Errorf("Consul args lack %s: %q", a, consul.Args)
		}
	}
	// tls { grpc { ca_file cert_file key_file } }, every file in the
	// mounted Secret consul-server-tls.
	var hcl string
	for _, v := range flagValues(consul.Args, "-hcl") {
		if strings.Contains(v, "grpc") {
			hcl = v
		}
	}
	tlsFiles := regexp.MustCompile(`(ca_file|cert_file|key_file)\s*=\s*"([^"]+)"`).FindAllStringSubmatch(hcl, -1)
	if !strings.HasPrefix(strings.TrimSpace(hcl), "tls {") || len(tlsFiles) != 3 {
		t.Errorf("Consul has no tls { grpc { ca_file cert_file key_file } } config: %q", consul.Args)
	}
	for _, f := range tlsFiles {
		m, v := mountOf(ss.Spec.Template.Spec, consul, f[2])
		if v == nil || v.Secret == nil || v.Secret.SecretName != "consul-server-tls" {
			t.Errorf("Consul %s %s is not in the mounted Secret consul-server-tls (mount %+v, volume %+v)", f[1], f[2], m, v)
		}
	}
	var port bool
	for _, p := range consul.Ports {
		port = port || (p.Name == "grpc-tls" && p.ContainerPort == 8503)
	}
	if !port {
		t.Errorf("Consul declares no grpc-tls port 8503: %+v", consul.Ports)
	}
	if !servicePort(get[*corev1.Service](t, r, "Service/"+ns+"/consul"), 8503, "grpc-tls") {
		t.Error("Service consul does not expose 8503 (grpc-tls)")
	}
}

// siteConfigMap is the one generated ConfigMap medmesh-site-<hash>.
func siteConfigMap(t *testing.T, r rendered) *corev1.ConfigMap {
	t.Helper()
	var found []*corev1.ConfigMap
	for k, o := range r.objects {
		if cm, ok := o.(*corev1.ConfigMap); ok && strings.HasPrefix(k, "ConfigMap/"+ns+"/medmesh-site-") {
			found = append(found, cm)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one ConfigMap medmesh-site-<hash> in %s, have %d: %v", ns, len(found), keys(r))
	}
	return found[0]
}

func assertEnvFromSite(t *testing.T, what string, c corev1.Container, configMap string) {
	t.Helper()
	for _, e := range c.Env {
		if e.Name != "MEDMESH_SITE" {
			continue
		}
		if ref := e.ValueFrom; ref == nil || ref.ConfigMapKeyRef == nil || ref.ConfigMapKeyRef.Name != configMap || ref.ConfigMapKeyRef.Key != "site" ||
			(ref.ConfigMapKeyRef.Optional != nil && *ref.ConfigMapKeyRef.Optional) {
			t.Errorf("%s: MEDMESH_SITE = %+v, want the required key site of ConfigMap %s", what, e, configMap)
		}
		return
	}
	t.Errorf("%s has no env var MEDMESH_SITE (its arguments' $(MEDMESH_SITE) would stay as written)", what)
}

// flagValues returns the values of every --name=value in args.
func flagValues(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

func initContainer(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.InitContainers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no init container %s", name)
	return corev1.Container{}
}

// mountOf finds the mount of c holding path, and its volume.
func mountOf(spec corev1.PodSpec, c corev1.Container, path string) (*corev1.VolumeMount, *corev1.Volume) {
	for i, m := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			for j, v := range spec.Volumes {
				if v.Name == m.Name {
					return &c.VolumeMounts[i], &spec.Volumes[j]
				}
			}
			return &c.VolumeMounts[i], nil
		}
	}
	return nil, nil
}

// secretVolumeMount is where c mounts a Secret volume, and the Secret.
func secretVolumeMount(t *testing.T, spec corev1.PodSpec, c corev1.Container) (string, string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return m.MountPath, v.Secret.SecretName
			}
		}
	}
	t.Fatalf("init container %s mounts no Secret", c.Name)
	return "", ""
}

type install struct{ src, mode string }

// installs reads an init container's `sh -ec "install -m MODE [-o U -g
// G] SRC DST && ..."`: destination -> source and mode.
func installs(t *testing.T, c corev1.Container) map[string]install {
	t.Helper()
	if len(c.Command) != 3 || c.Command[0] != "sh" || c.Command[1] != "-ec" {
		t.Fatalf("init container %s: command %q, want [sh -ec SCRIPT]", c.Name, c.Command)
	}
	out := map[string]install{}
	for _, step := range strings.Split(c.Command[2], "&&") {
		f := strings.Fields(step)
		if len(f) == 0 || f[0] != "install" {
			t.Fatalf("init container %s: step %q is not an install", c.Name, step)
		}
		var in install
		var files []string
		for i := 1; i < len(f); i++ {
			switch f[i] {
			case "-m":
				i++
				in.mode = f[i]
			case "-o", "-g":
				i++
			default:
				files = append(files, f[i])
			}
		}
		if len(files) != 2 {
			t.Fatalf("init container %s: step %q: want install SRC DST", c.Name, step)
		}
		in.src = files[0]
		out[files[1]] = in
	}
	return out
}

func servicePort(s *corev1.Service, port int32, target string) bool {
	for _, p := range s.Spec.Ports {
		if p.Port == port && p.TargetPort.StrVal == target {
			return true
		}
	}
	return false
}

func TestHubOverlayRenders(t *testing.T) {
	r := render(t, filepath.Join("overlays", "hub"))
	assertSite(t, r, "hub")
	d := get[*appsv1.Deployment](t, r, "Deployment/"+ns+"/medmesh-controlplane")
	if *d.Spec.Replicas != 2 {
		t.Errorf("hub control plane replicas = %d, want the base's 2", *d.Spec.Replicas)
	}
	if d.Spec.Template.Spec.Affinity == nil || d.Spec.Template.Spec.Affinity.PodAntiAffinity == nil {
		t.Error("hub control plane lost the base's anti-affinity")
	}
	get[*policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget/"+ns+"/medmesh-controlplane")
	if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--webhook-listen=:15443") {
		t.Error("the overlay lost the base's args")
	}
	if a := flagValues(d.Spec.Template.Spec.Containers[0].Args, "--state-dir"); len(a) != 0 {
		t.Errorf("hub control plane has --state-dir %q: two replicas would share it", a)
	}

	// Edge sites dial the hub's Consul to peer: a LoadBalancer on its gRPC
	// TLS port, selecting the Consul server's pods.
	lb := get[*corev1.Service](t, r, "Service/"+ns+"/consul-peering")
	if lb.Spec.Type != corev1.ServiceTypeLoadBalancer || !servicePort(lb, 8503, "grpc-tls") {
		t.Errorf("consul-peering: type %s, ports %+v; want a LoadBalancer exposing 8503 -> grpc-tls", lb.Spec.Type, lb.Spec.Ports)
	}
	ss := get[*appsv1.StatefulSet](t, r, "StatefulSet/"+ns+"/consul")
	if !reflect.DeepEqual(lb.Spec.Selector, ss.Spec.Selector.MatchLabels) {
		t.Errorf("consul-peering selects %v, Consul's pods are %v", lb.Spec.Selector, ss.Spec.Selector.MatchLabels)
	}
}

// TestPerSiteDirectory: the README's way of running many edge sites, a
// directory per site that includes the edge overlay and replaces the
// site's name, names the site in both the control plane and Consul.
func TestPerSiteDirectory(t *testing.T) {
	r := renderSite(t, "clinic-a")
	assertSite(t, r, "clinic-a")
	if d := get[*appsv1.Deployment](t, r, "Deployment/"+ns+"/medmesh-controlplane"); *d.Spec.Replicas != 1 {
		t.Error("the site lost the edge overlay")
	}
}

// renderSite renders deploy/sites/<site>, a directory made as the README
// says (on a copy of deploy/ in memory).
func renderSite(t *testing.T, site string) rendered {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	for _, dir := range []string{"base", "crds", "components", "overlays"} {
		err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return fs.WriteFile(filepath.Join("/deploy", p), b)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	k := `resources: [../../overlays/edge]
configMapGenerator:
  - name: medmesh-site
    namespace: medmesh-system
    behavior: replace
    literals: [site=` + site + `]
`
	dir := "/deploy/sites/" + site
	if err := fs.WriteFile(dir+"/kustomization.yaml", []byte(k)); err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	return decode(t, dir, m)
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
