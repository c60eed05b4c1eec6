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

	w := followHealth(t, registry.ConsulOptions{Client: c, ServiceWatches: 2})
	want := w.want

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

// healthFollower runs a Consul source and waits for the catalogs it
// emits and the way it follows health.
type healthFollower struct {
	t    *testing.T
	src  *registry.Consul
	out  chan *registry.Catalog
	last *registry.Catalog
}

// followHealth runs a Consul source with o, coalescing and retrying
// fast and listing peerings often (unless o says how often), until the
// test ends.
func followHealth(t *testing.T, o registry.ConsulOptions) *healthFollower {
	t.Helper()
	o.Coalesce, o.BackoffMin, o.BackoffMax = 10*time.Millisecond, 50*time.Millisecond, 500*time.Millisecond
	if o.PeerPoll == 0 {
		o.PeerPoll = 100 * time.Millisecond
	}
	o.Logger = slog.New(slog.DiscardHandler)
	w := &healthFollower{t: t, src: registry.NewConsul(o), out: make(chan *registry.Catalog, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.src.Run(ctx, w.out) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// want waits for a catalog where every named instance has the given
// health ("gone": absent) and the source follows health as mode says.
func (w *healthFollower) want(mode string, health map[string]string) {
	w.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if w.last != nil && w.src.Status().HealthWatch == mode {
			if diff := healthDiff(w.last, health); diff == "" {
				return
			}
		}
		select {
		case w.last = <-w.out:
		case <-time.After(100 * time.Millisecond): // the mode may change without a new catalog
		case <-deadline:
			w.t.Fatalf("no catalog with %v following health %s; last: %s (following %q)",
				health, mode, healthDiff(w.last, health), w.src.Status().HealthWatch)
		}
	}
}

// Imported services are followed by a blocking query each, from the
// same client address as the site's own watches, so they count toward
// ServiceWatches (Consul limits connections per client address): once
// the site's services and its imports together pass it, the site's
// health is followed by the watch of every check, and back when an
// import goes. Two Consul datacenters peered for real.
func TestImportsCountTowardServiceWatches(t *testing.T) {
	hub, site, ctx := peeredSites(t)
	register(t, site.Client(), "emr", "emr-1", 9101, nil, api.HealthPassing)
	register(t, hub.Client(), "imaging", "imaging-hub-1", 9200, nil, api.HealthPassing)
	register(t, hub.Client(), "labs", "labs-hub-1", 9201, nil, api.HealthPassing)
	w := followHealth(t, registry.ConsulOptions{Client: site.Client(), ServiceWatches: 2})
	w.want("per-service", map[string]string{"emr-1": "passing"})

	// One local service and two imported: three queries of their own
	// would pass the limit of two.
	if err := exportAll(ctx, hub, "site-a", "imaging", "labs"); err != nil {
		t.Fatal(err)
	}
	w.want("all-checks", map[string]string{"emr-1": "passing", "imaging-hub-1": "passing", "labs-hub-1": "passing"})
	setHealth(t, site.Client(), "emr-1", api.HealthCritical)
	w.want("all-checks", map[string]string{"emr-1": "critical", "imaging-hub-1": "passing"})

	// The hub stops exporting one: two in all, each on its own again.
	if err := exportAll(ctx, hub, "site-a", "imaging"); err != nil {
		t.Fatal(err)
	}
	w.want("per-service", map[string]string{"emr-1": "critical", "imaging-hub-1": "passing", "labs-hub-1": "gone"})
	setHealth(t, site.Client(), "emr-1", api.HealthPassing)
	w.want("per-service", map[string]string{"emr-1": "passing", "imaging-hub-1": "passing"})
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
