package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"medmesh/controlplane/inject"
	"medmesh/internal/testutil"
)

// TestControlPlaneServesWebhook runs `medmesh controlplane --webhook-listen`
// and posts an AdmissionReview as the API server would: the serving
// certificate verifies against the CA bundle written by --webhook-ca-file
// for the --webhook-dns name, and the pod comes back as a JSON patch
// adding the mesh, configured by the --inject-* flags.
func TestControlPlaneServesWebhook(t *testing.T) {
	dir := t.TempDir()
	cat := filepath.Join(dir, "catalog.yaml")
	os.WriteFile(cat, []byte("services: []\n"), 0o600)
	caFile := filepath.Join(dir, "webhook-ca.pem")
	addr := testutil.FreeAddr(t)
	var stderr testutil.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"controlplane", "--consul", "", "--catalog", cat, "--state-dir", filepath.Join(dir, "state"),
			"--xds-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
			"--webhook-listen", addr, "--webhook-dns", "127.0.0.1, medmesh-webhook.medmesh-system.svc", "--webhook-ca-file", caFile,
			"--inject-image", "medmesh/medmesh:cmdtest", "--inject-consul", "http://consul:8500"}, &bytes.Buffer{}, &stderr)
	}()
	var pool *x509.CertPool
	testutil.Poll(t, 15*time.Second, "the CA bundle file", func() bool {
		b, err := os.ReadFile(caFile)
		pool = x509.NewCertPool()
		return err == nil && pool.AppendCertsFromPEM(b)
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "medmesh-webhook.medmesh-system.svc"}}}

	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "emr-0", Namespace: "clinical"},
		Spec: corev1.PodSpec{ServiceAccountName: "emr", Containers: []corev1.Container{{Name: "emr", Image: "emr:1",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}}}
	raw, _ := json.Marshal(pod)
	review, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Operation: admissionv1.Create,
			Namespace: "clinical", Object: runtime.RawExtension{Raw: raw}},
	})
	var resp *http.Response
	testutil.Poll(t, 15*time.Second, "the webhook to answer over TLS", func() bool {
		var err error
		resp, err = client.Post("https://"+addr+inject.PathNamespace, "application/json", bytes.NewReader(review))
		return err == nil
	})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil || out.Response == nil {
		t.Fatalf("response %d is no AdmissionReview: %v\n%s", resp.StatusCode, err, body)
	}
	if !out.Response.Allowed || out.Response.UID != "u-1" || out.Response.PatchType == nil {
		t.Fatalf("response: %+v", out.Response)
	}
	patch := string(out.Response.Patch)
	for _, want := range []string{inject.ContainerEnvoy, inject.ContainerSidecar, "medmesh/medmesh:cmdtest", "http://consul:8500", `"medmesh.io/injected":"dev"`} {
		if !strings.Contains(patch, want) {
			t.Errorf("patch lacks %q:\n%s", want, patch)
		}
	}
	// The bundle is also served by the webhook itself.
	r, err := client.Get("https://" + addr + inject.PathCA)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if file, _ := os.ReadFile(caFile); !bytes.Equal(served, file) {
		t.Error("GET /ca.pem differs from --webhook-ca-file")
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // caught by the command's NotifyContext
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
}

func TestWebhookNeedsTheCA(t *testing.T) {
	cat := filepath.Join(t.TempDir(), "catalog.yaml")
	os.WriteFile(cat, []byte("services: []\n"), 0o600)
	code, _, stderr := runCmd("controlplane", "--consul", "", "--catalog", cat, "--mtls=false", "--webhook-listen", "127.0.0.1:0")
	if code != 2 || !strings.Contains(stderr, "--webhook-listen needs mTLS") {
		t.Errorf("webhook without a CA: code %d, stderr %q", code, stderr)
	}
}
