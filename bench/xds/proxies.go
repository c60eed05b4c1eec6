package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"medmesh/internal/simproxy"
)

// fleet is the set of simulated proxies with the bookkeeping the benchmark
// needs. All measuring happens in simproxy's OnUpdate hook, on the
// proxies' own goroutines, right after a response is applied: no polling
// interval adds to the figures.
type fleet struct {
	proxies []*tracked
	conns   []*grpc.ClientConn
	cancel  context.CancelFunc
	decode  func(*anypb.Any) (proto.Message, error)

	wantServices int // without scopes, every proxy should hold this many CLAs and upstream clusters

	full     atomic.Int64
	fullDone chan struct{}

	change atomic.Pointer[change]

	resume map[string]*simproxy.Held
}

type tracked struct {
	idx         int
	id, service string
	delta       bool
	p           *simproxy.Proxy
	// scope is the services the proxy's service may call (shared by the
	// proxies of a service); nil: every service (a full mesh).
	scope map[string]bool
	// ready is closed once p is set: the hook may run before Start returns.
	ready  chan struct{}
	full   atomic.Bool
	fullAt atomic.Int64 // unix nanoseconds
}

// change is one endpoint health change being waited for.
type change struct {
	service     string
	endpoint    string // host:port
	wantPresent bool
	t0          time.Time

	converged []atomic.Bool
	latency   []time.Duration // by proxy; valid once converged is set
	remaining atomic.Int64
	done      chan struct{}
}

type fleetOptions struct {
	XDSAddr string
	// Conns is the number of gRPC connections the proxies share; 0 gives
	// every proxy its own, as a fleet of real Envoys has.
	Conns int
	// Starters bound how many streams are being opened at once.
	Starters int
	// Resume, by node ID, is what each proxy held on an earlier stream:
	// it reconnects naming it, as Envoy does (restart.go).
	Resume map[string]*simproxy.Held
	// Scopes are, by service, the services its proxies are sent
	// (configuration scoped by authorization); nil: every service.
	Scopes map[string]map[string]bool
}

// startFleet connects one simulated proxy per node, half SotW and half
// delta (alternating, so both variants cover every service).
func startFleet(ctx context.Context, o fleetOptions, nodes []synthInstance, wantServices int) (*fleet, error) {
	ctx, cancel := context.WithCancel(ctx)
	f := &fleet{cancel: cancel, wantServices: wantServices, fullDone: make(chan struct{}), decode: newInterner().decode,
		resume: o.Resume}
	nConns := o.Conns
	if nConns <= 0 || nConns > len(nodes) {
		nConns = len(nodes)
	}
	for i := 0; i < nConns; i++ {
		conn, err := grpc.NewClient(o.XDSAddr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Envoy has no 4 MiB receive limit; a large mesh's CDS response
			// must not fail in the simulation when it would not in Envoy.
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
		if err != nil {
			f.stop()
			return nil, err
		}
		f.conns = append(f.conns, conn)
	}
	for i, n := range nodes {
		f.proxies = append(f.proxies, &tracked{idx: i, id: n.id, service: n.service, delta: i%2 == 1, ready: make(chan struct{}),
			scope: o.Scopes[n.service]})
	}
	// Everyone at once, as after a control-plane restart or a site power
	// cut: the thundering herd is what a control plane must survive.
	err := f.connect(ctx, f.proxies, o.Starters)
	if err != nil {
		f.stop()
		return nil, err
	}
	return f, nil
}

// connect starts proxies with a pool of starters: opening a stream waits
// for its connection, so one at a time would serialise the handshakes.
func (f *fleet) connect(ctx context.Context, list []*tracked, starters int) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	work := make(chan *tracked)
	for w := 0; w < max(starters, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				p, err := simproxy.Start(ctx, f.conns[t.idx%len(f.conns)], simproxy.Options{
					NodeID: t.id, Cluster: t.service, Delta: t.delta, Decode: f.decode, Resume: f.resume[t.id],
					OnUpdate: func(typeURL string, at time.Time) { f.onUpdate(t, typeURL, at) },
				})
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("proxy %s: %w", t.id, err)
					}
					mu.Unlock()
					close(t.ready) // the hook must not block forever
					continue
				}
				t.p = p
				close(t.ready)
			}
		}()
	}
	for _, t := range list {
		work <- t
	}
	close(work)
	wg.Wait()
	return firstErr
}

