// Package simproxy is a simulated Envoy: an ADS client that subscribes the
// way Envoy does (wildcard listeners and clusters, then the routes and
// endpoint assignments they name), ACKs what it accepts and NACKs what a
// validation hook rejects. Tests use it to check what proxies receive over
// both state-of-the-world and delta xDS; the benchmark runs a thousand.
package simproxy

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Options configure a simulated proxy.
type Options struct {
	NodeID, Cluster string
	// Kind is sent as node metadata ("envoy" unless set).
	Kind  string
	Delta bool
	// Validate, when set, is called for every received resource; an
	// error makes the proxy NACK the whole response, as Envoy does.
	Validate func(typeURL string, r proto.Message) error
	// OnUpdate is called after a response is applied, outside the
	// proxy's lock (it may read the proxy): a Wait can return on the new
	// state before OnUpdate has run.
	OnUpdate func(typeURL string, at time.Time)
	// Decode, when set, replaces Any.UnmarshalNew. The benchmark uses it
	// to share one decoded message among the thousand proxies that receive
	// the same bytes; messages it returns must not be modified.
	Decode func(a *anypb.Any) (proto.Message, error)
	// Resume, when set, is what an earlier stream of this proxy held: the
	// new stream starts the way Envoy's does after losing its control
	// plane, naming for every type the version it holds (SotW) or each
	// resource's version (delta initial_resource_versions), and what it
	// subscribes to.
	Resume *Held
}

// Held is what a proxy holds, for resuming on a new stream (Proxy.Held).
type Held struct {
	res   map[string]map[string]proto.Message
	ver   map[string]string
	rver  map[string]map[string]string
	subs  map[string]map[string]bool
	delta bool
}

// Received counts what a stream was sent, by type URL.
type Received struct {
	Responses, Resources int
	Bytes                int64 // encoded size of the responses
}

// Proxy is a running simulated proxy.
type Proxy struct {
	opts Options
	mu   sync.Mutex
	res  map[string]map[string]proto.Message // type URL -> name -> resource
	ver  map[string]string                   // type URL -> last ACKed version (SotW)
	rver map[string]map[string]string        // type URL -> name -> resource version (delta)
	recv map[string]*Received
	nack map[string]string          // type URL -> last NACK message
	subs map[string]map[string]bool // RDS/EDS names subscribed
	// sorted holds subs' names sorted, computed when subs change rather
	// than on every acknowledgement.
	sorted map[string][]string
	gen    uint64
	cond   chan struct{}
	err    error
}

// Start connects a simulated proxy over conn and runs it until ctx ends.
func Start(ctx context.Context, conn grpc.ClientConnInterface, o Options) (*Proxy, error) {
	if o.Kind == "" {
		o.Kind = "envoy"
	}
	p := &Proxy{
		opts: o, res: map[string]map[string]proto.Message{}, ver: map[string]string{}, rver: map[string]map[string]string{},
		recv: map[string]*Received{},
		nack: map[string]string{}, subs: map[string]map[string]bool{}, sorted: map[string][]string{}, cond: make(chan struct{}),
	}
	if h := o.Resume; h != nil {
		if h.delta != o.Delta {
			return nil, fmt.Errorf("%s: cannot resume a %s stream as %s", o.NodeID, variant(h.delta), variant(o.Delta))
		}
		p.res, p.ver, p.rver = cloneNested(h.res), maps.Clone(h.ver), cloneNested(h.rver)
		for t, names := range h.subs {
			p.subs[t] = maps.Clone(names)
			p.sorted[t] = sortedKeys(names)
		}
	}
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	node := &corev3.Node{Id: o.NodeID, Cluster: o.Cluster, Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		"medmesh.proxy_kind": structpb.NewStringValue(o.Kind),
	}}}
	if o.Delta {
		s, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		go p.runDelta(s, node)
	} else {
		s, err := client.StreamAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		go p.runSotW(s, node)
	}
	return p, nil
}

func (p *Proxy) runSotW(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, node *corev3.Node) {
	first := true
	nonces := map[string]string{} // type URL -> last response nonce
	send := func(r *discoveryv3.DiscoveryRequest) error {
		if first {
			r.Node, first = node, false
		}
		return s.Send(r)
	}
	for _, r := range p.firstSotW() {
		if err := send(r); err != nil {
			p.fail(err)
			return
		}
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			p.fail(err)
			return
		}
		p.count(resp.GetTypeUrl(), len(resp.GetResources()), proto.Size(resp))
		msgs, verr := p.decode(resp.GetTypeUrl(), resp.GetResources())
		nonces[resp.GetTypeUrl()] = resp.GetNonce()
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		p.mu.Lock()
		if p.subs[resp.GetTypeUrl()] != nil {
			req.ResourceNames = p.sorted[resp.GetTypeUrl()]
		}
		if verr != nil {
			req.VersionInfo = p.ver[resp.GetTypeUrl()]
			req.ErrorDetail = &status.Status{Code: 3, Message: verr.Error()}
			p.nack[resp.GetTypeUrl()] = verr.Error()
			p.mu.Unlock()
			if err := send(req); err != nil {
				p.fail(err)
				return
			}
			continue
		}
		full := resp.GetTypeUrl() == resource.ClusterType || resp.GetTypeUrl() == resource.ListenerType
		p.apply(resp.GetTypeUrl(), msgs, nil, full)
		p.ver[resp.GetTypeUrl()] = resp.GetVersionInfo()
		req.VersionInfo = resp.GetVersionInfo()
		follow := p.followIfNeeded(resp.GetTypeUrl())
		p.bump()
		p.mu.Unlock()
		p.notify(resp.GetTypeUrl())
		if err := send(req); err != nil {
			p.fail(err)
			return
		}
		for t, names := range follow {
			// Like Envoy, name the last nonce seen for the type: the server
			// ignores a request whose nonce is stale.
			if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: t, ResourceNames: names, VersionInfo: p.version(t), ResponseNonce: nonces[t]}); err != nil {
				p.fail(err)
				return
			}
		}
	}
}

