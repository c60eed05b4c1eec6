package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"medmesh/certs"
	"medmesh/controlplane/inject"
	"medmesh/internal/atomicfile"
)

// webhookFlags are `medmesh controlplane`'s sidecar-injector flags.
type webhookFlags struct {
	listen, dns, configName, caFile string
	cfg                             inject.Config
	ca                              *certs.CA // set once the CA exists
}

func (w *webhookFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&w.listen, "webhook-listen", "", "serve the sidecar injection webhook over TLS on this address (e.g. :15443); empty: off")
	fs.StringVar(&w.dns, "webhook-dns", "medmesh-webhook.medmesh-system.svc", "comma-separated DNS names (or IPs) of the webhook's Service, put in its serving certificate")
	fs.StringVar(&w.configName, "webhook-config", "", "at start, set caBundle of this MutatingWebhookConfiguration to the CA bundle (in-cluster, or --kubeconfig)")
	fs.StringVar(&w.caFile, "webhook-ca-file", "", "write the CA bundle (PEM) the webhook configuration's caBundle must hold to this file")
	fs.StringVar(&w.cfg.MedmeshImage, "inject-image", "", "image of the injected medmesh containers (default medmesh/medmesh:latest)")
	fs.StringVar(&w.cfg.ProxyImage, "inject-proxy-image", "", "image of the injected Envoy (default "+inject.Config{}.Defaults().ProxyImage+")")
	fs.StringVar(&w.cfg.XDSAddress, "inject-xds-address", "", "xDS address injected pods dial (default "+inject.Config{}.Defaults().XDSAddress+")")
	fs.StringVar(&w.cfg.ConsulAddress, "inject-consul", "", "Consul HTTP address injected sidecars register their pod with; empty: they do not register")
	fs.Int64Var(&w.cfg.TokenExpirySeconds, "inject-token-expiry", 600, "lifetime in seconds of the projected token (audience medmesh) of injected pods; at least 600")
}

// start binds the webhook, publishes the CA bundle and serves until ctx
// ends; a serving failure calls stop, so the control plane exits and
// Kubernetes restarts it rather than leaving a meshed namespace without
// an injector (its webhook fails closed).
func (w *webhookFlags) start(ctx context.Context, stop func(), log *slog.Logger, trustDomain, site, kubeconfig string) error {
	if w.listen == "" {
		return nil
	}
	if w.ca == nil {
		return errors.New("--webhook-listen needs mTLS on (its serving certificate comes from medmesh's CA)")
	}
	// controller-runtime's admission code logs through logr; without a
	// logger it prints a warning with a stack trace.
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	w.cfg.TrustDomain, w.cfg.Site, w.cfg.Version = trustDomain, site, version
	var hosts []string
	for _, h := range strings.Split(w.dns, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	srv, err := inject.Listen(inject.ServerOptions{Listen: w.listen, Config: w.cfg, Certs: w.ca, Hosts: hosts, Logger: log})
	if err != nil {
		return err
	}
	bundle := w.ca.BundlePEM()
	if w.caFile != "" {
		if err := atomicfile.Write(w.caFile, bundle, 0o644); err != nil {
			return fmt.Errorf("--webhook-ca-file %s: %w", w.caFile, err)
		}
		log.Info("webhook CA bundle written", "file", w.caFile)
	}
	if w.configName != "" {
		cfg, err := kubeConfig(kubeconfig)
		if err != nil {
			return fmt.Errorf("--webhook-config %s: %w", w.configName, err)
		}
		kc, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("--webhook-config %s: %w", w.configName, err)
		}
		if err := inject.KeepCABundle(ctx, kc, w.configName, w.ca.BundlePEM, time.Minute, log); err != nil {
			return err
		}
		log.Info("webhook caBundle set", "mutatingwebhookconfiguration", w.configName)
	}
	go func() {
		if err := srv.Serve(ctx); err != nil {
			log.Error("sidecar injection webhook stopped", "err", err)
			stop()
		}
	}()
	return nil
}
