package integration

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/registry"
)

// The Consul source follows health with a blocking query per service
// while few services are listed, and with one query on every check
// above ServiceWatches. Both must see the same changes: an instance's
// own check, a node check, a deregistration; and the source must cross
// from one way to the other and back as services come and go without
// losing a change. A real Consul agent answers both.
func TestConsulSourceFollowsHealthBothWays(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	register(t, c, "emr", "emr-1", 9001, nil, api.HealthPassing)
	register(t, c, "emr", "emr-2", 9002, nil, api.HealthPassing)
	register(t, c, "his", "his-1", 9003, nil, api.HealthPassing)

	src := registry.NewConsul(registry.ConsulOptions{
		Client: c, Coalesce: 10 * time.Millisecond, ServiceWatches: 2, Logger: slog.New(slog.DiscardHandler),
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *registry.Catalog, 1)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })

	var last *registry.Catalog
	// want waits for a catalog where every named instance has the given
	// health ("gone": absent) and the source follows health as mode says.
	want := func(mode string, health map[string]string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			if last != nil && src.Status().HealthWatch == mode {
				if diff := healthDiff(last, health); diff == "" {
					return
				}
			}
			select {
			case last = <-out:
			case <-time.After(100 * time.Millisecond): // the mode may change without a new catalog
			case <-deadline:
				t.Fatalf("no catalog with %v following health %s; last: %s (following %q)",
					health, mode, healthDiff(last, health), src.Status().HealthWatch)
			}
		}
	}

	// Two services: each followed on its own.
	want("per-service", map[string]string{"emr-1": "passing", "emr-2": "passing", "his-1": "passing"})
	setHealth(t, c, "emr-1", api.HealthCritical)
	want("per-service", map[string]string{"emr-1": "critical", "emr-2": "passing", "his-1": "passing"})

	// A node check (no service) makes every instance on the node
	// critical: the service watches see their nodes' checks.
	if err := c.Agent().CheckRegister(&api.AgentCheckRegistration{ID: "node-maint", Name: "node maintenance",
		AgentServiceCheck: api.AgentServiceCheck{TTL: "10m", Status: api.HealthCritical}}); err != nil {
		t.Fatal(err)
	}
	want("per-service", map[string]string{"emr-1": "critical", "emr-2": "critical", "his-1": "critical"})
	if err := c.Agent().CheckDeregister("node-maint"); err != nil {
		t.Fatal(err)
	}
	want("per-service", map[string]string{"emr-1": "critical", "emr-2": "passing", "his-1": "passing"})

	// A third service: above ServiceWatches, one watch on every check.
	register(t, c, "imaging", "imaging-1", 9004, nil, api.HealthPassing)
	want("all-checks", map[string]string{"emr-1": "critical", "imaging-1": "passing"})
	setHealth(t, c, "emr-1", api.HealthPassing)
	setHealth(t, c, "his-1", api.HealthWarning)
	want("all-checks", map[string]string{"emr-1": "passing", "his-1": "warning", "imaging-1": "passing"})

	// Back to two: each service on its own again, and the changes made
	// while crossing over are there.
	if err := c.Agent().ServiceDeregister("imaging-1"); err != nil {
		t.Fatal(err)
	}
	want("per-service", map[string]string{"imaging-1": "gone", "emr-1": "passing", "his-1": "warning"})
	setHealth(t, c, "emr-2", api.HealthCritical)
	want("per-service", map[string]string{"imaging-1": "gone", "emr-1": "passing", "emr-2": "critical", "his-1": "warning"})

	// An instance deregistered and one added within a followed service.
	if err := c.Agent().ServiceDeregister("emr-2"); err != nil {
		t.Fatal(err)
	}
	register(t, c, "emr", "emr-3", 9005, nil, api.HealthPassing)
	want("per-service", map[string]string{"emr-1": "passing", "emr-2": "gone", "emr-3": "passing", "his-1": "warning"})

	// A whole service gone while followed service by service: the
	// catalog loses it with no other change to carry it.
	if err := c.Agent().ServiceDeregister("his-1"); err != nil {
		t.Fatal(err)
	}
	want("per-service", map[string]string{"emr-1": "passing", "emr-3": "passing", "his-1": "gone"})
}

// healthDiff says which instances differ from want ("" when none).
func healthDiff(cat *registry.Catalog, want map[string]string) string {
	if cat == nil {
		return "no catalog yet"
	}
	got := map[string]string{}
	for _, s := range cat.Services {
		for _, in := range s.Instances {
			got[in.ID] = string(in.Health)
		}
	}
	diff := ""
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			g = "gone"
		}
		if g != w {
			diff += fmt.Sprintf(" %s=%s (want %s)", id, g, w)
		}
	}
	return diff
}
