package main

import (
	"flag"
	"fmt"
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

// options turns the flags into the registration's options: without
// --register-consul, none (no client: sidecar/run registers nothing).
// token is the workload's Consul ACL token, which the registration uses
// too. sidecar/run fills in the service, namespace and logger.
func (f *registerFlags) options(token string) (consulreg.Options, error) {
	if f.consul == "" {
		return consulreg.Options{}, nil
	}
	o := f.o
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = f.consul, token
	var err error
	if o.Client, err = api.NewClient(cfg); err != nil {
		return o, fmt.Errorf("--register-consul %q: %w", f.consul, err)
	}
	if f.meta != "" {
		if o.Meta, err = parseMeta(f.meta); err != nil {
			return o, err
		}
	}
	return o, nil
}

// parseMeta reads --service-meta: key=value,...
func parseMeta(s string) (map[string]string, error) {
	meta := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--service-meta %q: want key=value,...", s)
		}
		meta[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return meta, nil
}
