// Package inject is medmesh's sidecar injector: the pure mutation that
// puts a pod in the mesh (Inject), and the mutating admission webhook that
// applies it to pods as the Kubernetes API server creates them (Handler,
// Serve).
//
// An injected pod gets:
//   - init container medmesh-bootstrap: `medmesh bootstrap` writes the
//     Envoy bootstrap for this pod into the emptyDir medmesh-bootstrap;
//   - init container medmesh-init: iptables redirection (see Redirect);
//   - container medmesh-envoy: Envoy, as UID 1337, with that bootstrap;
//   - container medmesh-sidecar: `medmesh sidecar` (ext_proc on
//     127.0.0.1:15090, SVID files in the emptyDir medmesh-svid, proof of
//     identity from the projected token, Consul registration of the pod
//     with a TTL health check);
//   - volume medmesh-token: a projected service-account token with
//     audience medmesh, expiring after TokenExpirySeconds;
//   - annotations medmesh.io/injected and medmesh.io/service.
package inject

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"medmesh/api/wire"
	"medmesh/registry"
)

// Annotations and labels users and operators set.
const (
	// LabelNamespace on a namespace (value "enabled") selects its pods
	// for injection; the webhook configuration's namespaceSelector uses it.
	LabelNamespace = "medmesh.io/inject"
	// AnnotationInject "true" injects a pod in any namespace the webhook
	// sees; "false" opts out, and wins over the namespace label.
	AnnotationInject = "medmesh.io/inject"
	// AnnotationService overrides the service name (default: the pod's
	// service account).
	AnnotationService = "medmesh.io/service"
	// AnnotationPort names the application's port (default: the first
	// TCP port declared by the pod's first container that has one).
	AnnotationPort = "medmesh.io/port"
	// AnnotationMetaPrefix + kind, protocol, phi, lb, mtls, region, zone
	// or site becomes the instance's Consul meta medmesh-<key> (e.g.
	// medmesh.io/kind: emr), checked at admission.
	AnnotationMetaPrefix = "medmesh.io/"
	// AnnotationInjected marks an injected pod; its value is the
	// injector's version. A pod carrying it is never changed again.
	AnnotationInjected = "medmesh.io/injected"
)

// Names of what Inject adds.
const (
	ContainerEnvoy     = "medmesh-envoy"
	ContainerSidecar   = "medmesh-sidecar"
	ContainerInit      = "medmesh-init"
	ContainerBootstrap = "medmesh-bootstrap"
	VolumeBootstrap    = "medmesh-bootstrap"
	VolumeSVID         = "medmesh-svid"
	VolumeToken        = "medmesh-token"

	BootstrapDir  = "/etc/medmesh"
	BootstrapFile = BootstrapDir + "/envoy.yaml"
	SVIDDir       = "/var/run/medmesh/svid"
	TokenDir      = "/var/run/secrets/medmesh"
	TokenFile     = TokenDir + "/token"
)

// Ports inside an injected pod. Envoy and medmesh sidecar run as ProxyUID.
const (
	ProxyUID       = 1337
	InboundPort    = wire.InboundPort
	OutboundPort   = wire.OutboundHTTPPort
	EnvoyAdminPort = wire.EnvoyAdminPort
	ExtProcPort    = wire.ExtProcPort
	HealthPort     = wire.SidecarHealthPort
)

// Config is how the injector builds sidecars: images and where the
// control plane and Consul are. The zero value of a field takes its
// default (see Defaults).
type Config struct {
	// MedmeshImage runs medmesh-init, medmesh-bootstrap and
	// medmesh-sidecar; it must contain `medmesh`, sh and iptables.
	MedmeshImage string
	// ProxyImage is Envoy's image (envoyproxy/envoy).
	ProxyImage string
	// XDSAddress is the control plane's xDS host:port as pods reach it.
	XDSAddress string
	// ConsulAddress is Consul's HTTP address as pods reach it; empty
	// leaves registration to someone else (the sidecar registers nothing).
	ConsulAddress string
	TrustDomain   string
	// Site is the edge site the injecting control plane serves (its
	// --site); the sidecar names the service's identity with it.
	Site string
	// TokenExpirySeconds of the projected token (Kubernetes' minimum,
	// 600, by default; the kubelet renews it at 80% of its life).
	TokenExpirySeconds int64
	// Version goes into the medmesh.io/injected annotation.
	Version string
}

