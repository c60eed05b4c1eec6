package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/registry"
)

// registration is this instance's entry in Consul and its TTL check.
type registration struct {
	c       *api.Client
	o       *options
	log     *slog.Logger
	checkID string

	mu      sync.Mutex
	healthy bool
	failing bool // last TTL update failed; logged once per outage

	deregOnce sync.Once
}

func newRegistration(o *options, log *slog.Logger) (*registration, error) {
	cfg := api.DefaultConfig()
	cfg.Address = o.consul
	// Bounded calls: a stopping instance must not hang on a Consul that
	// is already gone (the demo stops Consul last, an operator may not).
	cfg.HttpClient = &http.Client{Timeout: 5 * time.Second}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("--consul %q: %w", o.consul, err)
	}
	return &registration{c: c, o: o, log: log, checkID: "medmesh-ttl-" + o.id}, nil
}

// register adds the instance with its check critical; setHealthy(true)
// makes it routable once the server serves. Consul may still be starting,
// so it retries for a while.
func (r *registration) register(ctx context.Context) error {
	km := kindMeta[r.o.service]
	reg := &api.AgentServiceRegistration{
		ID: r.o.id, Name: r.o.service, Address: "127.0.0.1", Port: r.o.port,
		Tags: []string{"medmesh-example"},
		Meta: map[string]string{
			registry.MetaKind:     km.kind,
			registry.MetaProtocol: "grpc",
			registry.MetaLB:       r.o.lb,
		},
		Check: &api.AgentServiceCheck{
			CheckID: r.checkID, Name: "heartbeat from " + r.o.id,
			TTL: r.o.ttl.String(), Status: api.HealthCritical, Notes: "starting: waiting for the xDS listener",
			// A crashed instance (no deregistration) is reaped eventually;
			// one minute is Consul's minimum.
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := r.c.Agent().ServiceRegister(reg)
		if err == nil {
			r.log.Info("registered in Consul", "service", r.o.service, "meta", fmt.Sprint(reg.Meta), "check", r.checkID)
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// setHealthy changes what the TTL check reports and reports it at once,
// so the mesh reacts without waiting for the next heartbeat.
func (r *registration) setHealthy(ok bool, why string) {
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

func (r *registration) beat(note string) {
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

type heartbeat struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (h *heartbeat) stop() { h.cancel(); <-h.done }

// startHeartbeat marks the instance passing and refreshes the TTL check
// three times per TTL, so one lost update does not flap the instance.
func (r *registration) startHeartbeat(ctx context.Context) *heartbeat {
	ctx, cancel := context.WithCancel(ctx)
	h := &heartbeat{cancel: cancel, done: make(chan struct{})}
	r.setHealthy(true, "serving")
	go func() {
		defer close(h.done)
		t := time.NewTicker(r.o.ttl / 3)
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

// deregister removes the instance (and its check) from Consul; safe to
// call more than once.
func (r *registration) deregister() {
	r.deregOnce.Do(func() {
		if err := r.c.Agent().ServiceDeregister(r.o.id); err != nil {
			r.log.Warn("cannot deregister from Consul", "err", err)
			return
		}
		r.log.Info("deregistered from Consul")
	})
}
