package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"medmesh/api/wire"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/attest"
	cpidentity "medmesh/controlplane/identity"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/residency"
	"medmesh/internal/telemetry"
	"medmesh/registry"
)

func runControlPlane(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defConsul := os.Getenv("CONSUL_HTTP_ADDR")
	if defConsul == "" {
		defConsul = "http://127.0.0.1:8500"
	}
	consulAddr := fs.String("consul", defConsul, "Consul HTTP address (default from CONSUL_HTTP_ADDR); empty with --catalog runs without Consul")
	catalog := fs.String("catalog", "", "YAML catalog file (used instead of Consul)")
	policies := fs.String("policies", "", "directory of policy YAML files (MeshRoute, MeshDestination, MeshAccess), watched")
	kubeconfig := fs.String("kubeconfig", "", "read policies (MeshRoute, MeshDestination, MeshAccess) from the Kubernetes API of this kubeconfig, or of the pod's cluster with \"in-cluster\"; conditions are written to each object's status")
	xdsListen := fs.String("xds-listen", wire.DefaultXDSAddress, "xDS (ADS) gRPC listen address")
	adminListen := fs.String("admin-listen", wire.DefaultAdminAddress, "admin HTTP listen address")
	trustDomain := fs.String("trust-domain", "medmesh.local", "SPIFFE trust domain")
	site := fs.String("site", "", "the edge site this control plane serves (a lower-case DNS label); SPIFFE IDs it issues end in /site/NAME, "+
		"and a --ca-cert made for a site by `medmesh ca intermediate` must be this site's")
	stateDir := fs.String("state-dir", "", "directory for the last good catalog (served at start if the registry is down)")
	dev := fs.Bool("dev", false, "development mode: hand SVIDs to loopback proxies without proof of identity, and let loopback callers read and act on the admin API without credentials (never in production)")
	mtls := fs.Bool("mtls", true, "mutual TLS with SPIFFE identities on every hop (CA from --ca-cert/--ca-key or a root kept in --state-dir); --mtls=false is plaintext, for development only")
	caCert := fs.String("ca-cert", "", "operator CA certificate (root or intermediate, PEM) to sign SVIDs with")
	caKey := fs.String("ca-key", "", "operator CA private key (PEM, mode 0600)")
	caBundle := fs.String("ca-bundle", "", "trust anchors (PEM); required when --ca-cert is an intermediate")
	statusLeaseFlag := fs.String("status-lease", "", "with --kubeconfig: NAMESPACE/NAME of the Lease electing the one replica that writes policy statuses (default medmesh-policy-status in $POD_NAMESPACE when that is set; \"none\": every replica writes)")
	kubeAttest := fs.Bool("kube-attest", false, "accept Kubernetes service-account tokens (audience --kube-audience) as proof of identity, checked with TokenReview (cluster from --kubeconfig, else in-cluster)")
	kubeAudience := fs.String("kube-audience", attest.DefaultAudience, "audience a workload's projected service-account token must carry")
	svidTTL := fs.Duration("svid-ttl", certs.DefaultSVIDTTL, "lifetime of issued SVIDs; renewed at half-life")
	coalesce := fs.Duration("coalesce", 20*time.Millisecond, "gather bursts of changes for this long before publishing")
	emptyGrace := fs.Duration("empty-catalog-grace", time.Minute, "how long the registry must list no services before the mesh is emptied")
	residencyPolicy := fs.String("residency-policy", "", "with --site: the Rego policy deciding which calls may reach other sites' services (watched; a file that does not compile is refused naming file:line, and a broken edit keeps the policy in force); default: PHI services never leave their site")
	peerGrace := fs.Duration("peer-stale-grace", registry.DefaultPeerStaleGrace, "how long another site's services imported through Consul peering are served, as last heard of, after the peering stops being active")
	envoyOTLP := fs.String("envoy-otlp-address", "", "host:port of an OTLP/gRPC collector Envoy sidecars send request spans to (HCM tracing, OpenTelemetry tracer); empty: Envoy sidecars do not trace")
	envoySampling := fs.Float64("envoy-trace-sampling", ir.DefaultEnvoyTraceSampling, "with --envoy-otlp-address: percentage (0-100) of requests without a caller's sampling decision that an Envoy sidecar starts a trace for")
	traceQuery := fs.String("trace-query-url", "", "trace backend's query API (Jaeger's, e.g. http://127.0.0.1:16686) the /ui page reads change and request traces from, and links to")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	var webhook webhookFlags
	webhook.register(fs)
	var adminAuth adminFlags
	adminAuth.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLogger(stderr, *logFormat, *logLevel)
	if *site != "" {
		if err := wire.ValidateSite(*site); err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: --site: %v\n", err)
			return 2
		}
		log.Info("serving edge site", "site", *site)
	}
	if u, err := url.Parse(*traceQuery); *traceQuery != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		fmt.Fprintf(stderr, "medmesh controlplane: --trace-query-url %q: want http(s)://host:port\n", *traceQuery)
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	sampling := -1.0 // unset: the default, and an error without a collector
	if set["envoy-trace-sampling"] {
		sampling = *envoySampling
	}
	envoyTracing, err := ir.ParseEnvoyTracing(*envoyOTLP, sampling)
	if err != nil {
		fmt.Fprintf(stderr, "medmesh controlplane: %v\n", err)
		return 2
	}

	var policySrc policy.Source
	switch {
	case *policies != "" && *kubeconfig != "":
		fmt.Fprintln(stderr, "medmesh controlplane: --policies and --kubeconfig both given; policies come from one source")
		return 2
	case *kubeconfig != "":
		cfg, err := kubeConfig(*kubeconfig)
		if err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: --kubeconfig: %v\n", err)
			return 2
		}
		src := &policy.Kubernetes{Config: cfg, Logger: log}
		if lease, err := statusLease(*statusLeaseFlag); err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: --status-lease: %v\n", err)
			return 2
		} else if lease != nil {
			src.StatusLease = lease
			log.Info("policy statuses are written by the replica holding the lease", "lease", lease.Namespace+"/"+lease.Name, "identity", lease.Identity)
		}
		policySrc = src
	case *policies != "":
		if fi, err := os.Stat(*policies); err != nil || !fi.IsDir() {
			fmt.Fprintf(stderr, "medmesh controlplane: --policies %q: want a directory of policy YAML files\n", *policies)
			return 2
		}
		policySrc = &policy.Dir{Path: *policies, Logger: log}
	}
	if *dev {
		log.Warn("DEVELOPMENT MODE (--dev): workloads on loopback are trusted without proof of identity. NEVER use this in production or with real patient data.")
	}
	var src registry.Source
	attestors := map[wire.ProofKind]cpidentity.Attestor{}
	switch {
	case *catalog != "" && set["consul"] && *consulAddr != "":
		fmt.Fprintln(stderr, "medmesh controlplane: --catalog and --consul both given; use --consul=\"\" with --catalog to run without Consul")
		return 2
	case *catalog != "":
		if _, err := os.Stat(*catalog); err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: --catalog: %v\n", err)
			return 2
		}
		src = &registry.File{Path: *catalog, Logger: log}
	case *consulAddr == "":
		fmt.Fprintln(stderr, "medmesh controlplane: --consul is empty and no --catalog given: nothing to serve")
		return 2
	default:
		cfg := api.DefaultConfig()
		cfg.Address = *consulAddr
		// Reuse connections for the bursts of health reads after a
		// registration change instead of re-dialling each one.
		cfg.Transport.MaxIdleConnsPerHost = 32
		client, err := api.NewClient(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: --consul %q: %v\n", *consulAddr, err)
			return 2
		}
		src = registry.NewConsul(registry.ConsulOptions{Client: client, Logger: log, PeerStaleGrace: *peerGrace})
		// A Consul ACL token that may write a service proves a workload
		// is that service, as it proves it to Consul itself.
		ac, err := attest.NewConsul(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: --consul %q: %v\n", *consulAddr, err)
			return 2
		}
		attestors[wire.ProofConsul] = ac
	}
	if *kubeAttest {
		cfg, err := kubeConfig(*kubeconfig)
		if err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: --kube-attest: %v\n", err)
			return 2
		}
		kc, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: --kube-attest: %v\n", err)
			return 2
		}
		attestors[wire.ProofKubernetes] = &attest.Kubernetes{Client: kc, Audience: *kubeAudience}
		log.Info("Kubernetes service-account tokens accepted as proof of identity", "api", cfg.Host, "audience", *kubeAudience)
	}

	if *mtls && *stateDir == "" && *caCert == "" && *caKey == "" {
		// Refused before anything listens: a PHI mesh that silently fell
		// back to plaintext for want of a CA would be worse than none.
		fmt.Fprintln(stderr, "medmesh controlplane: mTLS is on (the default) but no CA was given: pass --state-dir DIR "+
			"(a self-signed root is created and kept there) or --ca-cert and --ca-key (the hospital's CA, with --ca-bundle "+
			"for an intermediate); --mtls=false runs plaintext, for development only")
		return 2
	}
	if !*mtls {
		log.Warn("PLAINTEXT MESH (--mtls=false): calls are neither encrypted nor authenticated and intentions are not enforced. " +
			"Development only: NEVER carry real patient data over this mesh.")
	}

	var residencyFile *residency.File
	if *residencyPolicy != "" {
		if *site == "" {
			fmt.Fprintln(stderr, "medmesh controlplane: --residency-policy decides calls between sites: give --site too")
			return 2
		}
		residencyFile = &residency.File{Path: *residencyPolicy, Logger: log}
	}
	auth, trail, err := adminAuth.build(log, *dev, *kubeconfig)
	if err != nil {
		fmt.Fprintf(stderr, "medmesh controlplane: %v\n", err)
		return 2
	}
	if trail != nil {
		defer trail.Close()
	}
	opts := controlplane.Options{AdminAuth: auth,
		Logger: log, Source: src, TrustDomain: *trustDomain, Site: *site, StateDir: *stateDir, Dev: *dev,
		XDSListen: *xdsListen, AdminListen: *adminListen, Coalesce: *coalesce, EmptyCatalogGrace: *emptyGrace,
		Attestors: attestors, Policies: policySrc, ResidencyPolicy: residencyFile, EnvoyTracing: envoyTracing,
		TraceQueryURL: *traceQuery,
	}
	if *mtls {
		ca, err := certs.New(certs.Options{TrustDomain: *trustDomain, StateDir: *stateDir, CertFile: *caCert,
			KeyFile: *caKey, BundleFile: *caBundle, SVIDTTL: *svidTTL, Site: *site})
		if err != nil {
			fmt.Fprintf(stderr, "medmesh controlplane: mTLS CA: %v\n", err)
			return 2
		}
		log.Info("mTLS on", "ca", ca.String())
		opts.Identities = ca
		webhook.ca = ca
	}
	flushTraces, err := startTracing(log, telemetry.Options{Service: "medmesh-controlplane", Site: *site})
	if err != nil {
		fmt.Fprintf(stderr, "medmesh controlplane: tracing: %v\n", err)
		return 2
	}
	defer flushTraces()
	cp, err := controlplane.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "medmesh controlplane: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := webhook.start(ctx, stop, log, *trustDomain, *site, *kubeconfig); err != nil {
		fmt.Fprintf(stderr, "medmesh controlplane: sidecar injection webhook: %v\n", err)
		return 2
	}
	if ca, ok := opts.Identities.(*certs.CA); ok {
		// An edge site issues SVIDs only while its intermediate lives;
		// the hub must re-issue it before then, so say so in time.
		go ca.WatchExpiry(ctx, log)
	}
	if err := cp.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("control plane stopped", "err", err)
		return 1
	}
	return 0
}

// kubeConfig connects to the cluster of a kubeconfig file, or to the
// pod's own cluster for "in-cluster" (or no file).
func kubeConfig(path string) (*rest.Config, error) {
	if path == "in-cluster" {
		path = ""
	}
	return clientcmd.BuildConfigFromFlags("", path)
}

// statusLease resolves --status-lease: explicit, "none", or by default the
// pod's own namespace when running in one (the downward API sets
// POD_NAMESPACE and POD_NAME in deploy/).
func statusLease(flagValue string) (*policy.Lease, error) {
	identity := os.Getenv("POD_NAME")
	if identity == "" {
		identity, _ = os.Hostname()
	}
	switch {
	case flagValue == "none":
		return nil, nil
	case flagValue == "":
		if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
			return &policy.Lease{Namespace: ns, Name: "medmesh-policy-status", Identity: identity}, nil
		}
		return nil, nil
	}
	ns, name, ok := strings.Cut(flagValue, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("%q: want NAMESPACE/NAME", flagValue)
	}
	return &policy.Lease{Namespace: ns, Name: name, Identity: identity}, nil
}