// Defaults fills unset fields.
func (c Config) Defaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.MedmeshImage, "medmesh/medmesh:latest")
	def(&c.ProxyImage, "envoyproxy/envoy:v1.36.2")
	def(&c.XDSAddress, "medmesh-xds.medmesh-system.svc:"+strconv.Itoa(wire.XDSPort))
	def(&c.TrustDomain, "medmesh.local")
	def(&c.Version, "dev")
	if c.TokenExpirySeconds < 600 {
		c.TokenExpirySeconds = 600
	}
	return c
}

// Decision is whether a pod is to be injected, and why (for logs and
// admission warnings; never pod contents beyond names).
type Decision struct {
	Inject bool   `json:"inject"`
	Reason string `json:"reason"`
}

// Decide applies the opt-in and opt-out rules. namespaceEnabled says the
// pod's namespace carries medmesh.io/inject=enabled (the webhook learns
// it from which of its two paths the API server called).
func Decide(pod *corev1.Pod, namespaceEnabled bool) Decision {
	switch {
	case pod.Annotations[AnnotationInjected] != "" || hasContainer(pod.Spec.Containers, ContainerEnvoy):
		return Decision{false, "already injected"}
	case pod.Annotations[AnnotationInject] == "false":
		return Decision{false, "opted out by annotation " + AnnotationInject + "=false"}
	case pod.Spec.HostNetwork:
		// iptables in a host-network pod would redirect the node's traffic.
		return Decision{false, "hostNetwork pods are never injected"}
	case pod.Annotations[AnnotationInject] == "true":
		return Decision{true, "annotation " + AnnotationInject + "=true"}
	case namespaceEnabled:
		return Decision{true, "namespace label " + LabelNamespace + "=enabled"}
	}
	return Decision{false, "neither namespace label nor annotation asks for injection"}
}

// Result is what Inject did.
type Result struct {
	Pod      *corev1.Pod // the mutated copy; the input is never changed
	Service  string
	Warnings []string
}

// Inject returns a copy of pod with the mesh added. It does not apply
// Decide: callers do. It fails only on input a user must fix, naming the
// pod and the annotation.
func Inject(pod *corev1.Pod, c Config) (*Result, error) {
	c = c.Defaults()
	p := pod.DeepCopy()
	who := podName(p)
	res := &Result{Pod: p}

	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	svc, field := sa, "spec.serviceAccountName"
	if v, ok := p.Annotations[AnnotationService]; ok {
		svc, field = v, "annotation "+AnnotationService
	}
	if errs := validation.IsDNS1123Label(svc); len(errs) > 0 {
		return nil, fmt.Errorf("pod %s: %s=%q is not a valid medmesh service name: %s", who, field, svc, strings.Join(errs, "; "))
	}
	res.Service = svc
	if svc != sa {
		// The attestation rule: service account <ns>/<svc> may act only as
		// service <svc>. Admitting the pod and saying so is friendlier
		// than refusing: the operator may be migrating service accounts.
		res.Warnings = append(res.Warnings, fmt.Sprintf("medmesh: pod %s runs as service account %q but %s=%q: "+
			"Kubernetes attestation will refuse its identity until they match", who, sa, AnnotationService, svc))
	} else if sa == "default" {
		res.Warnings = append(res.Warnings, fmt.Sprintf("medmesh: pod %s joins the mesh as service %q (its service account); "+
			"give it a service account named after its service", who, svc))
	}
	appPort, err := appPort(p)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", who, err)
	}
	meta, err := serviceMeta(p, svc)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", who, err)
	}
	if appPort == 0 && c.ConsulAddress != "" {
		res.Warnings = append(res.Warnings, fmt.Sprintf("medmesh: pod %s declares no TCP port and has no %s annotation: "+
			"it is not registered in Consul (it can call services, none can call it)", who, AnnotationPort))
	}

	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[AnnotationInjected] = c.Version
	p.Annotations[AnnotationService] = svc

	// Ours run after the pod's own init containers: those run before any
	// proxy exists, so redirecting their traffic would only break them.
	// Redirection is last so that nothing after it runs unproxied.
	p.Spec.InitContainers = append(p.Spec.InitContainers, bootstrapContainer(c, svc), redirectContainer(c))
	p.Spec.Containers = append(p.Spec.Containers, envoyContainer(c), sidecarContainer(c, svc, appPort, meta))
	p.Spec.Volumes = append(p.Spec.Volumes, volumes(c)...)
	return res, nil
}

