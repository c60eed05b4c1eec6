package xds

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"medmesh/api/wire"
)

// NACK is a rejection reported by a proxy.
type NACK struct {
	TypeURL string    `json:"typeUrl"`
	Version string    `json:"version"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// TypeStatus is the sync state of one resource type for one proxy.
type TypeStatus struct {
	Sent  string `json:"sent,omitempty"`
	Acked string `json:"acked,omitempty"`
	// AckedAt is when the proxy last ACKed a response of this type: a
	// proxy in sync for ten minutes and one that stopped answering ten
	// minutes ago look alike without it.
	AckedAt time.Time `json:"ackedAt,omitzero"`
}

// ProxyStatus is what the control plane knows of one connected proxy.
type ProxyStatus struct {
	ID          string                `json:"id"`
	Service     string                `json:"service"`
	Kind        wire.ProxyKind        `json:"kind"`
	Peer        string                `json:"peer,omitempty"`
	Transport   string                `json:"transport"` // sotw, delta or both
	ConnectedAt time.Time             `json:"connectedAt"`
	Types       map[string]TypeStatus `json:"types"`
	LastNACK    *NACK                 `json:"lastNack,omitempty"`
	NACKs       int                   `json:"nacks"`
	// TraceID is the trace of the last configuration change the proxy
	// ACKed in full (pushtrace.go); empty when tracing is off.
	TraceID string `json:"traceId,omitempty"`
	// ServerListeners are the inbound listeners a proxyless server asked
	// for (named after the addresses it listens on), sorted.
	ServerListeners []string `json:"serverListeners,omitempty"`
}

// streamKey identifies a stream: go-control-plane numbers SotW and delta
// streams with separate counters, so an ID alone is ambiguous.
type streamKey struct {
	id    int64
	delta bool
}

type streamInfo struct {
	delta  bool
	peer   string
	proof  wire.Proof // never shown: it proves identity
	node   string
	nonces map[string]sentResponse // by response nonce
}

// sentResponse is what a stream was sent with one nonce, and when: the
// answer to it is an ACK or NACK of that version, after that long.
type sentResponse struct {
	version string
	at      time.Time
}

type proxyInfo struct {
	status  ProxyStatus
	proof   wire.Proof // never shown: it proves identity
	streams map[streamKey]bool
	// subscribed are the type URLs the proxy has asked for: a push waits
	// only for answers to those.
	subscribed map[string]bool
	// serverListeners are the server listener names asked for, by stream.
	serverListeners map[streamKey]map[string]bool
	// nackedSince holds, by short type name, when the proxy began
	// rejecting the type: its first NACK since it last ACKed the type.
	// What /metrics reports as standing NACKs (nackmetrics.go).
	nackedSince map[string]time.Time
	// converge is the latest push still waiting to be held in full
	// (convergence.go); nil when none is.
	converge *convergeWait
}

// Tracker implements go-control-plane's server callbacks: it learns which
// proxies are connected and records what each was sent, ACKed and NACKed.
// Callbacks run on the gRPC stream goroutines, so it only records and
// signals; the control loop reads the connected set when signalled
// ("deliver latest": a burst of connects is one wake-up).
type Tracker struct {
	mu      sync.Mutex
	streams map[streamKey]*streamInfo
	proxies map[string]*proxyInfo
	changed chan struct{}
	// awaits are the traced pushes waiting for their proxy's answers, by
	// proxy ID (pushtrace.go); empty when tracing is off.
	awaits  map[string]*pushAwait
	metrics *Metrics
	now     func() time.Time
}

var _ server.Callbacks = (*Tracker)(nil)

// NewTracker returns an empty tracker.
func NewTracker(m *Metrics) *Tracker {
	return &Tracker{
		streams: map[streamKey]*streamInfo{}, proxies: map[string]*proxyInfo{},
		changed: make(chan struct{}, 1), metrics: m, now: time.Now, awaits: map[string]*pushAwait{},
	}
}

// Changed is signalled when a proxy connects or disconnects.
func (t *Tracker) Changed() <-chan struct{} { return t.changed }

func (t *Tracker) signal() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// Client is a connected proxy as its xDS streams present it: what its
// node says it is, where it connects from and the proof of identity it
// presented. These are facts of the session, not of the mesh.
type Client struct {
	ID      string
	Service string
	Kind    wire.ProxyKind
	Peer    string
	Proof   wire.Proof // never shown or logged
}

// Connected returns the proxies with at least one open stream.
func (t *Tracker) Connected() []Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Client, 0, len(t.proxies))
	for _, p := range t.proxies {
		out = append(out, Client{ID: p.status.ID, Service: p.status.Service, Kind: p.status.Kind, Peer: p.status.Peer,
			Proof: p.proof})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Statuses returns a copy of every connected proxy's status.
func (t *Tracker) Statuses() []ProxyStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]ProxyStatus, 0, len(t.proxies))
	for _, p := range t.proxies {
		s := p.status
		s.Types = make(map[string]TypeStatus, len(p.status.Types))
		for k, v := range p.status.Types {
			s.Types[k] = v
		}
		if p.status.LastNACK != nil {
			n := *p.status.LastNACK
			s.LastNACK = &n
		}
		s.ServerListeners = nil
		for _, names := range p.serverListeners {
			for n := range names {
				if !slices.Contains(s.ServerListeners, n) {
					s.ServerListeners = append(s.ServerListeners, n)
				}
			}
		}
		sort.Strings(s.ServerListeners)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ProxyKindOf tells an Envoy from a proxyless gRPC client: by the
// bootstrap's metadata, else by the user agent gRPC libraries send.
func ProxyKindOf(n *corev3.Node) wire.ProxyKind {
	if v := n.GetMetadata().GetFields()[wire.NodeMetaProxyKind].GetStringValue(); v != "" {
		switch wire.ProxyKind(v) {
		case wire.ProxyProxyless, wire.ProxySVIDAgent:
			return wire.ProxyKind(v)
		}
		return wire.ProxyEnvoy
	}
	if strings.HasPrefix(strings.ToLower(n.GetUserAgentName()), "grpc") {
		return wire.ProxyProxyless
	}
	return wire.ProxyEnvoy
}

func (t *Tracker) open(ctx context.Context, id streamKey) error {
	addr, proof := "", wire.Proof{}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, h := range wire.ProofHeaders {
			if v := md.Get(h.Header); len(v) > 0 && v[0] != "" {
				proof = wire.Proof{Kind: h.Kind, Token: v[0]}
				break
			}
		}
	}
	t.mu.Lock()
	t.streams[id] = &streamInfo{delta: id.delta, peer: addr, proof: proof, nonces: map[string]sentResponse{}}
	t.mu.Unlock()
	return nil
}

func (t *Tracker) closed(id streamKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.streams[id]
	if !ok {
		return
	}
	delete(t.streams, id)
	if p, ok := t.proxies[s.node]; ok {
		delete(p.streams, id)
		delete(p.serverListeners, id)
		if len(p.streams) == 0 {
			if a := t.awaits[s.node]; a != nil {
				t.finishLocked(a, "disconnected", "")
			}
			delete(t.proxies, s.node)
			t.metrics.connected.Set(float64(len(t.proxies)))
			t.signal()
		}
	}
}

// request records a request's node (the first one names it), and its ACK
// or NACK of an earlier response. version is the version the request
// acknowledges (SotW carries it; delta is looked up by nonce).
//
// It returns the version that was rejected, if the request is a NACK.
func (t *Tracker) request(id streamKey, node *corev3.Node, typeURL, nonce, version string, errDetail string, hasErr bool) (rejected string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.streams[id]
	if !ok {
		return
	}
	if s.node == "" && node.GetId() != "" {
		// The first request names the node; the proxy is connected.
		s.node = node.GetId()
		p, ok := t.proxies[s.node]
		if !ok {
			p = &proxyInfo{
				status: ProxyStatus{
					ID: node.GetId(), Service: node.GetCluster(), Kind: ProxyKindOf(node),
					Peer: s.peer, ConnectedAt: t.now(), Types: map[string]TypeStatus{},
				},
				streams:    map[streamKey]bool{},
				subscribed: map[string]bool{},
				proof:      s.proof,
			}
			t.proxies[s.node] = p
			t.metrics.connected.Set(float64(len(t.proxies)))
			t.signal()
		}
		p.streams[id] = true
		p.status.Transport = transportOf(t.streams, p.streams)
	}
	p, ok := t.proxies[s.node]
	if !ok {
		return ""
	}
	if typeURL != "" && !p.subscribed[typeURL] {
		p.subscribed[typeURL] = true
	}
	if nonce == "" {
		return ""
	}
	resp, known := s.nonces[nonce]
	if !known {
		return ""
	}
	delete(s.nonces, nonce)
	sent := resp.version
	if version == "" {
		version = sent
	}
	short := shortTypeName(typeURL)
	now := t.now()
	t.metrics.pushLatency.WithLabelValues(short).Observe(now.Sub(resp.at).Seconds())
	if hasErr {
		if p.nackedSince == nil {
			p.nackedSince = map[string]time.Time{}
		}
		if _, standing := p.nackedSince[short]; !standing {
			p.nackedSince[short] = now
		}
		t.convergedLocked(p, typeURL, sent, true, now)
		p.status.NACKs++
		p.status.LastNACK = &NACK{TypeURL: typeURL, Version: sent, Message: errDetail, At: t.now()}
		t.metrics.nacks.WithLabelValues(short).Inc()
		if len(t.awaits) > 0 {
			t.answeredLocked(p, typeURL, sent, true, errDetail)
		}
		return sent
	}
	delete(p.nackedSince, short)
	t.convergedLocked(p, typeURL, version, false, now)
	ts := p.status.Types[short]
	ts.Acked, ts.AckedAt = version, t.now()
	p.status.Types[short] = ts
	t.metrics.acks.WithLabelValues(short).Inc()
	if len(t.awaits) > 0 {
		t.answeredLocked(p, typeURL, version, false, "")
	}
	return ""
}

// listenersAsked records which server listeners (names with medmesh's
// server prefix) a stream asks for, so that a server asking for one it
// cannot have (a port nothing is registered on) is reported by name. A
// state-of-the-world request names the whole set (replace); a delta
// request names what it adds and drops.
func (t *Tracker) listenersAsked(id streamKey, typeURL string, add, drop []string, replace bool) {
	if typeURL != resource.ListenerType {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.streams[id]
	if !ok {
		return
	}
	p, ok := t.proxies[s.node]
	if !ok {
		return
	}
	if p.serverListeners == nil {
		p.serverListeners = map[streamKey]map[string]bool{}
	}
	names := p.serverListeners[id]
	if names == nil || replace {
		names = map[string]bool{}
		p.serverListeners[id] = names
	}
	for _, n := range add {
		if strings.HasPrefix(n, wire.ProxylessServerListenerPrefix) {
			names[n] = true
		}
	}
	for _, n := range drop {
		delete(names, n)
	}
}

func (t *Tracker) response(id streamKey, typeURL, nonce, version string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.streams[id]
	if !ok {
		return
	}
	if len(s.nonces) > 256 {
		// A proxy answers every response; nonces it never answered belong
		// to responses it superseded, so forgetting them loses nothing.
		clear(s.nonces)
	}
	s.nonces[nonce] = sentResponse{version: version, at: t.now()}
	if p, ok := t.proxies[s.node]; ok {
		short := shortTypeName(typeURL)
		ts := p.status.Types[short]
		ts.Sent = version
		p.status.Types[short] = ts
		t.metrics.pushes.WithLabelValues(short).Inc()
	}
}

func transportOf(streams map[streamKey]*streamInfo, ids map[streamKey]bool) string {
	var sotw, delta bool
	for id := range ids {
		if s, ok := streams[id]; ok && s.delta {
			delta = true
		} else {
			sotw = true
		}
	}
	switch {
	case sotw && delta:
		return "both"
	case delta:
		return "delta"
	}
	return "sotw"
}

func shortTypeName(typeURL string) string {
	if i := strings.LastIndex(typeURL, "."); i >= 0 {
		switch typeURL[i+1:] {
		case "Listener":
			return "LDS"
		case "RouteConfiguration":
			return "RDS"
		case "Cluster":
			return "CDS"
		case "ClusterLoadAssignment":
			return "EDS"
		case "Secret":
			return "SDS"
		}
		return typeURL[i+1:]
	}
	return typeURL
}

// OnStreamOpen implements server.Callbacks.
func (t *Tracker) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return t.open(ctx, streamKey{id, false})
}

// OnStreamClosed implements server.Callbacks.
func (t *Tracker) OnStreamClosed(id int64, _ *corev3.Node) { t.closed(streamKey{id, false}) }

// OnDeltaStreamOpen implements server.Callbacks.
func (t *Tracker) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return t.open(ctx, streamKey{id, true})
}

// OnDeltaStreamClosed implements server.Callbacks.
func (t *Tracker) OnDeltaStreamClosed(id int64, _ *corev3.Node) { t.closed(streamKey{id, true}) }

// OnStreamRequest implements server.Callbacks.
func (t *Tracker) OnStreamRequest(id int64, r *discoveryv3.DiscoveryRequest) error {
	rejected := t.request(streamKey{id, false}, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), r.GetVersionInfo(),
		r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
	t.listenersAsked(streamKey{id, false}, r.GetTypeUrl(), r.GetResourceNames(), nil, true)
	if rejected != "" {
		// A SotW NACK carries the last version the proxy accepted. The
		// snapshot cache would see it differ from the current snapshot and
		// send the rejected config straight back, which the proxy rejects
		// again, in a tight loop. Treat the rejected version as the
		// proxy's, so the next push is the next change.
		r.VersionInfo = rejected
	}
	return nil
}

// OnStreamResponse implements server.Callbacks.
func (t *Tracker) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
	t.response(streamKey{id, false}, r.GetTypeUrl(), r.GetNonce(), r.GetVersionInfo())
}

// OnStreamDeltaRequest implements server.Callbacks.
func (t *Tracker) OnStreamDeltaRequest(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
	t.request(streamKey{id, true}, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), "",
		r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
	t.listenersAsked(streamKey{id, true}, r.GetTypeUrl(), r.GetResourceNamesSubscribe(), r.GetResourceNamesUnsubscribe(), false)
	return nil
}

// OnStreamDeltaResponse implements server.Callbacks.
func (t *Tracker) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
	t.response(streamKey{id, true}, r.GetTypeUrl(), r.GetNonce(), r.GetSystemVersionInfo())
}

// OnFetchRequest implements server.Callbacks; REST fetches are not served.
func (t *Tracker) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error { return nil }

// OnFetchResponse implements server.Callbacks.
func (t *Tracker) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}
