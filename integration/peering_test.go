package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/controlplane/bootstrap"
	"medmesh/controlplane/ir"
	"medmesh/internal/consulagent"
	"medmesh/internal/testutil"
	"medmesh/registry"
)

// startSite starts a site's Consul server: its own datacenter, peering
// enabled, state on disk (a restart keeps its peerings, as in production).
func startSite(t *testing.T, ca *consulagent.PeeringCA, dc string) *consulagent.Agent {
	t.Helper()
	a, err := consulagent.NewSite(t.TempDir(), dc, ca, false)
	if err != nil {
		t.Fatal(err)
	}
	return testutil.StartAgent(t, a)
}

// peeredSites starts the hub's and site-a's Consul servers and peers them:
// the hub names the peering after the site, the site names it "hub". The
// context bounds the test.
func peeredSites(t *testing.T) (hub, site *consulagent.Agent, ctx context.Context) {
	t.Helper()
	ca, err := consulagent.NewPeeringCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hub, site = startSite(t, ca, "hub"), startSite(t, ca, "site-a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	t.Cleanup(cancel)
	if err := consulagent.Peer(ctx, hub, "hub", site, site.Datacenter); err != nil {
		t.Fatal(err)
	}
	return hub, site, ctx
}

// siteSource is a site's Consul source, listing peerings often.
func siteSource(a *consulagent.Agent) sourceFunc {
	return func(log *slog.Logger) registry.Source {
		return registry.NewConsul(registry.ConsulOptions{Client: a.Client(), Coalesce: 20 * time.Millisecond,
			PeerPoll: 100 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, Logger: log})
	}
}

// exportAll exports services to one peer.
func exportAll(ctx context.Context, a *consulagent.Agent, consumer string, services ...string) error {
	m := map[string][]string{}
	for _, s := range services {
		m[s] = []string{consumer}
	}
	return consulagent.Export(ctx, a, m)
}

// nodeOf is the bootstrap of a proxyless workload of a service.
func nodeOf(cp *cpHandle, nodeID, service string) bootstrap.Options {
	return bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: nodeID, Service: service}
}

// watchCatalogs runs a Consul source and keeps its latest catalog.
type catalogWatch struct {
	src    *registry.Consul
	latest chan *registry.Catalog
	last   *registry.Catalog
}

func (w *catalogWatch) current() *registry.Catalog {
	select {
	case c := <-w.latest:
		w.last = c
	default:
	}
	return w.last
}