// appPort is the port the application serves on: the annotation, else the
// first TCP container port.
func appPort(p *corev1.Pod) (int32, error) {
	if v, ok := p.Annotations[AnnotationPort]; ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1 || n > 65535 {
			return 0, fmt.Errorf("annotation %s=%q: want a port number 1-65535", AnnotationPort, v)
		}
		if reserved(int32(n)) {
			return 0, fmt.Errorf("annotation %s=%d: port is reserved for the sidecar (15000-15999 are medmesh's)", AnnotationPort, n)
		}
		return int32(n), nil
	}
	for _, ctr := range p.Spec.Containers {
		for _, port := range ctr.Ports {
			if port.Protocol == "" || port.Protocol == corev1.ProtocolTCP {
				return port.ContainerPort, nil
			}
		}
	}
	return 0, nil
}

// metaKeys are the registry conventions a pod may set by annotation.
var metaKeys = []string{"kind", "protocol", "phi", "lb", "mtls", "region", "zone", "site"}

// serviceMeta turns medmesh.io/<key> annotations into the sidecar's
// --service-meta (sorted, so injection is deterministic). A value the
// registry would not accept is refused here, at admission, where the
// operator sees it, instead of becoming a default at run time: a PHI
// service registered as "generic" by a typo would lose its PHI default.
func serviceMeta(p *corev1.Pod, svc string) (string, error) {
	m := map[string]string{}
	var pairs []string
	for _, k := range metaKeys {
		v, ok := p.Annotations[AnnotationMetaPrefix+k]
		if !ok {
			continue
		}
		if v == "" || strings.ContainsAny(v, ",=") {
			return "", fmt.Errorf("annotation %s%s=%q: want a non-empty value without ',' or '='", AnnotationMetaPrefix, k, v)
		}
		m["medmesh-"+k] = v
		pairs = append(pairs, "medmesh-"+k+"="+v)
	}
	if _, warns := registry.ParseMeta(svc, "", m, nil); len(warns) > 0 {
		w := warns[0]
		return "", fmt.Errorf("annotation %s%s=%q: not a value medmesh accepts (it would use %s)",
			AnnotationMetaPrefix, strings.TrimPrefix(w.Key, "medmesh-"), w.Value, w.Used)
	}
	return strings.Join(pairs, ","), nil
}

func reserved(port int32) bool { return port >= 15000 && port < 16000 }

// downward is the pod's name, namespace and IP as environment variables,
// so arguments can say $(POD_NAME): at admission a pod created with
// generateName has no name yet.
func downward() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	return []corev1.EnvVar{field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"), field("POD_IP", "status.podIP")}
}

// instanceID is the Consul service ID of the pod's instance and Envoy's
// node.id (CONTRACT: they are the same).
const instanceID = "$(POD_NAME).$(POD_NAMESPACE)"

func bootstrapContainer(c Config, svc string) corev1.Container {
	return corev1.Container{
		Name:  ContainerBootstrap,
		Image: c.MedmeshImage,
		Args: []string{"bootstrap", "--xds-address", c.XDSAddress, "--node-id", instanceID, "--service", svc,
			"--admin-port", strconv.Itoa(EnvoyAdminPort), "--output", BootstrapFile},
		Env:             downward(),
		VolumeMounts:    []corev1.VolumeMount{{Name: VolumeBootstrap, MountPath: BootstrapDir}},
		SecurityContext: proxySecurity(),
		Resources:       small("10m", "32Mi", "100m", "64Mi"),
	}
}

func redirectContainer(c Config) corev1.Container {
	return corev1.Container{
		Name:    ContainerInit,
		Image:   c.MedmeshImage,
		Command: []string{"sh", "-ec", RedirectScript()},
		SecurityContext: &corev1.SecurityContext{
			// iptables needs root with NET_ADMIN and NET_RAW in the pod's
			// network namespace, and nothing else.
			RunAsUser: ptr(int64(0)), RunAsNonRoot: ptr(false), AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem: ptr(true),
			Capabilities:           &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
		},
		Resources: small("10m", "16Mi", "100m", "32Mi"),
	}
}

