package xds

import (
	"context"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
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
	tr.startPush(p, "emr-1", map[string]string{resource.ClusterType: "c3"}) // a later round pushed again
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
