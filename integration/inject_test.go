package integration

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/consul/api"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"medmesh/api/wire"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/attest"
	"medmesh/controlplane/identity"
	"medmesh/controlplane/inject"
	"medmesh/internal/kubetest"
	"medmesh/internal/testutil"
)

// TestInjectedPodJoinsTheMesh follows a pod from admission to the mesh
// with real components where this machine has them: a real kube-apiserver
// calls the injection webhook; the injected init container's and
// sidecar's own arguments are then run with the medmesh binary as the
// kubelet would run them (downward-API variables expanded, the projected
// token written from a TokenRequest with the volume's audience and
// expiry). The bootstrap init step writes Envoy's bootstrap; the sidecar
// registers the pod in the real Consul, proves the pod's service account
// to the control plane (TokenReview against the API server) and receives
// the SVID of ns/clinical/svc/emr; stopping it deregisters the pod.
// Not run: the iptables init container (needs root in a pod's network
// namespace) and Envoy (no binary here; its /ready is stood in for).
func TestInjectedPodJoinsTheMesh(t *testing.T) {
	bin := buildMedmesh(t)
	_, kc := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()

	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) {
		o.Identities = ca
		o.Attestors = map[wire.ProofKind]identity.Attestor{wire.ProofKubernetes: &attest.Kubernetes{Client: kc}}
	})

	srv, err := inject.Listen(inject.ServerOptions{Listen: "127.0.0.1:0", Certs: ca, Hosts: []string{"127.0.0.1"},
		Config: inject.Config{XDSAddress: cp.xdsAddr(), ConsulAddress: "http://" + consul.Addr(), Version: "e2e"},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx)
	mwc := inject.WebhookConfiguration(func(path string) admissionregistrationv1.WebhookClientConfig {
		url := fmt.Sprintf("https://%s%s", srv.Addr(), path)
		return admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca.BundlePEM()}
	})
	if _, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "clinical",
		Labels: map[string]string{inject.LabelNamespace: "enabled"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().ServiceAccounts("clinical").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "emr"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The app: a listener on the port the pod declares.
	app := testutil.ListeningApp(t)
	appPort := app.Addr().(*net.TCPAddr).Port
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "emr-0", Annotations: map[string]string{"medmesh.io/kind": "emr"}},
		Spec: corev1.PodSpec{ServiceAccountName: "emr", Containers: []corev1.Container{{Name: "emr", Image: "emr:1",
			Ports: []corev1.ContainerPort{{ContainerPort: int32(appPort)}}}}}}
	var created *corev1.Pod
	// Webhook configurations reach the API server's admission chain
	// asynchronously: dry-run until the webhook answers.
	eventually(t, "the webhook to inject a dry-run pod", func() error {
		p, err := kc.CoreV1().Pods("clinical").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		if p.Annotations[inject.AnnotationInjected] == "" {
			return fmt.Errorf("not injected yet")
		}
		return nil
	})
	if created, err = kc.CoreV1().Pods("clinical").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	kubelet := podRunner{pod: created, env: map[string]string{"POD_NAME": "emr-0", "POD_NAMESPACE": "clinical", "POD_IP": "127.0.0.1"},
		mounts: map[string]string{}}
	for _, v := range created.Spec.Volumes {
		kubelet.mounts[v.Name] = filepath.Join(dir, v.Name)
		os.MkdirAll(kubelet.mounts[v.Name], 0o700)
		if p := v.Projected; p != nil {
			// As the kubelet projects it: a token for the pod's service
			// account with the volume's audience and expiry.
			src := p.Sources[0].ServiceAccountToken
			tr, err := kc.CoreV1().ServiceAccounts("clinical").CreateToken(ctx, "emr", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
				Audiences: []string{src.Audience}, ExpirationSeconds: src.ExpirationSeconds}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("token for volume %s: %v", v.Name, err)
			}
			os.WriteFile(filepath.Join(kubelet.mounts[v.Name], src.Path), []byte(tr.Status.Token), 0o600)
		}
	}

	// Init step: medmesh bootstrap writes Envoy's bootstrap for this pod.
	boot := kubelet.container(t, created.Spec.InitContainers, inject.ContainerBootstrap, nil)
	if out, err := exec.CommandContext(ctx, bin, boot...).CombinedOutput(); err != nil {
		t.Fatalf("bootstrap init container: %v\n%s", err, out)
	}
	envoyYAML, err := os.ReadFile(filepath.Join(kubelet.mounts[inject.VolumeBootstrap], "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"id: emr-0.clinical", "cluster: emr", strconv.Itoa(cp.cp.XDSAddr().(*net.TCPAddr).Port)} {
		if !strings.Contains(string(envoyYAML), want) {
			t.Errorf("Envoy bootstrap lacks %q:\n%s", want, envoyYAML)
		}
	}

	// Envoy is not here; its admin /ready answers for it.
	envoyReady := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer envoyReady.Close()
	args := kubelet.container(t, created.Spec.Containers, inject.ContainerSidecar, map[string]string{
		"--extproc-listen": fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--health-listen": fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--envoy-ready-url": envoyReady.URL + "/ready", "--check-ttl": "1s",
	})
	sidecarLog := &syncBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = sidecarLog, sidecarLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("sidecar log:\n%s", sidecarLog.String())
		}
	})

	instance := func() (*api.ServiceEntry, error) {
		entries, _, err := consul.Client().Health().Service("emr", "", false, nil)
		if err != nil {
			return nil, err
		}
		if len(entries) != 1 {
			return nil, fmt.Errorf("%d instances of emr in Consul", len(entries))
		}
		return entries[0], nil
	}
	eventually(t, "the pod registered and passing in Consul", func() error {
		e, err := instance()
		if err != nil {
			return err
		}
		if st := e.Checks.AggregatedStatus(); st != api.HealthPassing {
			return fmt.Errorf("check %s", st)
		}
		return nil
	})
	e, _ := instance()
	if e.Service.ID != "emr-0.clinical" || e.Service.Port != inject.InboundPort || e.Service.Address != "127.0.0.1" {
		t.Errorf("registered %s at %s:%d, want emr-0.clinical at the pod IP and port %d", e.Service.ID, e.Service.Address, e.Service.Port, inject.InboundPort)
	}
	if e.Service.Meta["medmesh-kind"] != "emr" || e.Service.Meta["medmesh-namespace"] != "clinical" || e.Service.Meta["medmesh-app-port"] != strconv.Itoa(appPort) {
		t.Errorf("meta = %v", e.Service.Meta)
	}

	svidFile := filepath.Join(kubelet.mounts[inject.VolumeSVID], certs.SVIDCertFile)
	eventually(t, "the pod's SVID, proven by its service-account token", func() error {
		b, err := os.ReadFile(svidFile)
		if err != nil {
			return err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return fmt.Errorf("%s holds no PEM", svidFile)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return err
		}
		if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://medmesh.local/ns/clinical/svc/emr" {
			return fmt.Errorf("SVID for %v", c.URIs)
		}
		return nil
	})

	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Fatalf("sidecar exit: %v", err)
	}
	if _, err := instance(); err == nil {
		t.Error("the pod is still registered after its sidecar stopped")
	}
}

