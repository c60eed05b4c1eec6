package inject

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"medmesh/certs"
	"medmesh/internal/kubetest"
)

// TestWebhookWithRealAPIServer registers the injector with a real
// kube-apiserver (envtest) through a URL-based MutatingWebhookConfiguration
// and creates pods: the API server itself calls the webhook over TLS
// (verifying the serving certificate against medmesh's CA) and stores
// what it returned. There is no kubelet: no pod ever runs.
func TestWebhookWithRealAPIServer(t *testing.T) {
	_, kc := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ca, err := certs.New(certs.Options{TrustDomain: "hospital.example", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Listen(ServerOptions{Listen: "127.0.0.1:0", Config: testConfig, Certs: ca, Hosts: []string{"127.0.0.1"},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServe := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx) }()
	t.Cleanup(func() {
		stopServe()
		if err := <-served; err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})

	// Installed without a caBundle, then patched as the control plane
	// does at start (and after every CA change: see the rotation case).
	cfg := WebhookConfiguration(func(path string) admissionregistrationv1.WebhookClientConfig {
		url := fmt.Sprintf("https://%s%s", srv.Addr(), path)
		return admissionregistrationv1.WebhookClientConfig{URL: &url}
	})
	if _, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the webhook configuration: %v", err)
	}
	if err := KeepCABundle(ctx, kc, WebhookConfigName, ca.BundlePEM, 50*time.Millisecond, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	got, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range got.Webhooks {
		if string(w.ClientConfig.CABundle) != string(ca.BundlePEM()) || w.ClientConfig.URL == nil {
			t.Fatalf("webhook %s after PatchCABundle: caBundle %d bytes, url %v", w.Name, len(w.ClientConfig.CABundle), w.ClientConfig.URL)
		}
	}

	mkNamespace(ctx, t, kc, "clinical", map[string]string{LabelNamespace: "enabled"})
	mkNamespace(ctx, t, kc, "ops", nil)
	mkNamespace(ctx, t, kc, "research", map[string]string{LabelNamespace: "disabled"})

	// The API server picks up webhook configurations asynchronously:
	// dry-run creates (the webhook has no side effects, so it is called
	// for them) until one comes back injected.
	probe := pod("probe", "emr", nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := kc.CoreV1().Pods("clinical").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && p.Annotations[AnnotationInjected] != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dry-run pod came back injected within 30s (last error: %v)", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the API server, not waiting for a sync
	}

	t.Run("labelled namespace: injected", func(t *testing.T) {
		p, err := kc.CoreV1().Pods("clinical").Create(ctx, pod("", "emr", nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertInjected(t, p, "emr")
		// What was stored, not only what Create returned.
		stored, err := kc.CoreV1().Pods("clinical").Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertInjected(t, stored, "emr")
	})
	t.Run("labelled namespace, opted out: untouched", func(t *testing.T) {
		p, err := kc.CoreV1().Pods("clinical").Create(ctx, pod("", "emr", map[string]string{AnnotationInject: "false"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertUntouched(t, p)
	})
	t.Run("unlabelled namespace: untouched", func(t *testing.T) {
		p, err := kc.CoreV1().Pods("ops").Create(ctx, pod("", "emr", nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertUntouched(t, p)
	})
	t.Run("unlabelled namespace, annotated: injected", func(t *testing.T) {
		p, err := kc.CoreV1().Pods("ops").Create(ctx, pod("", "emr", map[string]string{AnnotationInject: "true"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertInjected(t, p, "emr")
	})
	t.Run("namespace labelled disabled, annotated: untouched", func(t *testing.T) {
		p, err := kc.CoreV1().Pods("research").Create(ctx, pod("", "emr", map[string]string{AnnotationInject: "true"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertUntouched(t, p)
	})
	t.Run("already injected: passes unchanged", func(t *testing.T) {
		res, err := Inject(pod("again", "emr", nil), testConfig)
		if err != nil {
			t.Fatal(err)
		}
		res.Pod.Namespace = "clinical"
		p, err := kc.CoreV1().Pods("clinical").Create(ctx, res.Pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertInjected(t, p, "emr")
		if n := len(p.Spec.Containers); n != 3 {
			t.Errorf("re-injected pod has %d containers, want 3 (app, envoy, sidecar)", n)
		}
		if n := len(p.Spec.InitContainers); n != 2 {
			t.Errorf("re-injected pod has %d init containers, want 2", n)
		}
	})
	t.Run("root rotation: caBundle follows, injection goes on", func(t *testing.T) {
		if err := ca.RotateRoot(time.Hour); err != nil {
			t.Fatal(err)
		}
		want := ca.BundlePEM()
		if strings.Count(string(want), "BEGIN CERTIFICATE") != 2 {
			t.Fatalf("bundle after rotation holds %d roots, want old and new", strings.Count(string(want), "BEGIN CERTIFICATE"))
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			cfg, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfigName, metav1.GetOptions{})
			if err == nil && string(cfg.Webhooks[0].ClientConfig.CABundle) == string(want) && string(cfg.Webhooks[1].ClientConfig.CABundle) == string(want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("caBundle not updated after the root rotation (last error %v)", err)
			}
			time.Sleep(50 * time.Millisecond) // polling the API server
		}
		p, err := kc.CoreV1().Pods("clinical").Create(ctx, pod("", "emr", nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		assertInjected(t, p, "emr")
	})
	t.Run("invalid service annotation: refused naming it", func(t *testing.T) {
		_, err := kc.CoreV1().Pods("clinical").Create(ctx, pod("", "emr", map[string]string{AnnotationService: "Not_A_Name"}), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), AnnotationService) {
			t.Errorf("create = %v, want a refusal naming %s", err, AnnotationService)
		}
	})
}

func mkNamespace(ctx context.Context, t *testing.T, kc kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager here: service accounts are not created for us.
	for _, sa := range []string{"default", "emr"} {
		if _, err := kc.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func pod(name, sa string, annotations map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "emr:1",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
	}
	if name == "" {
		p.GenerateName = "emr-"
	}
	return p
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func assertInjected(t *testing.T, p *corev1.Pod, svc string) {
	t.Helper()
	if got, want := containerNames(p.Spec.Containers), []string{"app", ContainerEnvoy, ContainerSidecar}; !slices.Equal(got, want) {
		t.Errorf("pod %s containers = %v, want %v", p.Name, got, want)
	}
	if got, want := containerNames(p.Spec.InitContainers), []string{ContainerBootstrap, ContainerInit}; !slices.Equal(got, want) {
		t.Errorf("pod %s init containers = %v, want %v", p.Name, got, want)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range p.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, name := range []string{VolumeBootstrap, VolumeSVID, VolumeToken} {
		if _, ok := vols[name]; !ok {
			t.Errorf("pod %s lacks volume %s (has %v)", p.Name, name, p.Spec.Volumes)
		}
	}
	if tok := vols[VolumeToken]; tok.Projected == nil || tok.Projected.Sources[0].ServiceAccountToken.Audience != "medmesh" {
		t.Errorf("pod %s token volume = %+v, want a projected token with audience medmesh", p.Name, tok)
	}
	if p.Annotations[AnnotationInjected] != testConfig.Version || p.Annotations[AnnotationService] != svc {
		t.Errorf("pod %s annotations = %v", p.Name, p.Annotations)
	}
	for _, c := range p.Spec.InitContainers {
		if c.Name == ContainerInit && !slices.Contains(c.SecurityContext.Capabilities.Add, "NET_ADMIN") {
			t.Errorf("pod %s: %s lacks NET_ADMIN", p.Name, ContainerInit)
		}
	}
}

func assertUntouched(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if got := containerNames(p.Spec.Containers); !slices.Equal(got, []string{"app"}) {
		t.Errorf("pod %s containers = %v, want only the app", p.Name, got)
	}
	if len(p.Spec.InitContainers) != 0 || p.Annotations[AnnotationInjected] != "" {
		t.Errorf("pod %s was injected: init containers %v, annotations %v", p.Name, containerNames(p.Spec.InitContainers), p.Annotations)
	}
}
