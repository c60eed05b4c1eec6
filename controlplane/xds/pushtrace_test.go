package xds

import (
	"context"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/genproto/googleapis/rpc/status"
)

// tracedRound starts a recording span, as the control loop does for a
// round, and the push tracing of a round of n proxies under it.
func tracedRound(t *testing.T, n int) (*pushes, *tracetest.InMemoryExporter, func()) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "xds.publish")
	return newPushes(ctx, n), exp, func() { span.End() }
}

func connect(tr *Tracker, stream int64, id string, types ...string) {
	tr.OnStreamOpen(context.Background(), stream, "")
	for _, typ := range types {
		tr.OnStreamRequest(stream, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id}, TypeUrl: typ})
	}
}

func send(tr *Tracker, stream int64, typ, version, nonce string) {
	tr.OnStreamResponse(context.Background(), stream, nil, &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: nonce})
}

func ack(tr *Tracker, stream int64, typ, version, nonce string) {
	tr.OnStreamRequest(stream, &discoveryv3.DiscoveryRequest{TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce})
}

func attrOf(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// A push span ends when the proxy has ACKed every changed type it
// subscribes to (secrets it never asked for are not waited for), and the
// proxy's status then names the trace.
func TestPushSpanEndsOnACK(t *testing.T) {
	tr := NewTracker(NewMetrics(nil))
	connect(tr, 1, "emr-1", resource.ListenerType, resource.ClusterType)
	p, exp, end := tracedRound(t, 1)
	tr.startPush(p, "emr-1", map[string]string{resource.ListenerType: "l2", resource.ClusterType: "c2", resource.SecretType: "s2"})
	p.done()
	end()
	send(tr, 1, resource.ListenerType, "l2", "n1")
	send(tr, 1, resource.ClusterType, "c2", "n2")
	ack(tr, 1, resource.ListenerType, "l2", "n1")
	if got := len(exp.GetSpans()); got != 1 { // only the round's span so far
		t.Fatalf("%d spans ended before every type was ACKed", got)
	}
	ack(tr, 1, resource.ClusterType, "c2", "n2")
	spans := exp.GetSpans()
	if len(spans) != 2 || spans[1].Name != "xds.push" {
		t.Fatalf("spans = %v", spans)
	}
	push := spans[1]
	if attrOf(push, AttrProxyID) != "emr-1" || attrOf(push, AttrOutcome) != "ack" || len(push.Events) != 2 {
		t.Errorf("push span: attrs %v events %v", push.Attributes, push.Events)
	}
	if push.Parent.SpanID() != spans[0].SpanContext.SpanID() {
		t.Error("push span is not a child of the publish span")
	}
	if got := tr.Statuses()[0].TraceID; got != push.SpanContext.TraceID().String() {
		t.Errorf("status trace ID = %q, want the push's %s", got, push.SpanContext.TraceID())
	}
}

func TestPushSpanNACKAndSupersede(t *testing.T) {
	tr := NewTracker(NewMetrics(nil))
	connect(tr, 1, "emr-1", resource.ClusterType)
	p, exp, end := tracedRound(t, 1)
	defer end()
	tr.startPush(p, "emr-1", map[string]string{resource.ClusterType: "c2"})
	later := newPushes(p.ctx, 1)
	tr.startPush(later, "emr-1", map[string]string{resource.ClusterType: "c3"}) // a later round pushed again
	send(tr, 1, resource.ClusterType, "c3", "n1")
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: "c1", ResponseNonce: "n1",
		ErrorDetail: &status.Status{Code: 3, Message: "bad cluster"}})
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("spans = %v", spans)
	}
	if attrOf(spans[0], AttrOutcome) != "superseded" {
		t.Errorf("first push: %v", spans[0].Attributes)
	}
	if attrOf(spans[1], AttrOutcome) != "nack" || attrOf(spans[1], AttrNACK) != "bad cluster" ||
		attrOf(spans[1], AttrVersion) != "c3" || spans[1].Status.Code != codes.Error {
		t.Errorf("NACKed push: %v %v", spans[1].Attributes, spans[1].Status)
	}
	if tr.Statuses()[0].TraceID != "" {
		t.Error("a NACKed change is named as the one the proxy holds")
	}
}

