package main

import (
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"k8s.io/client-go/kubernetes"

	"medmesh/controlplane"
	"medmesh/controlplane/adminauth"
)

// adminFlags are `medmesh controlplane`'s flags for who may read and act
// on the admin API (controlplane.AdminAuth, package adminauth).
type adminFlags struct {
	tlsListen, tlsDNS, metricsListen, auditLog string
	kubeAuth                                   bool
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.tlsListen, "admin-tls-listen", "", "also serve the admin API over HTTPS on this address (certificate from medmesh's CA; "+
		"callers present a client certificate made by \"medmesh ca admin-cert\", or a Kubernetes bearer token); empty: off")
	fs.StringVar(&a.tlsDNS, "admin-tls-dns", "localhost,127.0.0.1,::1", "comma-separated DNS names (or IPs) put in the admin TLS serving certificate")
	fs.StringVar(&a.metricsListen, "metrics-listen", "", "serve only /healthz, /readyz and /metrics on this address (no credentials), for Prometheus and probes; empty: off")
	fs.BoolVar(&a.kubeAuth, "admin-kube-auth", false, "accept Kubernetes bearer tokens on the admin API: TokenReview, then SubjectAccessReview "+
		"(verb get = read, update = operate, on resource controlplanes of group medmesh.io); cluster from --kubeconfig, else in-cluster")
	fs.StringVar(&a.auditLog, "audit-log", "", "append a FHIR AuditEvent JSON line per admin call that acts or is refused to this file (always logged too)")
}

// build makes the control plane's AdminAuth; the trail, if any, is
// closed by the caller.
func (a *adminFlags) build(log *slog.Logger, dev bool, kubeconfig string) (controlplane.AdminAuth, *adminauth.Trail, error) {
	out := controlplane.AdminAuth{TLSListen: a.tlsListen, MetricsListen: a.metricsListen, DevLoopback: dev}
	for _, h := range strings.Split(a.tlsDNS, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out.TLSHosts = append(out.TLSHosts, h)
		}
	}
	if a.tlsListen != "" && len(out.TLSHosts) == 0 {
		return out, nil, fmt.Errorf("--admin-tls-dns is empty: the serving certificate needs the names callers dial")
	}
	if dev {
		log.Warn("DEVELOPMENT MODE (--dev): any process on this host may read and act on the admin API (join tokens, CA rotation) without credentials.")
	}
	if a.kubeAuth {
		cfg, err := kubeConfig(kubeconfig)
		if err != nil {
			return out, nil, fmt.Errorf("--admin-kube-auth: %w", err)
		}
		if out.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
			return out, nil, fmt.Errorf("--admin-kube-auth: %w", err)
		}
		log.Info("admin API accepts Kubernetes bearer tokens", "api", cfg.Host, "read", "get controlplanes.medmesh.io", "operate", "update controlplanes.medmesh.io")
	}
	if a.auditLog == "" {
		return out, nil, nil
	}
	trail, err := adminauth.OpenTrail(a.auditLog, "medmesh-controlplane")
	if err != nil {
		return out, nil, fmt.Errorf("--audit-log: %w", err)
	}
	out.Trail = trail
	return out, trail, nil
}