func watchSite(t *testing.T, a *consulagent.Agent, grace time.Duration) *catalogWatch {
	t.Helper()
	src := registry.NewConsul(registry.ConsulOptions{
		Client: a.Client(), Coalesce: 20 * time.Millisecond, PeerPoll: 100 * time.Millisecond, PeerStaleGrace: grace,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := &catalogWatch{src: src, latest: make(chan *registry.Catalog, 1)}
	go src.Run(ctx, w.latest)
	return w
}

func importedFrom(cat *registry.Catalog, service, peer string) []registry.Instance {
	if cat == nil {
		return nil
	}
	var out []registry.Instance
	if s, ok := cat.Service(service); ok {
		for _, in := range s.Instances {
			if in.Peer == peer {
				out = append(out, in)
			}
		}
	}
	return out
}

func peerStatus(w *catalogWatch, name string) (registry.PeerStatus, bool) {
	for _, p := range w.src.Status().Peers {
		if p.Name == name {
			return p, true
		}
	}
	return registry.PeerStatus{}, false
}

// Two sites joined by real Consul cluster peering: the site sees what the
// hub exports, with the hub's site as locality and its health followed
// live; its own instances decide its services' settings; no proxy is sent
// another site's endpoints yet; and when the hub goes away the imports are
// kept as last heard of (marked stale), withdrawn only after the grace
// period, and back when the hub returns.
func TestPeeredSitesImportServices(t *testing.T) {
	hub, site, ctx := peeredSites(t)
	register(t, hub.Client(), "imaging", "imaging-hub-1", 9200, map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false"}, api.HealthPassing)
	register(t, hub.Client(), "emr", "emr-hub-1", 9100, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "http"}, api.HealthPassing)
	register(t, site.Client(), "emr", "emr-1", 9101, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}, api.HealthPassing)
	if err := exportAll(ctx, hub, "site-a", "imaging", "emr"); err != nil {
		t.Fatal(err)
	}

	const grace = 4 * time.Second
	w := watchSite(t, site, grace)
	eventually(t, "the hub's services imported at site-a", func() error {
		cat := w.current()
		im, emr := importedFrom(cat, "imaging", "hub"), importedFrom(cat, "emr", "hub")
		if len(im) != 1 || len(emr) != 1 {
			return fmt.Errorf("imported imaging %v, emr %v", im, emr)
		}
		if im[0].Locality.Site != "hub" || im[0].Health != registry.HealthPassing {
			return fmt.Errorf("imported imaging instance %+v: want site hub, passing", im[0])
		}
		return nil
	})
	cat := w.current()
	emr, _ := cat.Service("emr")
	if emr.Protocol != registry.ProtocolGRPC || len(emr.Instances) != 2 {
		t.Fatalf("emr at site-a: protocol %s with %d instances; want the local instance's grpc, local and imported", emr.Protocol, len(emr.Instances))
	}
	if p, ok := peerStatus(w, "hub"); !ok || p.State != "ACTIVE" || p.Site != "hub" || p.Stale() || len(p.Imported) != 2 {
		t.Fatalf("peer status %+v", p)
	}

	// No proxy is sent another site's endpoints (residency decides that
	// later): only the local EMR instance is routable, and a service only
	// the hub has is not in site-a's mesh.
	mesh := ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local"})
	if _, ok := mesh.Service("imaging"); ok {
		t.Fatal("a service only the hub runs is routable at site-a")
	}
	if s, ok := mesh.Service("emr"); !ok || len(s.Instances) != 1 || s.Instances[0].ID != "emr-1" {
		t.Fatalf("emr in site-a's mesh: %+v", s)
	}

	// Health at the hub is followed live through the peering.
	setHealth(t, hub.Client(), "imaging-hub-1", api.HealthCritical)
	eventually(t, "the hub's health change seen at site-a", func() error {
		if im := importedFrom(w.current(), "imaging", "hub"); len(im) != 1 || im[0].Health != registry.HealthCritical {
			return fmt.Errorf("imported imaging %+v", im)
		}
		return nil
	})
	setHealth(t, hub.Client(), "imaging-hub-1", api.HealthPassing)

	// The hub goes away: imports are kept, marked stale, then withdrawn.
	if err := hub.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the hub marked stale at site-a", func() error {
		p, _ := peerStatus(w, "hub")
		if !p.Stale() || p.Withdrawn {
			return fmt.Errorf("peer status %+v", p)
		}
		if len(importedFrom(w.current(), "imaging", "hub")) != 1 {
			return fmt.Errorf("a stale peer's imports were dropped within the grace period")
		}
		return nil
	})
	eventually(t, "the hub's imports withdrawn after the grace period", func() error {
		p, _ := peerStatus(w, "hub")
		if !p.Withdrawn {
			return fmt.Errorf("peer status %+v", p)
		}
		if n := len(importedFrom(w.current(), "emr", "hub")); n != 0 {
			return fmt.Errorf("%d imported emr instances still served", n)
		}
		if s, ok := w.current().Service("emr"); !ok || len(s.Instances) != 1 {
			return fmt.Errorf("site-a lost its own emr: %+v", s)
		}
		return nil
	})

	// The hub is back: the peering recovers and the imports return.
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the hub's imports back at site-a", func() error {
		p, _ := peerStatus(w, "hub")
		if p.Stale() || p.Withdrawn || len(importedFrom(w.current(), "imaging", "hub")) != 1 {
			return fmt.Errorf("peer status %+v", p)
		}
		return nil
	})
}