// Beyond PushSpanLimit proxies, one summary span carries an event per
// proxy and ends when the last one answered.
func TestPushSummaryBeyondLimit(t *testing.T) {
	tr := NewTracker(NewMetrics(nil))
	n := PushSpanLimit + 1
	for i := range n {
		connect(tr, int64(i+1), fmt.Sprintf("p-%d", i), resource.ClusterType)
	}
	p, exp, end := tracedRound(t, n)
	end()
	for i := range n {
		tr.startPush(p, fmt.Sprintf("p-%d", i), map[string]string{resource.ClusterType: "c2"})
	}
	p.done()
	for i := range n {
		send(tr, int64(i+1), resource.ClusterType, "c2", "n")
		if len(exp.GetSpans()) != 1 {
			t.Fatalf("summary ended after %d of %d answers", i, n)
		}
		ack(tr, int64(i+1), resource.ClusterType, "c2", "n")
	}
	spans := exp.GetSpans()
	if len(spans) != 2 || spans[1].Name != "xds.push.summary" || len(spans[1].Events) != n {
		t.Fatalf("spans: %d, last %s with %d events", len(spans), spans[len(spans)-1].Name, len(spans[len(spans)-1].Events))
	}
	ev := spans[1].Events[0]
	if !hasAttr(ev.Attributes, AttrProxyID, "p-0") || !hasAttr(ev.Attributes, AttrOutcome, "ack") {
		t.Errorf("event attrs %v", ev.Attributes)
	}
}

func hasAttr(kvs []attribute.KeyValue, k, v string) bool {
	for _, kv := range kvs {
		if string(kv.Key) == k && kv.Value.Emit() == v {
			return true
		}
	}
	return false
}

// Without a recording span a round does no push tracing at all.
func TestNoPushTracingWhenNotRecording(t *testing.T) {
	if newPushes(context.Background(), 5) != nil {
		t.Fatal("push tracing without a recording span")
	}
	tr := NewTracker(NewMetrics(nil))
	connect(tr, 1, "emr-1", resource.ClusterType)
	tr.startPush(nil, "emr-1", map[string]string{resource.ClusterType: "c2"})
	if len(tr.awaits) != 0 {
		t.Fatal("an await was registered without tracing")
	}
}

// edsClient drives the shared endpoint cache and the tracker as
// go-control-plane's server does for one proxy's EDS subscription, over a
// SotW or a delta stream.
type edsClient struct {
	t      *testing.T
	s      *Server
	stream int64
	delta  bool
	id     string
	names  []string
	sub    stream.Subscription
	ch     chan cache.Response
	dch    chan cache.DeltaResponse
	nonce  int
	// last is the last response delivered: version and nonce.
	version, lastNonce string
}

func openEDS(t *testing.T, s *Server, streamID int64, delta bool, id string, names ...string) *edsClient {
	t.Helper()
	c := &edsClient{t: t, s: s, stream: streamID, delta: delta, id: id, names: names,
		ch: make(chan cache.Response, 1), dch: make(chan cache.DeltaResponse, 1)}
	node := &corev3.Node{Id: id}
	if delta {
		s.tracker.OnDeltaStreamOpen(context.Background(), streamID, "")
		req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNamesSubscribe: names}
		s.tracker.OnStreamDeltaRequest(streamID, req)
		c.sub = stream.NewDeltaSubscription(names, nil, nil, false)
		if _, err := s.endpoints.CreateDeltaWatch(req, c.sub, c.dch); err != nil {
			t.Fatal(err)
		}
		return c
	}
	s.tracker.OnStreamOpen(context.Background(), streamID, "")
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNames: names}
	s.tracker.OnStreamRequest(streamID, req)
	c.sub = stream.NewSotwSubscription(names, false)
	if _, err := s.endpoints.CreateWatch(req, c.sub, c.ch); err != nil {
		t.Fatal(err)
	}
	return c
}

// deliver takes the response waiting for the proxy and sends it, as the
// server does (nonce, callback, returned resources).
func (c *edsClient) deliver() {
	c.t.Helper()
	c.nonce++
	nonce := fmt.Sprint(c.nonce)
	if c.delta {
		select {
		case resp := <-c.dch:
			out, _ := resp.GetDeltaDiscoveryResponse()
			out.Nonce = nonce
			c.s.tracker.OnStreamDeltaResponse(c.stream, nil, out)
			c.sub.SetReturnedResources(resp.GetNextVersionMap())
			c.version = out.GetSystemVersionInfo()
		default:
			c.t.Fatalf("%s: no response waiting", c.id)
		}
	} else {
		select {
		case resp := <-c.ch:
			out, _ := resp.GetDiscoveryResponse()
			out.Nonce = nonce
			c.s.tracker.OnStreamResponse(context.Background(), c.stream, nil, out)
			c.sub.SetReturnedResources(resp.GetReturnedResources())
			c.version = out.GetVersionInfo()
		default:
			c.t.Fatalf("%s: no response waiting", c.id)
		}
	}
	c.lastNonce = nonce
}

