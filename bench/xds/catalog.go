package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/consul/api"

	"medmesh/registry"
)

// synthetic is a generated hospital catalog: services spread over clinical
// kinds, protocols and load-balancing policies so that translation does
// the same kind of work it does for a real registry, with instances on a
// smaller set of nodes as in a real data centre.
type synthetic struct {
	services  []synthService
	nodes     int
	instances int // per service
}

type synthService struct {
	name string
	meta map[string]string
	// port is shared by every instance of the service; instances differ
	// by node address, so (address, port) identifies an endpoint.
	port int
}

type synthInstance struct {
	service, id string
	node, addr  string
	nodeNum     int
	port        int
}

var (
	kinds = []registry.Kind{registry.KindEMR, registry.KindHIS, registry.KindImaging, registry.KindVitals, registry.KindGeneric}
	// TCP is left out: every TCP service claims a local listener port, and
	// a thousand of them would benchmark port clashes, not the mesh.
	protocols = []registry.Protocol{registry.ProtocolHTTP, registry.ProtocolGRPC, registry.ProtocolHTTP, registry.ProtocolHTTP2}
	lbs       = []registry.LBPolicy{registry.LBRoundRobin, registry.LBLeastRequest, registry.LBRingHash, registry.LBMaglev, registry.LBRandom, registry.LBRoundRobin}
	zones     = []string{"a", "b", "c"}
)

func newSynthetic(services, instances int) *synthetic {
	s := &synthetic{instances: instances}
	// About five instances per node, but never fewer nodes than instances
	// per service, so no two instances of one service share an address.
	s.nodes = max(services*instances/5, instances, 1)
	for i := 0; i < services; i++ {
		kind := kinds[i%len(kinds)]
		meta := map[string]string{
			registry.MetaKind:     string(kind),
			registry.MetaProtocol: string(protocols[(i/len(kinds))%len(protocols)]),
			registry.MetaLB:       string(lbs[i%len(lbs)]),
		}
		if i%7 == 0 {
			meta[registry.MetaPHI] = "false"
		}
		s.services = append(s.services, synthService{
			name: fmt.Sprintf("%s-%04d", kind, i), meta: meta, port: 8000 + i%1000,
		})
	}
	return s
}

func (s *synthetic) instance(svc, j int) synthInstance {
	n := (svc*s.instances + j) % s.nodes
	return synthInstance{
		service: s.services[svc].name,
		id:      fmt.Sprintf("%s-%d", s.services[svc].name, j),
		node:    fmt.Sprintf("node-%05d", n),
		nodeNum: n,
		addr:    fmt.Sprintf("10.%d.%d.%d", 1+n/65536, (n/256)%256, n%256),
		port:    s.services[svc].port,
	}
}

func (s *synthetic) nodeMeta(node int) map[string]string {
	return map[string]string{
		registry.MetaRegion: "eu-west",
		registry.MetaZone:   "zone-" + zones[node%len(zones)],
		registry.MetaSite:   fmt.Sprintf("site-%d", node%2),
	}
}

func checkID(id string) string { return "check-" + id }

// register writes the whole catalog with a pool of workers, one catalog
// registration (service plus its passing check) per instance. Synthetic
// nodes are not the agent's own, so its anti-entropy leaves them alone.
func (s *synthetic) register(ctx context.Context, c *api.Client, workers int) error {
	type job struct{ svc, j int }
	jobs := make(chan job)
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for jb := range jobs {
				if firstErr.Load() != nil {
					continue
				}
				if err := s.registerOne(ctx, c, jb.svc, jb.j); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	// Instance-major order spreads concurrent writes over many services.
feed:
	for j := 0; j < s.instances; j++ {
		for svc := range s.services {
			select {
			case jobs <- job{svc, j}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

func (s *synthetic) registerOne(ctx context.Context, c *api.Client, svc, j int) error {
	in := s.instance(svc, j)
	reg := &api.CatalogRegistration{
		Node: in.node, Address: in.addr, NodeMeta: s.nodeMeta(in.nodeNum),
		Service: &api.AgentService{
			ID: in.id, Service: in.service, Port: in.port, Meta: s.services[svc].meta,
			Weights: api.AgentWeights{Passing: 1, Warning: 1},
		},
		Check: &api.AgentCheck{
			Node: in.node, CheckID: checkID(in.id), Name: "synthetic health", ServiceID: in.id,
			Status: api.HealthPassing,
		},
	}
	if _, err := c.Catalog().Register(reg, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("registering %s: %w", in.id, err)
	}
	return nil
}

// setHealth rewrites one instance's check: a check-only registration that
// leaves the node and the service as they are.
func setHealth(ctx context.Context, c *api.Client, in synthInstance, status string) error {
	reg := &api.CatalogRegistration{
		Node: in.node, Address: in.addr, SkipNodeUpdate: true,
		Check: &api.AgentCheck{
			Node: in.node, CheckID: checkID(in.id), Name: "synthetic health", ServiceID: in.id,
			Status: status,
		},
	}
	_, err := c.Catalog().Register(reg, (&api.WriteOptions{}).WithContext(ctx))
	return err
}
