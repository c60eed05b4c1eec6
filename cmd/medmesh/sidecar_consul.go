package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/sidecar/consulreg"
)

// registerFlags are `medmesh sidecar`'s Consul registration flags: the
// injector sets them so an injected pod joins the catalog by itself.
type registerFlags struct {
	consul string
	o      consulreg.Options
	meta   string
}

func (f *registerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.consul, "register-consul", "", "register the workload in Consul at this HTTP address (TTL check kept from local probes, deregistered on shutdown); empty: off")
	fs.StringVar(&f.o.ServiceID, "service-id", "", "Consul service ID of the instance (Envoy's node id)")
	fs.StringVar(&f.o.Address, "service-address", "", "IP mesh callers reach the instance at (the pod IP)")
	fs.IntVar(&f.o.Port, "service-port", 0, "port mesh callers reach the instance at (Envoy's inbound port)")
	fs.IntVar(&f.o.AppPort, "app-port", 0, "port the app listens on, on loopback (probed; meta medmesh-app-port)")
	fs.StringVar(&f.o.EnvoyReadyURL, "envoy-ready-url", "", "Envoy admin /ready URL that must answer 200 for the instance to pass")
	fs.StringVar(&f.meta, "service-meta", "", "extra service meta, key=value,... (e.g. medmesh-kind=emr,medmesh-protocol=grpc)")
	fs.DurationVar(&f.o.TTL, "check-ttl", 15*time.Second, "TTL of the instance's Consul check")
}

// start runs the registration if asked; the returned wait blocks until
// the instance is deregistered (after ctx ends).
func (f *registerFlags) start(ctx context.Context, service, namespace, token string, log *slog.Logger) (wait func(), err error) {
	if f.consul == "" {
		return func() {}, nil
	}
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = f.consul, token
	if f.o.Client, err = api.NewClient(cfg); err != nil {
		return nil, fmt.Errorf("--register-consul %q: %w", f.consul, err)
	}
	f.o.Service, f.o.Namespace, f.o.Logger = service, namespace, log
	if f.meta != "" {
		f.o.Meta = map[string]string{}
		for _, kv := range strings.Split(f.meta, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("--service-meta %q: want key=value,...", f.meta)
			}
			f.o.Meta[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if err := f.o.Validate(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- consulreg.Run(ctx, f.o) }()
	return func() {
		if err := <-done; err != nil {
			log.Error("Consul registration", "err", err)
		}
	}, nil
}