// answer ACKs (nack == "") or NACKs the last response and asks again.
func (c *edsClient) answer(nack string) {
	c.t.Helper()
	var detail *status.Status
	if nack != "" {
		detail = &status.Status{Code: 3, Message: nack}
	}
	node := &corev3.Node{Id: c.id}
	if c.delta {
		req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResponseNonce: c.lastNonce, ErrorDetail: detail}
		c.s.tracker.OnStreamDeltaRequest(c.stream, req)
		if _, err := c.s.endpoints.CreateDeltaWatch(req, c.sub, c.dch); err != nil {
			c.t.Fatal(err)
		}
		return
	}
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, VersionInfo: c.version,
		ResponseNonce: c.lastNonce, ResourceNames: c.names, ErrorDetail: detail}
	c.s.tracker.OnStreamRequest(c.stream, req)
	if _, err := c.s.endpoints.CreateWatch(req, c.sub, c.ch); err != nil {
		c.t.Fatal(err)
	}
}

// pushSpans are the ended xds.push spans by proxy ID.
func pushSpans(exp *tracetest.InMemoryExporter) map[string]tracetest.SpanStub {
	out := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.Name == "xds.push" {
			out[attrOf(s, AttrProxyID)] = s
		}
	}
	return out
}

// A health change (an endpoint-only change) is traced like any other: a
// push per proxy subscribed to the changed assignment, SotW and delta,
// ending at that proxy's ACK of the response that carried it, including
// a proxy whose ACK of the previous response was still on its way; none
// for a proxy subscribed to other assignments, nor for one that fetched
// the assignment for the first time after the change.
func TestEDSPushPerSubscribedProxy(t *testing.T) {
	s := newTestServer(t)
	if _, err := s.publishEndpoints(append(cla(t, "emr", 1), cla(t, "his", 1)...)); err != nil {
		t.Fatal(err)
	}
	sotw := openEDS(t, s, 1, false, "his-1", "emr")
	delta := openEDS(t, s, 2, true, "nurse-1", "emr")
	other := openEDS(t, s, 3, false, "emr-1", "his")
	inFlight := openEDS(t, s, 4, false, "kiosk-1", "emr")
	for _, c := range []*edsClient{sotw, delta, other, inFlight} {
		c.deliver()
	}
	for _, c := range []*edsClient{sotw, delta, other} {
		c.answer("") // parked
	}

	p, exp, end := tracedRound(t, 4)
	s.pub.pushes = p
	if _, err := s.publishEndpoints(cla(t, "emr", 2)); err != nil { // emr-2 went critical
		t.Fatal(err)
	}
	p.done()
	s.pub.pushes = nil
	end()

	late := openEDS(t, s, 5, false, "late-1", "emr") // a first fetch, after the change
	late.deliver()
	late.answer("")
	sotw.deliver()
	delta.deliver()
	if got := pushSpans(exp); len(got) != 0 {
		t.Fatalf("pushes ended before any ACK: %v", got)
	}
	sotw.answer("")
	delta.answer("")
	// kiosk-1's ACK of the response before the change arrives now; its
	// next response carries the change.
	inFlight.answer("")
	inFlight.deliver()
	if _, ok := pushSpans(exp)["kiosk-1"]; ok {
		t.Fatal("kiosk-1's push ended at its ACK of the response before the change")
	}
	inFlight.answer("")

	got := pushSpans(exp)
	if len(got) != 3 {
		t.Fatalf("push spans for %v, want his-1, nurse-1 and kiosk-1", keys(got))
	}
	for _, id := range []string{"his-1", "nurse-1", "kiosk-1"} {
		sp, ok := got[id]
		if !ok {
			t.Fatalf("no push span for %s", id)
		}
		if attrOf(sp, AttrOutcome) != "ack" || attrOf(sp, "xds.types") != "EDS" || len(sp.Events) != 1 {
			t.Errorf("%s: attrs %v events %v", id, sp.Attributes, sp.Events)
		}
		if sp.Parent.SpanID() != exp.GetSpans()[0].SpanContext.SpanID() {
			t.Errorf("%s: push span is not a child of the publish span", id)
		}
	}
	for _, st := range s.tracker.Statuses() {
		want := ""
		if _, ok := got[st.ID]; ok {
			want = got[st.ID].SpanContext.TraceID().String()
		}
		if st.TraceID != want {
			t.Errorf("%s: status trace %q, want %q", st.ID, st.TraceID, want)
		}
	}
	if len(s.tracker.awaits) != 0 {
		t.Errorf("pushes still waiting: %v", s.tracker.awaits)
	}
}

