// Package consulreg registers an injected pod's workload in Consul as a
// service instance with a TTL health check, keeps the check current from
// local probes, and deregisters it on shutdown. `medmesh sidecar
// --register-consul` runs it.
//
// A TTL check rather than an HTTP or TCP check run by Consul: the
// sidecar sits next to the app and probes it over loopback, so the check
// works whichever Consul agent the pod talks to (a node-local client or a
// central server that cannot reach pod IPs) and through the pod's
// iptables redirection. If the pod dies without deregistering, its check
// goes critical after one TTL (so no proxy is sent to it) and Consul
// removes the instance after DeregisterAfter.
package consulreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/backoff"
)

// Registry meta keys (registry/meta.go; repeated here so the sidecar does
// not import the control plane's registry).
const (
	metaAppPort   = "medmesh-app-port"
	metaNamespace = "medmesh-namespace"
)

// Options describe the instance.
type Options struct {
	Client *api.Client
	// ServiceID is the Consul service ID (and the Envoy node.id).
	ServiceID, Service, Namespace string
	// Address and Port are where mesh callers reach the instance: the
	// pod IP and Envoy's inbound port.
	Address string
	Port    int
	// AppPort is where the app listens on loopback; probed by TCP
	// connect and published as medmesh-app-port.
	AppPort int
	// EnvoyReadyURL, when set, must answer 200 too (Envoy's admin /ready):
	// callers reach the app through Envoy, so an unready Envoy is an
	// unreachable instance.
	EnvoyReadyURL string
	// Meta is extra service meta (medmesh-kind, medmesh-protocol, ...).
	Meta map[string]string
	// TTL of the check (default 15s); refreshed every TTL/3.
	TTL time.Duration
	// DeregisterAfter: a check critical this long makes Consul remove the
	// instance (default 1m).
	DeregisterAfter time.Duration
	Logger          *slog.Logger
}

// CheckID is the ID of the instance's TTL check.
func (o *Options) CheckID() string { return "medmesh:" + o.ServiceID }

// Validate names every bad field by its flag.
func (o *Options) Validate() error {
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("no Consul client"))
	}
	if o.ServiceID == "" || o.Service == "" {
		errs = append(errs, errors.New("--service-id and --service are required"))
	}
	if net.ParseIP(o.Address) == nil {
		errs = append(errs, fmt.Errorf("--service-address %q: want an IP (Envoy rejects host names as endpoints)", o.Address))
	}
	if o.Port < 1 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--service-port %d: want 1-65535", o.Port))
	}
	if o.AppPort < 1 || o.AppPort > 65535 {
		errs = append(errs, fmt.Errorf("--app-port %d: want 1-65535", o.AppPort))
	}
	return errors.Join(errs...)
}

// Run registers the instance, keeps its check current until ctx ends,
// then deregisters it. Consul being unreachable is retried, never fatal:
// the pod must not crash-loop because the registry is down.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("consulreg: %w", err)
	}
	if o.TTL <= 0 {
		o.TTL = 15 * time.Second
	}
	if o.DeregisterAfter <= 0 {
		o.DeregisterAfter = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("serviceID", o.ServiceID, "service", o.Service)
	bo := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	registered, ever := false, false
	tick := time.NewTicker(o.TTL / 3)
	defer tick.Stop()
loop:
	for {
		if !registered {
			if err := o.register(ctx); err != nil {
				log.Warn("registering in Consul; retrying", "err", err)
				select {
				case <-ctx.Done():
					break loop
				case <-time.After(bo.Next()):
				}
				continue
			}
			bo.Reset()
			registered, ever = true, true
			log.Info("registered in Consul", "address", o.Address, "port", o.Port, "appPort", o.AppPort)
		}
		status, output := o.probe(ctx)
		if err := o.Client.Agent().UpdateTTLOpts(o.CheckID(), output, status, (&api.QueryOptions{}).WithContext(ctx)); err != nil && ctx.Err() == nil {
			// The agent may have restarted and forgotten the instance
			// (a dev agent, a lost client agent): register again.
			log.Warn("updating the Consul check; registering again", "err", err)
			registered = false
			continue
		}
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
	}
	if !ever {
		return nil
	}
	// A fresh context: ctx has ended, and leaving the instance behind
	// would send callers to a pod that is going away.
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.Client.Agent().ServiceDeregisterOpts(o.ServiceID, (&api.QueryOptions{}).WithContext(dctx)); err != nil {
		return fmt.Errorf("consulreg: deregistering %s: %w", o.ServiceID, err)
	}
	log.Info("deregistered from Consul")
	return nil
}

func (o *Options) register(ctx context.Context) error {
	meta := map[string]string{}
	for k, v := range o.Meta {
		meta[k] = v
	}
	meta[metaAppPort] = strconv.Itoa(o.AppPort)
	if o.Namespace != "" {
		meta[metaNamespace] = o.Namespace
	}
	reg := &api.AgentServiceRegistration{
		ID: o.ServiceID, Name: o.Service, Address: o.Address, Port: o.Port, Meta: meta,
		Check: &api.AgentServiceCheck{
			CheckID: o.CheckID(), Name: "medmesh sidecar: app and proxy",
			TTL: o.TTL.String(), DeregisterCriticalServiceAfter: o.DeregisterAfter.String(),
			// Critical until the first probe passes: no caller is sent to
			// an instance whose app has not started.
			Status: api.HealthCritical,
		},
	}
	return o.Client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx))
}

// probe checks the app's port and Envoy's readiness. The output names
// ports and states only: it is visible in Consul's UI.
func (o *Options) probe(ctx context.Context) (status, output string) {
	var problems []string
	d := net.Dialer{Timeout: time.Second}
	if c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.AppPort))); err != nil {
		problems = append(problems, fmt.Sprintf("app port %d not accepting connections", o.AppPort))
	} else {
		c.Close()
	}
	if o.EnvoyReadyURL != "" {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, o.EnvoyReadyURL, nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		switch {
		case err != nil:
			problems = append(problems, "envoy not answering")
		case resp.StatusCode != http.StatusOK:
			resp.Body.Close()
			problems = append(problems, "envoy not ready: "+resp.Status)
		default:
			resp.Body.Close()
		}
	}
	if len(problems) > 0 {
		return api.HealthCritical, strings.Join(problems, "; ")
	}
	return api.HealthPassing, fmt.Sprintf("app port %d accepting connections", o.AppPort)
}