func (f *fleet) onUpdate(t *tracked, typeURL string, at time.Time) {
	<-t.ready
	if t.p == nil {
		return
	}
	if !t.full.Load() && f.holdsFullConfig(t) {
		t.fullAt.Store(at.UnixNano())
		t.full.Store(true)
		if f.full.Add(1) == int64(len(f.proxies)) {
			close(f.fullDone)
		}
	}
	if typeURL != resource.EndpointType {
		return
	}
	c := f.change.Load()
	if c == nil || c.converged[t.idx].Load() {
		return
	}
	cla, _ := t.p.Resource(resource.EndpointType, c.service).(*endpointv3.ClusterLoadAssignment)
	if cla == nil || hasEndpoint(cla, c.endpoint) != c.wantPresent {
		return
	}
	// Only this proxy's goroutine writes its slot: the latency is stored
	// before the flag that publishes it.
	c.latency[t.idx] = at.Sub(c.t0)
	c.converged[t.idx].Store(true)
	if c.remaining.Add(-1) == 0 {
		close(c.done)
	}
}

// holdsFullConfig: every upstream cluster of its scope and its endpoint
// assignment, at least one listener and route, and nothing subscribed
// still missing.
func (f *fleet) holdsFullConfig(t *tracked) bool {
	p, want := t.p, f.wantServices
	if t.scope != nil {
		want = len(t.scope)
	}
	return p.Count(resource.ClusterType) >= want &&
		p.Count(resource.EndpointType) >= want &&
		p.Count(resource.ListenerType) > 0 && p.Count(resource.RouteType) > 0 &&
		p.Missing() == 0
}

func hasEndpoint(cla *endpointv3.ClusterLoadAssignment, hostPort string) bool {
	for _, lle := range cla.GetEndpoints() {
		for _, e := range lle.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			if net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))) == hostPort {
				return true
			}
		}
	}
	return false
}

// fullConfigAt is when the last proxy came to hold its full configuration.
func (f *fleet) fullConfigAt() time.Time {
	var last int64
	for _, t := range f.proxies {
		last = max(last, t.fullAt.Load())
	}
	return time.Unix(0, last)
}

// failed returns the first proxy stream error, if any.
func (f *fleet) failed() error {
	for _, t := range f.proxies {
		if t.p == nil {
			continue
		}
		if err := t.p.Err(); err != nil {
			return fmt.Errorf("proxy %s: stream ended: %w", t.id, err)
		}
	}
	return nil
}

// describeLagging says what the first few proxies without full config
// hold, to tell a slow control plane from a stuck subscription.
func (f *fleet) describeLagging(limit int) []string {
	var out []string
	lagging := 0
	for _, t := range f.proxies {
		if t.p == nil || t.full.Load() {
			continue
		}
		lagging++
		if len(out) < limit {
			kind := "sotw"
			if t.delta {
				kind = "delta"
			}
			out = append(out, fmt.Sprintf("%s (%s): %d listeners, %d routes, %d clusters, %d endpoint assignments, %d subscribed names missing, %d NACKed types",
				t.id, kind, t.p.Count(resource.ListenerType), t.p.Count(resource.RouteType), t.p.Count(resource.ClusterType),
				t.p.Count(resource.EndpointType), t.p.Missing(), t.p.NACKCount()))
		}
	}
	if lagging > len(out) {
		out = append(out, fmt.Sprintf("... and %d more", lagging-len(out)))
	}
	return out
}

func (f *fleet) nacks() int {
	n := 0
	for _, t := range f.proxies {
		if t.p != nil {
			n += t.p.NACKCount()
		}
	}
	return n
}

// begin arms a change; call it just before writing to Consul, so any
// update that could carry the change is checked against it.
func (f *fleet) begin(service, endpoint string, wantPresent bool) *change {
	c := &change{
		service: service, endpoint: endpoint, wantPresent: wantPresent, t0: time.Now(),
		converged: make([]atomic.Bool, len(f.proxies)), latency: make([]time.Duration, len(f.proxies)),
		done: make(chan struct{}),
	}
	// Only proxies whose scope holds the service are sent the change.
	n := 0
	for i, t := range f.proxies {
		if t.scope != nil && !t.scope[service] {
			c.converged[i].Store(true)
			c.latency[i] = -1
			continue
		}
		n++
	}
	c.remaining.Store(int64(n))
	if n == 0 {
		close(c.done)
	}
	f.change.Store(c)
	return c
}

// end disarms the change; deliveries that have not arrived are missed.
func (f *fleet) end(c *change) (latencies []time.Duration, missed int) {
	f.change.CompareAndSwap(c, nil)
	for i := range f.proxies {
		if c.converged[i].Load() {
			if c.latency[i] >= 0 { // -1: not in the proxy's scope
				latencies = append(latencies, c.latency[i])
			}
		} else {
			missed++
		}
	}
	return latencies, missed
}

func (f *fleet) stop() {
	f.cancel()
	for _, c := range f.conns {
		c.Close()
	}
}