// A NACK of the endpoints ends the push as an error naming the version.
func TestEDSPushNACK(t *testing.T) {
	s := newTestServer(t)
	s.publishEndpoints(cla(t, "emr", 1))
	c := openEDS(t, s, 1, true, "his-1", "emr")
	c.deliver()
	c.answer("")
	p, exp, end := tracedRound(t, 1)
	s.pub.pushes = p
	s.publishEndpoints(cla(t, "emr", 2))
	p.done()
	s.pub.pushes = nil
	end()
	c.deliver()
	c.answer("no healthy endpoints")
	sp, ok := pushSpans(exp)["his-1"]
	if !ok || attrOf(sp, AttrOutcome) != "nack" || attrOf(sp, AttrNACK) != "no healthy endpoints" ||
		attrOf(sp, AttrVersion) != c.version || sp.Status.Code != codes.Error {
		t.Fatalf("push span: %v", sp)
	}
}

// A round that changes a proxy's endpoints and then its snapshot is one
// push, waiting for both.
func TestEDSPushJoinsSnapshotPush(t *testing.T) {
	s := newTestServer(t)
	s.publishEndpoints(cla(t, "emr", 1))
	c := openEDS(t, s, 1, false, "his-1", "emr")
	s.tracker.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType})
	c.deliver()
	c.answer("")
	p, exp, end := tracedRound(t, 1)
	s.pub.pushes = p
	s.publishEndpoints(cla(t, "emr", 2))
	s.tracker.startPush(p, "his-1", map[string]string{resource.ClusterType: "c2"})
	p.done()
	s.pub.pushes = nil
	end()
	c.deliver()
	c.answer("")
	if got := pushSpans(exp); len(got) != 0 {
		t.Fatal("the push ended before its clusters were ACKed")
	}
	send(s.tracker, 1, resource.ClusterType, "c2", "c-n")
	ack(s.tracker, 1, resource.ClusterType, "c2", "c-n")
	spans := pushSpans(exp)
	if sp, ok := spans["his-1"]; !ok || attrOf(sp, "xds.types") != "CDS,EDS" || attrOf(sp, AttrOutcome) != "ack" || len(sp.Events) != 2 {
		t.Fatalf("push spans %v", spans)
	}
}

// Without a recording span, endpoint changes register nothing: the cache
// holds no traced change and the tracker no await.
func TestNoEDSPushTracingWhenNotRecording(t *testing.T) {
	s := newTestServer(t)
	s.publishEndpoints(cla(t, "emr", 1))
	c := openEDS(t, s, 1, false, "his-1", "emr")
	c.deliver()
	c.answer("")
	s.pub.pushes = newPushes(context.Background(), 1) // nil: not recording
	s.publishEndpoints(cla(t, "emr", 2))
	c.deliver()
	if s.endpoints.traced != nil || len(s.tracker.awaits) != 0 {
		t.Fatal("an untraced endpoint change was traced")
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A response carrying the change that go-control-plane dropped unsent (the
// proxy asked again first) is built again, with a newer change in it: the
// push waits for the version the proxy is actually sent.
func TestEDSPushFollowsAResentResponse(t *testing.T) {
	s := newTestServer(t)
	s.publishEndpoints(append(cla(t, "emr", 1), cla(t, "his", 1)...))
	c := openEDS(t, s, 1, false, "kiosk-1", "emr")
	c.deliver() // its ACK is still on its way when emr changes
	p, exp, end := tracedRound(t, 1)
	s.pub.pushes = p
	s.publishEndpoints(cla(t, "emr", 2))
	p.done()
	s.pub.pushes = nil
	end()
	c.answer("") // answered at once: the change, queued for sending
	<-c.ch       // dropped: the proxy asks again (a second cluster) before it is sent
	s.publishEndpoints(cla(t, "his", 2))
	c.names = []string{"emr", "his"}
	c.answer("")
	c.deliver()
	c.answer("")
	if sp, ok := pushSpans(exp)["kiosk-1"]; !ok || attrOf(sp, AttrOutcome) != "ack" {
		t.Fatalf("push spans %v", pushSpans(exp))
	}
}

// An endpoint push that reaches its proxy after the round's summary span
// ended (its previous EDS answer was still on its way) gets a span of its
// own rather than being lost.
func TestEDSPushAfterSummaryEnded(t *testing.T) {
	tr := NewTracker(NewMetrics(nil))
	connect(tr, 1, "kiosk-1", resource.EndpointType)
	p, exp, end := tracedRound(t, PushSpanLimit+1)
	end()
	p.done() // nobody outstanding: the summary ends
	ch := &edsChange{round: p, tracker: tr, names: map[string]bool{"emr": true}, nodes: map[string]bool{}}
	tr.edsSent(ch, "kiosk-1", "v2")
	send(tr, 1, resource.EndpointType, "v2", "n1")
	ack(tr, 1, resource.EndpointType, "v2", "n1")
	sp, ok := pushSpans(exp)["kiosk-1"]
	if !ok || attrOf(sp, AttrOutcome) != "ack" {
		t.Fatalf("spans %v", exp.GetSpans())
	}
}
