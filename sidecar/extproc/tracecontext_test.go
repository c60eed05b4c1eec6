package extproc

import (
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"medmesh/sidecar/audit/audittest"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

const (
	hdrTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	hdrSpan   = "00f067aa0ba902b7"
	mdTrace   = "0af7651916cd43dd8448eb211c80319c"
	mdSpan    = "b7ad6b7169203331"
	patientID = "MRN-7731"
)

// TestAdmissionSpanJoinsTheRequestsTrace: the extension's admission span
// is a child of the span named by the request's traceparent, whichever
// header field Envoy put it in; without one, of the span in the ext_proc
// stream's metadata (Envoy's gRPC client span); with neither, a new
// trace. Nothing else of the request reaches the span.
func TestAdmissionSpanJoinsTheRequestsTrace(t *testing.T) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := &harness{sched: sched.New(sched.Config{}), audit: &audittest.Recorder{}}
	eng := phi.New(phi.Options{Scheduler: h.sched, Audit: h.audit, Service: "emr", Tracer: tp.Tracer("test")})
	if !eng.Tracing() {
		t.Fatal("an SDK tracer is not seen as tracing")
	}
	h.serve(t, eng)

	hdrParent := "00-" + hdrTrace + "-" + hdrSpan + "-01"
	mdParent := "00-" + mdTrace + "-" + mdSpan + "-01"
	for _, tc := range []struct {
		name            string
		headers         *corev3.HeaderMap
		md              string
		trace, parent   string
		wantRemote, new bool
	}{
		{name: "raw_value header beats metadata", headers: headers(":method", "GET", ":path", "/fhir/Patient/"+patientID,
			"x-patient", patientID, "TraceParent", hdrParent, "baggage", "patient="+patientID), md: mdParent, trace: hdrTrace, parent: hdrSpan},
		{name: "value header", headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/api/records/1"}, {Key: "traceparent", Value: hdrParent}}},
			trace: hdrTrace, parent: hdrSpan},
		{name: "metadata when headers lack it", headers: headers(":method", "GET", ":path", "/api/records/1"), md: mdParent,
			trace: mdTrace, parent: mdSpan},
		{name: "neither: a new trace", headers: headers(":method", "GET", ":path", "/api/records/1"), new: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.Ended())
			ctx := context.Background()
			if tc.md != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", tc.md)
			}
			s := h.open(t, ctx)
			req := reqHeaders("spiffe://medmesh.local/ns/default/svc/his")
			req.GetRequestHeaders().Headers = tc.headers
			send(t, s, req)
			send(t, s, respHeaders("200"))
			waitFor(t, "the admission span to end", func() bool { return len(rec.Ended()) > before })
			span := rec.Ended()[len(rec.Ended())-1]
			if span.Name() != "medmesh.sidecar.admit" {
				t.Fatalf("span %q", span.Name())
			}
			if span.SpanKind() != trace.SpanKindServer {
				t.Errorf("kind %v, want server (first span of the request in this process)", span.SpanKind())
			}
			p := span.Parent()
			if tc.new {
				if p.IsValid() {
					t.Fatalf("parent %v, want none", p)
				}
				return
			}
			if got := span.SpanContext().TraceID().String(); got != tc.trace {
				t.Errorf("trace %s, want %s", got, tc.trace)
			}
			if p.SpanID().String() != tc.parent || !p.IsRemote() {
				t.Errorf("parent %s (remote %t), want remote %s", p.SpanID(), p.IsRemote(), tc.parent)
			}
			for _, kv := range span.Attributes() {
				if strings.Contains(kv.Value.Emit(), patientID) {
					t.Errorf("attribute %s carries request content", kv.Key)
				}
			}
		})
	}
}
