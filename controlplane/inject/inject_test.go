package inject

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/out from the current injector")

// testConfig is fixed so golden files are stable.
var testConfig = Config{
	MedmeshImage: "medmesh/medmesh:test", ProxyImage: "envoyproxy/envoy:test",
	XDSAddress: "medmesh-xds.medmesh-system.svc:15010", ConsulAddress: "http://consul.medmesh-system.svc:8500",
	TrustDomain: "hospital.example", Version: "test",
}

type goldenIn struct {
	NamespaceEnabled bool       `json:"namespaceEnabled"`
	Pod              corev1.Pod `json:"pod"`
}

type goldenOut struct {
	Decision Decision    `json:"decision"`
	Error    string      `json:"error,omitempty"`
	Warnings []string    `json:"warnings,omitempty"`
	Pod      *corev1.Pod `json:"pod,omitempty"`
}

// TestGolden runs Decide and Inject on testdata/in/<case>.yaml and
// compares with testdata/out/<case>.yaml (-update rewrites them and
// deletes stale ones).
func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/in/*.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	want := map[string]bool{}
	for _, in := range ins {
		name := filepath.Base(in)
		want[name] = true
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			var g goldenIn
			b, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(b, &g); err != nil {
				t.Fatalf("%s: %v", in, err)
			}
			out := goldenOut{Decision: Decide(&g.Pod, g.NamespaceEnabled)}
			if out.Decision.Inject {
				res, err := Inject(&g.Pod, testConfig)
				if err != nil {
					out.Error = err.Error()
				} else {
					out.Pod, out.Warnings = res.Pod, res.Warnings
				}
			}
			got, err := yaml.Marshal(out)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "out", name)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			exp, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if string(exp) != string(got) {
				t.Errorf("%s differs from the injector's output (run with -update and read the diff):\n%s", path, got)
			}
		})
	}
	if *update {
		outs, _ := filepath.Glob("testdata/out/*.yaml")
		for _, o := range outs {
			if !want[filepath.Base(o)] {
				os.Remove(o)
			}
		}
	}
}

func readIn(t *testing.T, name string) goldenIn {
	t.Helper()
	var g goldenIn
	b, err := os.ReadFile(filepath.Join("testdata", "in", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestInjectedPodHasTheMesh(t *testing.T) {
	g := readIn(t, "namespace-enabled")
	res, err := Inject(&g.Pod, testConfig)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Pod
	names := func(cs []corev1.Container) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	if got, want := names(p.Spec.InitContainers), []string{"migrate", ContainerBootstrap, ContainerInit}; !slices.Equal(got, want) {
		t.Errorf("init containers = %v, want %v", got, want)
	}
	if got, want := names(p.Spec.Containers), []string{"emr", ContainerEnvoy, ContainerSidecar}; !slices.Equal(got, want) {
		t.Errorf("containers = %v, want %v", got, want)
	}
	if !reflect.DeepEqual(g.Pod.Spec.Containers[0], p.Spec.Containers[0]) {
		t.Error("the application container was changed")
	}
	var token *corev1.ServiceAccountTokenProjection
	for _, v := range p.Spec.Volumes {
		if v.Name == VolumeToken {
			token = v.Projected.Sources[0].ServiceAccountToken
		}
	}
	if token == nil || token.Audience != "medmesh" || *token.ExpirationSeconds != 600 {
		t.Fatalf("projected token volume = %+v, want audience medmesh, 600 s", token)
	}
	args := strings.Join(p.Spec.Containers[2].Args, " ")
	for _, want := range []string{"--k8s-token-file " + TokenFile, "--svid-dir " + SVIDDir, "--service emr",
		"--register-consul http://consul.medmesh-system.svc:8500", "--service-port 15006", "--app-port 8080",
		"--service-id $(POD_NAME).$(POD_NAMESPACE)", "--extproc-listen 127.0.0.1:15090",
		"--service-meta medmesh-kind=emr,medmesh-protocol=grpc,medmesh-site=ward-3"} {
		if !strings.Contains(args, want) {
			t.Errorf("sidecar args %q lack %q", args, want)
		}
	}
	boot := strings.Join(p.Spec.InitContainers[1].Args, " ")
	if !strings.Contains(boot, "--node-id $(POD_NAME).$(POD_NAMESPACE)") || !strings.Contains(boot, "--output "+BootstrapFile) {
		t.Errorf("bootstrap args %q: want the instance ID as node id and the bootstrap written to %s", boot, BootstrapFile)
	}
	for _, c := range p.Spec.Containers[1:] {
		if *c.SecurityContext.RunAsUser != ProxyUID {
			t.Errorf("%s runs as %d, want %d (the UID redirection exempts)", c.Name, *c.SecurityContext.RunAsUser, ProxyUID)
		}
	}
	if p.Annotations[AnnotationInjected] != "test" || p.Annotations[AnnotationService] != "emr" {
		t.Errorf("annotations = %v", p.Annotations)
	}
	if g.Pod.Annotations[AnnotationInjected] != "" || len(g.Pod.Spec.Containers) != 1 {
		t.Error("Inject changed its input")
	}
}

// TestReinjectionIsANoOp: injecting twice equals injecting once, through
// Decide and through the admission handler (no patch the second time).
// At an edge site the injected sidecar is told its site, which is part of
// the service's identity; without one its arguments are as before.
func TestInjectedSidecarKnowsItsSite(t *testing.T) {
	argsOf := func(c Config) []string {
		g := readIn(t, "namespace-enabled")
		res, err := Inject(&g.Pod, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, ctr := range res.Pod.Spec.Containers {
			if ctr.Name == ContainerSidecar {
				return ctr.Args
			}
		}
		t.Fatal("no sidecar container")
		return nil
	}
	site := testConfig
	site.Site = "site-a"
	if args := strings.Join(argsOf(site), " "); !strings.Contains(args, "--site site-a") {
		t.Errorf("sidecar args at a site: %s", args)
	}
	if args := strings.Join(argsOf(testConfig), " "); strings.Contains(args, "--site") {
		t.Errorf("sidecar args without a site: %s", args)
	}
}

func TestReinjectionIsANoOp(t *testing.T) {
	for _, name := range []string{"namespace-enabled", "annotated-true", "service-override", "no-port-default-sa"} {
		g := readIn(t, name)
		once, err := Inject(&g.Pod, testConfig)
		if err != nil {
			t.Fatal(err)
		}
		for _, nsEnabled := range []bool{true, false} {
			if d := Decide(once.Pod, nsEnabled); d.Inject || d.Reason != "already injected" {
				t.Errorf("%s: second Decide = %+v, want not injected: already injected", name, d)
			}
		}
		for _, enabled := range []bool{true, false} {
			resp := handle(t, &Handler{Config: testConfig, NamespaceEnabled: enabled, Logger: slog.New(slog.DiscardHandler)}, once.Pod)
			if !resp.Allowed || len(resp.Patches) != 0 {
				t.Errorf("%s: re-injection through the handler: allowed=%v, %d patches, want allowed with none", name, resp.Allowed, len(resp.Patches))
			}
		}
		// Without the annotation, the Envoy container alone still marks it.
		stripped := once.Pod.DeepCopy()
		delete(stripped.Annotations, AnnotationInjected)
		if d := Decide(stripped, true); d.Inject {
			t.Errorf("%s: a pod with %s but no annotation would be injected again", name, ContainerEnvoy)
		}
	}
}

func handle(t *testing.T, h *Handler, pod *corev1.Pod) admission.Response {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create,
		Namespace: pod.Namespace, Object: runtime.RawExtension{Raw: raw},
	}})
}

// TestHandlerPatchYieldsTheInjectedPod applies the handler's JSON patch
// to the pod as the API server would and compares with Inject.
func TestHandlerPatchYieldsTheInjectedPod(t *testing.T) {
	g := readIn(t, "service-override")
	h := &Handler{Config: testConfig, NamespaceEnabled: true, Logger: slog.New(slog.DiscardHandler)}
	resp := handle(t, h, &g.Pod)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("response: allowed=%v patches=%d result=%v", resp.Allowed, len(resp.Patches), resp.Result)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "attestation will refuse") {
		t.Errorf("warnings = %q, want one about the service account", resp.Warnings)
	}
	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(&g.Pod)
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("applying the handler's patch: %v", err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	want, _ := Inject(&g.Pod, testConfig)
	if !reflect.DeepEqual(&got, want.Pod) {
		a, _ := yaml.Marshal(&got)
		b, _ := yaml.Marshal(want.Pod)
		t.Errorf("patched pod differs from Inject's:\n--- patched\n%s\n--- Inject\n%s", a, b)
	}
}

func TestHandlerRefusesAndPasses(t *testing.T) {
	h := &Handler{Config: testConfig, NamespaceEnabled: true, Logger: slog.New(slog.DiscardHandler)}
	bad := readIn(t, "bad-service")
	resp := handle(t, h, &bad.Pod)
	if resp.Allowed || !strings.Contains(resp.Result.Message, AnnotationService) || !strings.Contains(resp.Result.Message, "clinical/bad") {
		t.Errorf("bad service annotation: allowed=%v message=%q, want refused naming the pod and the annotation", resp.Allowed, resp.Result.Message)
	}
	out := readIn(t, "opt-out")
	if resp := handle(t, h, &out.Pod); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("opted-out pod: allowed=%v, %d patches", resp.Allowed, len(resp.Patches))
	}
	plain := readIn(t, "namespace-enabled")
	off := &Handler{Config: testConfig, NamespaceEnabled: false, Logger: slog.New(slog.DiscardHandler)}
	if resp := handle(t, off, &plain.Pod); !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("unannotated pod on the annotated-only path: allowed=%v, %d patches, want untouched", resp.Allowed, len(resp.Patches))
	}
}

func TestRedirectRules(t *testing.T) {
	rules := DefaultRedirect().Rules()
	idx := func(want string) int {
		for i, r := range rules {
			if r == want {
				return i
			}
		}
		t.Fatalf("rule %q missing from:\n%s", want, strings.Join(rules, "\n"))
		return -1
	}
	uid := idx("iptables -t nat -A MEDMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN")
	xds := idx("iptables -t nat -A MEDMESH_OUTPUT -p tcp --dport 15010 -j RETURN")
	out := idx("iptables -t nat -A MEDMESH_OUTPUT -p tcp -j MEDMESH_REDIRECT")
	idx("iptables -t nat -A MEDMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001")
	idx("iptables -t nat -A MEDMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006")
	health := idx("iptables -t nat -A MEDMESH_INBOUND -p tcp --dport 15091 -j RETURN")
	in := idx("iptables -t nat -A MEDMESH_INBOUND -p tcp -j MEDMESH_IN_REDIRECT")
	if uid > out || xds > out || health > in {
		t.Error("an exclusion comes after the catch-all redirect it must precede")
	}
	jump := idx("iptables -t nat -C OUTPUT -p tcp -j MEDMESH_OUTPUT 2>/dev/null || iptables -t nat -A OUTPUT -p tcp -j MEDMESH_OUTPUT")
	if jump < out {
		t.Error("traffic is sent to MEDMESH_OUTPUT before the chain is complete")
	}
}

// TestRedirectScriptParses: the init container runs the script with
// `sh -ec`; a quoting mistake would only show on a node. sh -n parses it
// without running anything.
func TestRedirectScriptParses(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal("no sh on this machine")
	}
	if out, err := exec.Command(sh, "-n", "-c", RedirectScript()).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	if n := strings.Count(RedirectScript(), "\n"); n != len(DefaultRedirect().Rules()) {
		t.Errorf("script has %d lines for %d rules", n, len(DefaultRedirect().Rules()))
	}
}
