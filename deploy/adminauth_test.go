package deploy

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"medmesh/controlplane/adminauth"
)

// assertAdminAuth: who may read and who may act, as deployed. Probes and
// Prometheus use the metrics port (no credentials), the admin API is on
// the TLS port with Kubernetes tokens accepted, the plain admin port stays
// on the pod's loopback, the NetworkPolicy opens metrics and the TLS port
// (and nothing to 15000), and the ClusterRoles grant exactly the
// attributes adminauth asks the SubjectAccessReview about.
func assertAdminAuth(t *testing.T, r rendered, d *appsv1.Deployment) {
	t.Helper()
	cp := d.Spec.Template.Spec.Containers[0]
	args := strings.Join(cp.Args, " ")
	for _, a := range []string{"--admin-listen=127.0.0.1:15000", "--admin-tls-listen=:15002", "--metrics-listen=:15020", "--admin-kube-auth",
		"--admin-tls-dns=medmesh-admin.medmesh-system.svc,"} {
		if !strings.Contains(args, a) {
			t.Errorf("control plane args lack %q: %s", a, args)
		}
	}
	for name, p := range map[string]*corev1.Probe{"readiness": cp.ReadinessProbe, "liveness": cp.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "http-metrics" {
			t.Errorf("%s probe %+v: want an HTTP GET on the metrics port (no credentials needed)", name, p)
		}
	}
	if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "15020" {
		t.Errorf("pod annotations %v: want Prometheus to scrape port 15020", a)
	}
	if a := get[*corev1.Service](t, r, "Service/"+ns+"/medmesh-metrics").Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "15020" {
		t.Errorf("medmesh-metrics annotations %v: want Prometheus to scrape port 15020", a)
	}

	np := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy/"+ns+"/medmesh-controlplane")
	open := map[int32]bool{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if len(rule.From) == 0 {
				open[p.Port.IntVal] = true
			}
			if p.Port.IntVal == 15000 {
				t.Errorf("NetworkPolicy admits the plain admin port 15000 (%+v)", rule)
			}
		}
	}
	for _, p := range []int32{15010, 15443, 15020, 15002} {
		if !open[p] {
			t.Errorf("NetworkPolicy does not admit port %d from everywhere: %+v", p, np.Spec.Ingress)
		}
	}

	for role, verbs := range map[string][]string{
		"medmesh-admin-read":    {adminauth.KubeVerbRead},
		"medmesh-admin-operate": {adminauth.KubeVerbRead, adminauth.KubeVerbOperate},
	} {
		cr := get[*rbacv1.ClusterRole](t, r, "ClusterRole//"+role)
		if len(cr.Rules) != 1 || !slices.Equal(cr.Rules[0].APIGroups, []string{adminauth.KubeGroup}) ||
			!slices.Equal(cr.Rules[0].Resources, []string{adminauth.KubeResource}) || !slices.Equal(cr.Rules[0].Verbs, verbs) {
			t.Errorf("ClusterRole %s rules %+v: want %v on %s.%s only", role, cr.Rules, verbs, adminauth.KubeResource, adminauth.KubeGroup)
		}
	}
	crb := get[*rbacv1.ClusterRoleBinding](t, r, "ClusterRoleBinding//medmesh-controlplane-auth-delegator")
	if crb.RoleRef.Name != "system:auth-delegator" || crb.Subjects[0].Name != "medmesh-controlplane" || crb.Subjects[0].Namespace != ns {
		t.Errorf("auth-delegator binding %+v: want system:auth-delegator for the control plane's ServiceAccount", crb)
	}
}
