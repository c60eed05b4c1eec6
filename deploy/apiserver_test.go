package deploy

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"medmesh/internal/kubetest"
)

// TestRenderedManifestsAcceptedByAPIServer creates everything the base,
// the edge overlay and the hub overlay render in a real kube-apiserver
// (envtest), with strict field validation: what kubectl apply would send
// is accepted, schema and all (there is no kubelet or controller: nothing
// runs).
func TestRenderedManifestsAcceptedByAPIServer(t *testing.T) {
	cfg, _ := kubetest.Start(t)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cached := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(cached)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, dir := range []string{"base", filepath.Join("overlays", "edge"), filepath.Join("overlays", "hub")} {
		m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
		if err != nil {
			t.Fatal(err)
		}
		// Kustomize orders CRDs and namespaces first; custom resources
		// would need the CRDs established, but medmesh ships none.
		for _, res := range m.Resources() {
			b, err := res.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(b); err != nil {
				t.Fatal(err)
			}
			gvk := u.GroupVersionKind()
			mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s: %s %s: %v", dir, gvk.Kind, u.GetName(), err)
			}
			var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
			if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
				ri = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
			}
			opts := metav1.CreateOptions{FieldValidation: "Strict"}
			if dir != "base" {
				// The base created the objects; the overlay's versions are
				// checked without replacing them.
				opts.DryRun = []string{metav1.DryRunAll}
				if existing, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{}); err == nil {
					u.SetResourceVersion(existing.GetResourceVersion())
					if _, err := ri.Update(ctx, u, metav1.UpdateOptions{FieldValidation: "Strict", DryRun: []string{metav1.DryRunAll}}); err != nil {
						t.Errorf("%s: API server refuses %s %s/%s: %v", dir, gvk.Kind, u.GetNamespace(), u.GetName(), err)
					}
					continue
				}
			}
			if _, err := ri.Create(ctx, u, opts); err != nil {
				t.Errorf("%s: API server refuses %s %s/%s: %v", dir, gvk.Kind, u.GetNamespace(), u.GetName(), err)
			}
			if gvk.Kind == "CustomResourceDefinition" {
				mapper.Reset()
			}
		}
	}
}