func envoyContainer(c Config) corev1.Container {
	return corev1.Container{
		Name:    ContainerEnvoy,
		Image:   c.ProxyImage,
		Command: []string{"envoy"},
		// No hot restart: Kubernetes replaces the container instead, and
		// hot restart's shared memory is one more thing to get wrong.
		Args:  []string{"-c", BootstrapFile, "--disable-hot-restart", "--drain-time-s", "20", "--log-level", "warn"},
		Ports: []corev1.ContainerPort{{Name: "mesh-inbound", ContainerPort: InboundPort, Protocol: corev1.ProtocolTCP}},
		VolumeMounts: []corev1.VolumeMount{
			{Name: VolumeBootstrap, MountPath: BootstrapDir, ReadOnly: true},
			{Name: VolumeSVID, MountPath: SVIDDir, ReadOnly: true},
		},
		SecurityContext: proxySecurity(),
		Resources:       small("100m", "128Mi", "1", "512Mi"),
	}
}

func sidecarContainer(c Config, svc string, appPort int32, meta string) corev1.Container {
	args := []string{"sidecar",
		"--extproc-listen", "127.0.0.1:" + strconv.Itoa(ExtProcPort),
		// On all addresses: the kubelet probes readiness from outside.
		"--health-listen", ":" + strconv.Itoa(HealthPort),
		"--xds-address", c.XDSAddress,
		// Its own xDS node, beside Envoy's: the SVID agent's stream is
		// separate from Envoy's ADS stream.
		"--node-id", instanceID + "/svid",
		"--service", svc,
		"--namespace", "$(POD_NAMESPACE)",
		"--trust-domain", c.TrustDomain,
		"--svid-dir", SVIDDir,
		"--k8s-token-file", TokenFile,
	}
	if c.Site != "" {
		args = append(args, "--site", c.Site)
	}
	if c.ConsulAddress != "" && appPort != 0 {
		// Registered at Envoy's inbound port: mesh callers reach the pod
		// through its proxy, which forwards to the app's port (meta
		// medmesh-app-port).
		args = append(args, "--register-consul", c.ConsulAddress, "--service-id", instanceID,
			"--service-address", "$(POD_IP)", "--service-port", strconv.Itoa(InboundPort),
			"--app-port", strconv.Itoa(int(appPort)),
			"--envoy-ready-url", "http://127.0.0.1:"+strconv.Itoa(EnvoyAdminPort)+"/ready")
		if meta != "" {
			args = append(args, "--service-meta", meta)
		}
	}
	return corev1.Container{
		Name:         ContainerSidecar,
		Image:        c.MedmeshImage,
		Args:         args,
		Env:          downward(),
		Ports:        []corev1.ContainerPort{{Name: "mesh-health", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP}},
		VolumeMounts: []corev1.VolumeMount{{Name: VolumeSVID, MountPath: SVIDDir}, {Name: VolumeToken, MountPath: TokenDir, ReadOnly: true}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(HealthPort)}},
			PeriodSeconds: 5,
		},
		SecurityContext: proxySecurity(),
		Resources:       small("50m", "64Mi", "500m", "256Mi"),
	}
}

func volumes(c Config) []corev1.Volume {
	mem := func(name string) corev1.Volume {
		// Memory-backed: SVID keys and the bootstrap never touch the node's disk.
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}
	}
	exp := c.TokenExpirySeconds
	token := corev1.Volume{Name: VolumeToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: "medmesh", ExpirationSeconds: &exp, Path: "token",
		}}},
	}}}
	return []corev1.Volume{mem(VolumeBootstrap), mem(VolumeSVID), token}
}

// proxySecurity runs as the proxy UID the redirection exempts.
func proxySecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser: ptr(int64(ProxyUID)), RunAsGroup: ptr(int64(ProxyUID)), RunAsNonRoot: ptr(true),
		AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

func small(cpuReq, memReq, cpuLim, memLim string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpuReq), corev1.ResourceMemory: resource.MustParse(memReq)},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpuLim), corev1.ResourceMemory: resource.MustParse(memLim)},
	}
}

func hasContainer(cs []corev1.Container, name string) bool {
	for _, c := range cs {
		if c.Name == name {
			return true
		}
	}
	return false
}

// podName names a pod for messages: namespace/name, or the generateName
// prefix while the API server has not named it yet.
func podName(p *corev1.Pod) string {
	name := p.Name
	if name == "" && p.GenerateName != "" {
		name = p.GenerateName + "*"
	}
	return p.Namespace + "/" + name
}

func ptr[T any](v T) *T { return &v }