func (p *Proxy) runDelta(s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, node *corev3.Node) {
	first := true
	send := func(r *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			r.Node, first = node, false
		}
		return s.Send(r)
	}
	for _, r := range p.firstDelta() {
		if err := send(r); err != nil {
			p.fail(err)
			return
		}
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			p.fail(err)
			return
		}
		p.count(resp.GetTypeUrl(), len(resp.GetResources()), proto.Size(resp))
		anys := make([]*anypb.Any, 0, len(resp.GetResources()))
		for _, r := range resp.GetResources() {
			anys = append(anys, r.GetResource())
		}
		msgs, verr := p.decode(resp.GetTypeUrl(), anys)
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if verr != nil {
			req.ErrorDetail = &status.Status{Code: 3, Message: verr.Error()}
			p.mu.Lock()
			p.nack[resp.GetTypeUrl()] = verr.Error()
			p.mu.Unlock()
			if err := send(req); err != nil {
				p.fail(err)
				return
			}
			continue
		}
		p.mu.Lock()
		before := map[string][]string{}
		for t := range p.subs {
			before[t] = p.sorted[t]
		}
		p.apply(resp.GetTypeUrl(), msgs, resp.GetRemovedResources(), false)
		p.applyVersions(resp)
		follow := p.followIfNeeded(resp.GetTypeUrl())
		p.bump()
		p.mu.Unlock()
		p.notify(resp.GetTypeUrl())
		if err := send(req); err != nil {
			p.fail(err)
			return
		}
		for t, names := range follow {
			sub, unsub := diff(before[t], names)
			if len(sub) == 0 && len(unsub) == 0 {
				continue
			}
			if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}); err != nil {
				p.fail(err)
				return
			}
		}
	}
}

func (p *Proxy) decode(typeURL string, anys []*anypb.Any) (map[string]proto.Message, error) {
	out := make(map[string]proto.Message, len(anys))
	for _, a := range anys {
		var m proto.Message
		var err error
		if p.opts.Decode != nil {
			m, err = p.opts.Decode(a)
		} else {
			m, err = a.UnmarshalNew()
		}
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", a.GetTypeUrl(), err)
		}
		if p.opts.Validate != nil {
			if err := p.opts.Validate(typeURL, m); err != nil {
				return nil, err
			}
		}
		out[nameOf(m)] = m
	}
	return out, nil
}

// apply merges a response; full replaces the type (SotW LDS/CDS).
func (p *Proxy) apply(typeURL string, msgs map[string]proto.Message, removed []string, full bool) {
	cur := p.res[typeURL]
	if cur == nil || full {
		cur = map[string]proto.Message{}
		p.res[typeURL] = cur
	}
	for n, m := range msgs {
		cur[n] = m
	}
	for _, n := range removed {
		delete(cur, n)
	}
	delete(p.nack, typeURL)
}

// follow computes the RDS and EDS names the current listeners and
// clusters require, updating subscriptions; it returns the new name lists
// for types whose subscriptions changed.
// followIfNeeded runs follow after listener and cluster responses, the
// only ones that can change which routes and endpoints are needed.
func (p *Proxy) followIfNeeded(typeURL string) map[string][]string {
	if typeURL != resource.ClusterType && typeURL != resource.ListenerType {
		return nil
	}
	return p.follow()
}

