// Command sites measures what crosses sites, through real Consul cluster
// peering on loopback: a hub and an edge site, each its own Consul
// datacenter, peered; the site's control plane (in process, --site
// site-a, the default residency policy) with simulated Envoys connected.
//
//   - sites_health_to_peer_proxies_p50_ms / _p99_ms: from a health change
//     of a (non-PHI) service instance at the hub (the TTL check update, as
//     a workload reports it) until every Envoy of the site holds it
//     (the endpoint appears or disappears).
//   - sites_reconnect_pushes: the hub's Consul is stopped until the site
//     marks it stale, then started again; snapshots and endpoint updates
//     the site's Envoys receive for it afterwards, when nothing changed.
//     It must be 0.
//
// It prints BENCH lines for `make bench`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/controlplane"
	"medmesh/internal/consulagent"
	"medmesh/internal/simproxy"
	"medmesh/registry"
)

func main() {
	rounds := flag.Int("rounds", 20, "health changes to time")
	envoys := flag.Int("proxies", 20, "simulated Envoys at the site")
	flag.Parse()
	if err := run(*rounds, *envoys); err != nil {
		fmt.Fprintln(os.Stderr, "sites bench:", err)
		os.Exit(1)
	}
}

// counts counts the updates every Envoy received.
type counts struct {
	mu sync.Mutex
	n  int
}

func (c *counts) add(string, time.Time) { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counts) get() int              { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func run(rounds, envoys int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "medmesh-bench-sites-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := consulagent.NewPeeringCA(dir)
	if err != nil {
		return err
	}
	var agents []*consulagent.Agent
	defer func() {
		for _, a := range agents {
			a.Stop()
		}
	}()
	start := func(dc string) (*consulagent.Agent, error) {
		sub, err := os.MkdirTemp(dir, dc)
		if err != nil {
			return nil, err
		}
		a, err := consulagent.NewSite(sub, dc, ca, false)
		if err != nil {
			return nil, err
		}
		agents = append(agents, a)
		return a, a.Start(ctx)
	}
	hub, err := start("hub")
	if err != nil {
		return err
	}
	site, err := start("site-a")
	if err != nil {
		return err
	}
	if err := consulagent.Peer(ctx, hub, "hub", site, "site-a"); err != nil {
		return err
	}
	const id = "imaging-hub-1"
	if err := hub.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "imaging", Address: "127.0.0.1", Port: 9200,
		Meta:  map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false", "medmesh-protocol": "grpc"},
		Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "1h", Status: api.HealthPassing},
	}); err != nil {
		return err
	}
	if err := consulagent.Export(ctx, hub, map[string][]string{"imaging": {"site-a"}}); err != nil {
		return err
	}
	// A local caller, so that flows from this site exist.
	if err := site.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "his-1", Name: "his", Address: "127.0.0.1", Port: 9300}); err != nil {
		return err
	}

	log := slog.New(slog.DiscardHandler)
	src := registry.NewConsul(registry.ConsulOptions{Client: site.Client(), Logger: log})
	cp, err := controlplane.New(controlplane.Options{Logger: log, Source: src, Site: "site-a",
		XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	go cp.Run(ctx)
	conn, err := grpc.NewClient(cp.XDSAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	updates := &counts{}
	var fleet []*simproxy.Proxy
	for i := range envoys {
		p, err := simproxy.Start(ctx, conn, simproxy.Options{NodeID: fmt.Sprintf("his-envoy-%d", i), Cluster: "his",
			Delta: i%2 == 1, OnUpdate: updates.add})
		if err != nil {
			return err
		}
		fleet = append(fleet, p)
	}
	all := func(want int) error {
		for _, p := range fleet {
			if err := p.Wait(ctx, func(s simproxy.State) bool { return imagingEndpoints(s) == want }); err != nil {
				return err
			}
		}
		return nil
	}
	if err := all(1); err != nil {
		return fmt.Errorf("the hub's imaging never reached the site's proxies: %w", err)
	}

	var took []time.Duration
	status := []string{api.HealthCritical, api.HealthPassing}
	for i := range rounds {
		want := i % 2 // critical first: 0 endpoints, then passing: 1
		t0 := time.Now()
		if err := hub.Client().Agent().UpdateTTL("ttl-"+id, "bench", status[want]); err != nil {
			return err
		}
		if err := all(want); err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		took = append(took, time.Since(t0))
	}
	if rounds%2 == 1 { // end passing, as the reconnect check expects
		if err := hub.Client().Agent().UpdateTTL("ttl-"+id, "bench", api.HealthPassing); err != nil {
			return err
		}
		if err := all(1); err != nil {
			return err
		}
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	pct := func(p float64) float64 { return float64(took[int(p*float64(len(took)-1))].Microseconds()) / 1000 }

	// Reconnect churn: stop the hub until the site marks it stale, start it
	// again, wait until it is active and its import re-read, then count.
	before := updates.get()
	if err := hub.Stop(); err != nil {
		return err
	}
	if err := waitPeer(ctx, src, func(p registry.PeerStatus) bool { return p.Stale() }); err != nil {
		return err
	}
	if err := hub.Start(ctx); err != nil {
		return err
	}
	if err := waitPeer(ctx, src, func(p registry.PeerStatus) bool { return !p.Stale() && p.Instances == 1 }); err != nil {
		return err
	}
	// A health read through the peering after the reconnect proves the
	// site heard the hub again; anything it caused has been delivered by
	// the time every proxy holds this sentinel change.
	if err := hub.Client().Agent().UpdateTTL("ttl-"+id, "bench", api.HealthCritical); err != nil {
		return err
	}
	if err := all(0); err != nil {
		return err
	}
	churn := updates.get() - before - len(fleet) // the sentinel: one EDS update per proxy

	fmt.Printf("BENCH sites_health_to_peer_proxies_p50_ms=%.1f\n", pct(0.5))
	fmt.Printf("BENCH sites_health_to_peer_proxies_p99_ms=%.1f\n", pct(0.99))
	fmt.Printf("BENCH sites_health_to_peer_proxies_max_ms=%.1f   (%d changes, %d proxies, through real peering)\n", pct(1), rounds, len(fleet))
	fmt.Printf("BENCH sites_reconnect_pushes=%d\n", churn)
	return nil
}

func imagingEndpoints(s simproxy.State) int {
	cla, ok := s.Resources[resource.EndpointType]["imaging"].(*endpointv3.ClusterLoadAssignment)
	if !ok {
		return -1
	}
	n := 0
	for _, l := range cla.GetEndpoints() {
		n += len(l.GetLbEndpoints())
	}
	return n
}

func waitPeer(ctx context.Context, src *registry.Consul, cond func(registry.PeerStatus) bool) error {
	for {
		for _, p := range src.Status().Peers {
			if p.Name == "hub" && cond(p) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("the hub peering never reached the expected state")
		case <-time.After(50 * time.Millisecond):
		}
	}
}
