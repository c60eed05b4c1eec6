package adminauth

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"medmesh/internal/kubetest"
)

// TestKubeTokenReviewAndSAR runs the bearer-token path against a real
// kube-apiserver with RBAC: the ClusterRoles are deploy/'s own, bound to
// one ServiceAccount each; a third ServiceAccount is bound to nothing.
func TestKubeTokenReviewAndSAR(t *testing.T) {
	_, kc := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, cr := range deployClusterRoles(t) {
		if _, err := kc.RbacV1().ClusterRoles().Create(ctx, &cr, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	token := map[string]string{}
	for _, sa := range []struct{ name, role string }{{"sre", "medmesh-admin-read"}, {"oncall", "medmesh-admin-operate"}, {"nobody", ""}} {
		if _, err := kc.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.name}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if sa.role != "" {
			_, err := kc.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: sa.name},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: sa.role},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.name, Namespace: "default"}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
		token[sa.name] = saToken(ctx, t, kc, sa.name)
	}

	// RBAC's authorizer learns bindings from an informer: wait until it
	// has both, so the table below tests decisions, not propagation.
	deadline := time.Now().Add(30 * time.Second)
	for _, w := range []struct {
		sa   string
		role Role
	}{{"sre", RoleRead}, {"oncall", RoleOperate}} {
		for {
			p, err := (&Kube{Client: kc}).review(ctx, token[w.sa])
			if err == nil && p.Role == w.role {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never got role %s (last: %v, %v)", w.sa, w.role, p.Role, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	f := newFixture(t, &Guard{Authenticators: []Authenticator{&Kube{Client: kc}}})
	c := f.client(t, nil) // TLS, no client certificate: the token is the credential
	bearer := func(name string) []string { return []string{"Authorization", "Bearer " + token[name]} }
	for _, tc := range []struct {
		who, method, path string
		want              int
	}{
		{"sre", "GET", "/debug/proxies", 200},
		{"sre", "GET", "/ui", 200},
		{"sre", "POST", "/join-tokens", 403},
		{"oncall", "GET", "/debug/proxies", 200},
		{"oncall", "POST", "/join-tokens", 200},
		{"nobody", "GET", "/debug/proxies", 403},
		{"nobody", "POST", "/join-tokens", 403},
		{"nobody", "GET", "/metrics", 200},
	} {
		if code, body := call(t, c, tc.method, f.tls+tc.path, bearer(tc.who)...); code != tc.want {
			t.Errorf("%s %s %s: %d %q, want %d", tc.who, tc.method, tc.path, code, body, tc.want)
		}
	}
	// A token Kubernetes did not issue: 401. Over plain HTTP too.
	if code, body := call(t, &http.Client{}, "GET", f.plain+"/debug/proxies", "Authorization", "Bearer not-a-token"); code != 401 ||
		!strings.Contains(body, "did not authenticate") {
		t.Errorf("an unknown token: %d %q, want 401", code, body)
	}
	var got []string
	for _, ev := range f.trailRecords(t) {
		got = append(got, summary(ev))
	}
	for _, want := range []string{
		"system:serviceaccount:default:sre POST admin /join-tokens 403",
		"system:serviceaccount:default:oncall POST admin /join-tokens 200",
		"system:serviceaccount:default:nobody GET admin /debug/proxies 403",
		"unauthenticated GET admin /debug/proxies 401",
	} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("audit trail lacks %q; it has:\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, tok := range token {
		if bytes.Contains([]byte(f.logs.String()), []byte(tok)) {
			t.Fatal("a bearer token appears in the log")
		}
	}
	checkKubeCache(ctx, t, kc, token["nobody"])
}

// checkKubeCache: a decision is reused for the TTL (no new review sees a
// new binding), and asked again after it.
func checkKubeCache(ctx context.Context, t *testing.T, kc kubernetes.Interface, tok string) {
	now := time.Now()
	k := &Kube{Client: kc, CacheTTL: time.Minute, Now: func() time.Time { return now }}
	role := func() Role {
		r, _ := http.NewRequestWithContext(ctx, "GET", "http://x/debug/proxies", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		p, ok, err := k.Authenticate(r)
		if !ok || err != nil {
			t.Fatalf("Authenticate: ok=%v err=%v", ok, err)
		}
		return p.Role
	}
	if r := role(); r != RoleNone {
		t.Fatalf("unbound service account has role %s", r)
	}
	if _, err := kc.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "nobody-promoted"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "medmesh-admin-operate"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "nobody", Namespace: "default"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := role(); r != RoleNone {
		t.Errorf("within the TTL the cached decision should stand, got %s", r)
	}
	now = now.Add(2 * time.Minute)
	// RBAC's authorizer reads bindings from an informer: poll until it
	// has seen the new one.
	deadline := time.Now().Add(30 * time.Second)
	for r := role(); r != RoleOperate; r = role() {
		if time.Now().After(deadline) {
			t.Fatalf("after the TTL, a service account bound to medmesh-admin-operate has role %s, want operate", r)
		}
		now = now.Add(2 * time.Minute)
		time.Sleep(50 * time.Millisecond)
	}
}

func saToken(ctx context.Context, t *testing.T, kc kubernetes.Interface, sa string) string {
	t.Helper()
	tr, err := kc.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// deployClusterRoles reads the ClusterRoles deploy/ ships for the admin API.
func deployClusterRoles(t *testing.T) []rbacv1.ClusterRole {
	t.Helper()
	b, err := os.ReadFile("../../deploy/base/admin-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []rbacv1.ClusterRole
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var cr rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict([]byte(doc), &cr); err != nil {
			continue // the binding
		}
		if cr.Kind == "ClusterRole" {
			out = append(out, cr)
		}
	}
	if len(out) != 2 {
		t.Fatalf("deploy/base/admin-rbac.yaml: %d ClusterRoles, want medmesh-admin-read and medmesh-admin-operate", len(out))
	}
	return out
}