func (p *Proxy) follow() map[string][]string {
	want := map[string]map[string]bool{resource.RouteType: {}, resource.EndpointType: {}, resource.SecretType: {}}
	for n, m := range p.res[resource.ClusterType] {
		c := m.(*clusterv3.Cluster)
		for _, name := range secretNames(c.GetTransportSocket().GetTypedConfig()) {
			want[resource.SecretType][name] = true
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			name := c.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = n
			}
			want[resource.EndpointType][name] = true
		}
	}
	for _, m := range p.res[resource.ListenerType] {
		l := m.(*listenerv3.Listener)
		for _, r := range routeNames(l) {
			want[resource.RouteType][r] = true
		}
		for _, fc := range l.GetFilterChains() {
			for _, name := range secretNames(fc.GetTransportSocket().GetTypedConfig()) {
				want[resource.SecretType][name] = true
			}
		}
	}
	out := map[string][]string{}
	for t, names := range want {
		if len(names) == 0 && p.subs[t] == nil {
			continue // an empty SotW request would mean "everything"
		}
		if !sameSet(p.subs[t], names) {
			p.subs[t] = names
			out[t] = sortedKeys(names)
			p.sorted[t] = out[t]
			// Drop resources no longer subscribed, as Envoy does.
			for n := range p.res[t] {
				if !names[n] {
					delete(p.res[t], n)
				}
			}
		}
	}
	return out
}

// secretNames lists the SDS secrets a TLS transport socket refers to.
func secretNames(a *anypb.Any) []string {
	if a == nil {
		return nil
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil
	}
	var common *tlsv3.CommonTlsContext
	switch c := m.(type) {
	case *tlsv3.UpstreamTlsContext:
		common = c.GetCommonTlsContext()
	case *tlsv3.DownstreamTlsContext:
		common = c.GetCommonTlsContext()
	default:
		return nil
	}
	var out []string
	for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
		out = append(out, s.GetName())
	}
	if s := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
		out = append(out, s.GetName())
	}
	if s := common.GetValidationContextSdsSecretConfig(); s != nil {
		out = append(out, s.GetName())
	}
	return out
}

func routeNames(l *listenerv3.Listener) []string {
	var out []string
	chains := append([]*listenerv3.FilterChain{}, l.GetFilterChains()...)
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains, l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			h := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().MessageIs(h) && f.GetTypedConfig().UnmarshalTo(h) == nil {
				if n := h.GetRds().GetRouteConfigName(); n != "" {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

func (p *Proxy) version(t string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ver[t]
}

func (p *Proxy) bump() {
	p.gen++
	close(p.cond)
	p.cond = make(chan struct{})
}

func (p *Proxy) notify(typeURL string) {
	if p.opts.OnUpdate != nil {
		p.opts.OnUpdate(typeURL, time.Now())
	}
}

func (p *Proxy) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.bump()
	p.mu.Unlock()
}

// Err is the stream's error, once it ended.
func (p *Proxy) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// State is a copy of what the proxy holds.
type State struct {
	Resources map[string]map[string]proto.Message
	NACKs     map[string]string
}

// Names lists the names held for a type, sorted.
func (s State) Names(typeURL string) []string {
	out := make([]string, 0, len(s.Resources[typeURL]))
	for n := range s.Resources[typeURL] {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// State returns a copy of the proxy's current resources.
func (p *Proxy) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stateLocked()
}

func (p *Proxy) stateLocked() State {
	s := State{Resources: map[string]map[string]proto.Message{}, NACKs: map[string]string{}}
	for t, m := range p.res {
		s.Resources[t] = map[string]proto.Message{}
		for n, r := range m {
			s.Resources[t][n] = r
		}
	}
	for t, m := range p.nack {
		s.NACKs[t] = m
	}
	return s
}

// Wait blocks until cond holds for the proxy's state, the stream fails or
// ctx ends. It re-checks on every update: no polling interval.
func (p *Proxy) Wait(ctx context.Context, cond func(State) bool) error {
	for {
		p.mu.Lock()
		st, ch, err := p.stateLocked(), p.cond, p.err
		p.mu.Unlock()
		if cond(st) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: condition not met: %w", p.opts.NodeID, ctx.Err())
		case <-ch:
		}
	}
}

// nameOf is a resource's name (a ClusterLoadAssignment's cluster name).
func nameOf(m proto.Message) string { return cache.GetResourceName(m) }

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func diff(before, after []string) (sub, unsub []string) {
	b := map[string]bool{}
	for _, n := range before {
		b[n] = true
	}
	a := map[string]bool{}
	for _, n := range after {
		a[n] = true
		if !b[n] {
			sub = append(sub, n)
		}
	}
	for _, n := range before {
		if !a[n] {
			unsub = append(unsub, n)
		}
	}
	return sub, unsub
}

// The accessors below exist for the benchmark, which runs a thousand
// proxies: State copies every resource map, which at a thousand clusters
// per proxy costs more than the updates it is meant to observe.

// Count is the number of resources held for a type.
func (p *Proxy) Count(typeURL string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.res[typeURL])
}

// Resource returns one held resource, or nil. The message is shared with
// the proxy and must not be modified.
func (p *Proxy) Resource(typeURL, name string) proto.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res[typeURL][name]
}

// Missing is the number of route and endpoint names the proxy subscribes
// to but does not hold yet: zero once everything its listeners and
// clusters name has arrived.
func (p *Proxy) Missing() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for t, names := range p.subs {
		for name := range names {
			if _, ok := p.res[t][name]; !ok {
				n++
			}
		}
	}
	return n
}

// NACKCount is the number of types whose last response was rejected.
func (p *Proxy) NACKCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.nack)
}
