package controlplane_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/adminauth"
	"medmesh/internal/kubetest"
	"medmesh/registry"
)

// TestAdminAuthWiring runs a control plane whose admin API accepts
// Kubernetes tokens (a real kube-apiserver with RBAC) and has a
// metrics-only port: the wiring from Options.AdminAuth to the guard on
// the real handlers, which adminauth's own tests check in isolation.
func TestAdminAuthWiring(t *testing.T) {
	_, kc := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A reader: get on controlplanes.medmesh.io, as deploy/'s medmesh-admin-read.
	if _, err := kc.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{adminauth.KubeGroup}, Resources: []string{adminauth.KubeResource},
			Verbs: []string{adminauth.KubeVerbRead}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sre"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "sre"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "sre", Namespace: "default"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC learns bindings from an informer: wait until it allows, so a
	// denial is not cached by the control plane before that.
	waitFor(t, func() error {
		sar, err := kc.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: "system:serviceaccount:default:sre", Groups: []string{"system:serviceaccounts"},
			ResourceAttributes: &authzv1.ResourceAttributes{Group: adminauth.KubeGroup, Resource: adminauth.KubeResource, Verb: adminauth.KubeVerbRead},
		}}, metav1.CreateOptions{})
		if err == nil && !sar.Status.Allowed {
			err = errors.New("not allowed yet")
		}
		return err
	})
	tr, err := kc.CoreV1().ServiceAccounts("default").CreateToken(ctx, "sre", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	catalog := filepath.Join(dir, "catalog.yaml")
	writeFile(t, catalog, "services: []\n")
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cp, err := controlplane.New(controlplane.Options{
		Logger: log, Source: &registry.File{Path: catalog, Interval: 20 * time.Millisecond, Logger: log}, Identities: ca,
		XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		AdminAuth: controlplane.AdminAuth{Kube: kc, MetricsListen: "127.0.0.1:0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	admin, metrics := "http://"+cp.AdminAddr().String(), "http://"+cp.MetricsAddr().String()

	do := func(method, url string, token bool) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, url, nil)
		if token {
			req.Header.Set("Authorization", "Bearer "+tr.Status.Token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := do("GET", admin+"/debug/proxies", false); code != http.StatusUnauthorized {
		t.Errorf("GET /debug/proxies without a token: %d, want 401", code)
	}
	if code, body := do("GET", admin+"/debug/proxies", true); code != 200 {
		t.Errorf("the reader's GET /debug/proxies: %d %q, want 200", code, body)
	}
	if code, body := do("POST", admin+"/ca/renew-svids", true); code != http.StatusForbidden || !strings.Contains(body, "system:serviceaccount:default:sre") {
		t.Errorf("the reader's POST /ca/renew-svids: %d %q, want 403 naming the caller", code, body)
	}
	// The metrics port: open routes only, and the admin API's counters.
	code, body := do("GET", metrics+"/metrics", false)
	if code != 200 || !strings.Contains(body, `medmesh_admin_requests_total{outcome="forbidden",role="operate"} 1`) {
		t.Errorf("GET /metrics on the metrics port: %d, want 200 counting the refusal", code)
	}
	if code, _ := do("GET", metrics+"/debug/proxies", true); code != http.StatusNotFound {
		t.Errorf("the metrics port serves /debug/proxies: %d, want 404", code)
	}
	if cp.AdminTLSAddr() != nil {
		t.Error("a TLS admin port without AdminAuth.TLSListen")
	}
}
