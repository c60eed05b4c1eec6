package meshapp

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Instance is what a workload registers in Consul.
type Instance struct {
	Consul  string // Consul HTTP address
	ID      string // the Consul service ID, also the xDS node ID
	Service string
	Port    int // on 127.0.0.1
	// Meta tells medmesh about the service (registry.MetaKind,
	// MetaProtocol, MetaLB, ...).
	Meta map[string]string
	// TTL of the health check, refreshed every third of it.
	TTL time.Duration
}

// Registration is an instance's entry in Consul and its TTL check.
type Registration struct {
	c       *api.Client
	in      Instance
	log     *slog.Logger
	checkID string

	mu      sync.Mutex
	healthy bool
	failing bool // last TTL update failed; logged once per outage

	deregOnce sync.Once
}

// NewRegistration prepares the registration; Register makes it.
func NewRegistration(in Instance, log *slog.Logger) (*Registration, error) {
	cfg := api.DefaultConfig()
	cfg.Address = in.Consul
	// Bounded calls: a stopping instance must not hang on a Consul that
	// is already gone (the demo stops Consul last, an operator may not).
	cfg.HttpClient = &http.Client{Timeout: 5 * time.Second}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("--consul %q: %w", in.Consul, err)
	}
	if in.TTL < time.Second {
		return nil, fmt.Errorf("instance %s: TTL %s: want at least 1s", in.ID, in.TTL)
	}
	return &Registration{c: c, in: in, log: log, checkID: "medmesh-ttl-" + in.ID}, nil
}

// Register adds the instance with its check critical; StartHeartbeat
// makes it routable once the server serves. Consul may still be
// starting, so it retries for a while.
func (r *Registration) Register(ctx context.Context) error {
	reg := &api.AgentServiceRegistration{
		ID: r.in.ID, Name: r.in.Service, Address: "127.0.0.1", Port: r.in.Port,
		Tags: []string{"medmesh-example"},
		Meta: r.in.Meta,
		Check: &api.AgentServiceCheck{
			CheckID: r.checkID, Name: "heartbeat from " + r.in.ID,
			TTL: r.in.TTL.String(), Status: api.HealthCritical, Notes: "starting: waiting for the xDS listener",
			// A crashed instance (no deregistration) is reaped eventually;
			// one minute is Consul's minimum.
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := r.c.Agent().ServiceRegister(reg)
		if err == nil {
			r.log.Info("registered in Consul", "service", r.in.Service, "meta", fmt.Sprint(reg.Meta), "check", r.checkID)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registering in Consul at %s: %w", r.in.Consul, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// SetHealthy changes what the TTL check reports and reports it at once,
// so the mesh reacts without waiting for the next heartbeat.
func (r *Registration) SetHealthy(ok bool, why string) {
	r.mu.Lock()
	changed := r.healthy != ok
	r.healthy = ok
	r.mu.Unlock()
	if changed {
		state := api.HealthPassing
		if !ok {
			state = api.HealthCritical
		}
		r.log.Info("health check now "+state, "reason", why)
	}
	r.beat(why)
}

func (r *Registration) beat(note string) {
	r.mu.Lock()
	status := api.HealthCritical
	if r.healthy {
		status = api.HealthPassing
	}
	r.mu.Unlock()
	err := r.c.Agent().UpdateTTL(r.checkID, note, status)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil && !r.failing:
		r.failing = true
		r.log.Warn("cannot update the Consul health check; will keep trying", "err", err)
	case err == nil && r.failing:
		r.failing = false
		r.log.Info("Consul health check updated again")
	}
}

// Heartbeat keeps the TTL check fresh until stopped.
type Heartbeat struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Stop stops the heartbeat and waits for it.
func (h *Heartbeat) Stop() { h.cancel(); <-h.done }

// StartHeartbeat marks the instance passing and refreshes the TTL check
// three times per TTL, so one lost update does not flap the instance.
func (r *Registration) StartHeartbeat(ctx context.Context) *Heartbeat {
	ctx, cancel := context.WithCancel(ctx)
	h := &Heartbeat{cancel: cancel, done: make(chan struct{})}
	r.SetHealthy(true, "serving")
	go func() {
		defer close(h.done)
		t := time.NewTicker(r.in.TTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.beat("heartbeat")
			}
		}
	}()
	return h
}

// Deregister removes the instance (and its check) from Consul; safe to
// call more than once.
func (r *Registration) Deregister() {
	r.deregOnce.Do(func() {
		if err := r.c.Agent().ServiceDeregister(r.in.ID); err != nil {
			r.log.Warn("cannot deregister from Consul", "err", err)
			return
		}
		r.log.Info("deregistered from Consul")
	})
}