// podRunner stands in for the kubelet: it turns a container of the pod
// into a command line for the medmesh binary.
type podRunner struct {
	pod    *corev1.Pod
	env    map[string]string // downward API values
	mounts map[string]string // volume name -> host directory
}

// container returns name's arguments with $(VAR) expanded and volume
// paths mapped to their host directories; override replaces the values
// of flags whose fixed ports or URLs cannot be used on a shared machine.
func (k *podRunner) container(t *testing.T, cs []corev1.Container, name string, override map[string]string) []string {
	t.Helper()
	i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("pod has no container %s", name)
	}
	c := cs[i]
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			t.Fatalf("container %s: env %s is not from the downward API", name, e.Name)
		}
	}
	args := slices.Clone(c.Args)
	for i, a := range args {
		for k, v := range k.env {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(a, m.MountPath) {
				a = k.mounts[m.Name] + strings.TrimPrefix(a, m.MountPath)
			}
		}
		if i > 0 {
			if v, ok := override[args[i-1]]; ok {
				a = v
			}
		}
		args[i] = a
	}
	for flag := range override {
		if !slices.Contains(args, flag) {
			args = append(args, flag, override[flag])
		}
	}
	return args
}

// buildMedmesh builds the medmesh binary the injected containers run.
func buildMedmesh(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "medmesh")
	out, err := exec.Command("go", "build", "-o", bin, "medmesh/cmd/medmesh").CombinedOutput()
	if err != nil {
		t.Fatalf("building medmesh: %v\n%s", err, out)
	}
	return bin
}
