package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/proto"

	"medmesh/api/wire"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/clinical"
	"medmesh/internal/simproxy"
)

// updateCounter counts the updates a simulated Envoy receives, by type.
type updateCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *updateCounter) add(typeURL string, _ time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[typeURL]++
}

func (c *updateCounter) get(typeURL string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[typeURL]
}

func svidOf(p *simproxy.Proxy) []byte {
	sec, ok := p.Resource(resource.SecretType, wire.SVIDSecret).(*tlsv3.Secret)
	if !ok {
		return nil
	}
	return sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
}

// The offline drill: the hub goes away for several SVID lifetimes while a
// site's local calls run. Local calls never fail, the site renews its
// proxies' SVIDs from its own CA, the hub's imports are kept (stale, within
// the grace) rather than read as deleted, and when the hub returns nothing
// is pushed for it: the mesh did not change.
func TestSiteKeepsWorkingWhileHubIsDown(t *testing.T) {
	hub, site, ctx := peeredSites(t)
	register(t, hub.Client(), "imaging", "imaging-hub-1", serveClinical(t, "imaging-hub-1"),
		map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false", "medmesh-protocol": "grpc"}, api.HealthPassing)
	if err := exportAll(ctx, hub, "site-a", "imaging"); err != nil {
		t.Fatal(err)
	}

	// The site's CA issues short SVIDs to its Envoys (renewed at
	// half-life, locally); its proxyless workloads hold longer ones from
	// the same root.
	dir := t.TempDir()
	const ttl = 3 * time.Second
	siteCA, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: dir, Site: "site-a", SVIDTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	filesCA, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: dir, Site: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t, siteSource(site), func(o *controlplane.Options) {
		o.Identities, o.Site, o.Dev = siteCA, "site-a", true // Dev: the simulated Envoy on loopback needs no proof
	})

	port := freePort(t)
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "emr-1", Service: "emr", SVIDDir: svidDir(t, filesCA, "emr")},
		port, true, &clinical.Server{Instance: "emr-1"})
	register(t, site.Client(), "emr", "emr-1", port, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}, api.HealthPassing)
	register(t, site.Client(), "his", "his-1", freePort(t), map[string]string{"medmesh-protocol": "grpc"}, api.HealthPassing)
	setIntention(t, site.Client(), "emr", "his", api.IntentionActionAllow)
	his := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-1", Service: "his",
		SVIDDir: svidDir(t, filesCA, "his")}, "emr", true)
	eventually(t, "his calls emr at site-a", func() error { _, err := servedBy(ctx, his, 1); return err })

	counts := &updateCounter{}
	envoy := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "his-envoy-1", Cluster: "his", Validate: validateAll, OnUpdate: counts.add})
	if err := envoy.Wait(ctx, func(s simproxy.State) bool { return endpointCount(s, "imaging") == 1 }); err != nil {
		t.Fatalf("the hub's imaging never reached site-a's Envoy: %v", err)
	}
	eventually(t, "the Envoy holds an SVID", func() error {
		if svidOf(envoy) == nil {
			return fmt.Errorf("no SVID secret")
		}
		return nil
	})
	imagingBefore := proto.Clone(envoy.Resource(resource.ClusterType, "imaging"))

	// Local calls run throughout; none may fail.
	var calls, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond): // call pacing, not synchronisation
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := clinical.Fetch(cctx, his, "Patient")
			cancel()
			calls.Add(1)
			if err != nil {
				failed.Add(1)
				t.Logf("local call failed: %v", err)
			}
		}
	}()

	if err := hub.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the hub marked stale at site-a", func() error {
		for _, p := range proxies(t, cp).Source.Peers {
			if p.Name == "hub" && !p.StaleSince.IsZero() {
				return nil
			}
		}
		return fmt.Errorf("peers %+v", proxies(t, cp).Source.Peers)
	})
	eventually(t, "the hub stale in /metrics", wantMetric(t, cp, `medmesh_peer_stale{peer="hub",site="hub"}`, 1))
	if _, ok := metric(t, cp, `medmesh_peer_stale_since_timestamp_seconds{peer="hub",site="hub"}`); !ok {
		t.Error("the stale hub has no stale-since time in /metrics")
	}
	if life, ok := metric(t, cp, "medmesh_svid_earliest_expiry_lifetime_seconds"); !ok || life <= 0 || life > ttl.Seconds() {
		t.Errorf("SVID lifetime in /metrics = %v (exposed %v), want in (0, %v]", life, ok, ttl.Seconds())
	}
	// Three renewals from the site's own CA while the hub is away.
	seen := [][]byte{svidOf(envoy)}
	eventually(t, "three SVID renewals without the hub", func() error {
		if cur := svidOf(envoy); string(cur) != string(seen[len(seen)-1]) {
			seen = append(seen, cur)
		}
		if len(seen) < 4 {
			return fmt.Errorf("%d renewals so far", len(seen)-1)
		}
		return nil
	})
	if n := endpointCount(envoy.State(), "imaging"); n != 1 {
		t.Fatalf("the unreachable hub's imaging has %d endpoints at site-a: a stale import was read as deleted", n)
	}
	close(stop)
	<-done
	if calls.Load() == 0 || failed.Load() != 0 {
		t.Fatalf("%d of %d local calls failed while the hub was down", failed.Load(), calls.Load())
	}

	// The hub returns; nothing changed, so nothing is pushed for it. A
	// sentinel registered after the peering is active again is the
	// only change the Envoy may see (one cluster push).
	cdsBefore := counts.get(resource.ClusterType)
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the hub active again at site-a", func() error {
		for _, p := range proxies(t, cp).Source.Peers {
			if p.Name == "hub" && p.StaleSince.IsZero() && p.Instances == 1 {
				return nil
			}
		}
		return fmt.Errorf("peers %+v", proxies(t, cp).Source.Peers)
	})
	eventually(t, "the hub no longer stale in /metrics", wantMetric(t, cp, `medmesh_peer_stale{peer="hub",site="hub"}`, 0))
	register(t, site.Client(), "sentinel", "sentinel-1", freePort(t), nil, api.HealthPassing)
	if err := envoy.Wait(ctx, func(s simproxy.State) bool { return s.Resources[resource.ClusterType]["sentinel"] != nil }); err != nil {
		t.Fatal(err)
	}
	// The proxy counts an update after applying it (OnUpdate runs
	// outside its lock), so the count may trail the state just seen.
	eventually(t, "the sentinel's cluster push counted", func() error {
		if counts.get(resource.ClusterType) == cdsBefore {
			return fmt.Errorf("no cluster push counted yet")
		}
		return nil
	})
	if got := counts.get(resource.ClusterType) - cdsBefore; got != 1 {
		t.Errorf("%d cluster pushes from the hub's return and the sentinel; want 1 (the sentinel's)", got)
	}
	if !proto.Equal(imagingBefore, envoy.Resource(resource.ClusterType, "imaging")) {
		t.Error("the hub's imaging cluster changed across the outage")
	}
}
